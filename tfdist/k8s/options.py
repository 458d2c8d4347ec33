"""What a render makes: the options of ``python -m tfdist.k8s render``, checked.

Owns RenderOptions (one field per render flag, each checked when the options are
made) and the trainer modules a job may run. Imports tfdist.cluster.specs,
tfdist.cluster.launch and tfdist.training.elastic (the trainer's
``--min_workers``, read from the words after the render's ``--``, and its
checks), tfdist.errors and tfdist.training.strategy (the strategy's own
topology check); no Kubernetes objects are built here
(tfdist.k8s.manifests).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pkgutil
import re

from tfdist.cluster import launch
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError
from tfdist.training import elastic
from tfdist.training import strategy as strategy_lib

KINDS = ("job", "tfjob", "jobset")
# --all_reduce of a render; auto = nccl with GPUs, else ring.
ALL_REDUCE = ("auto", "ring", "nccl")
# Start order (servers first) and file order of the roles.
ROLES = ("ps", "worker", "chief", "evaluator")
# The label of GPU nodes set by NVIDIA's GPU feature discovery (GPU
# operator); GKE uses cloud.google.com/gke-accelerator=<type> instead.
DEFAULT_GPU_NODE_SELECTOR = "nvidia.com/gpu.present=true"
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
# A Kubernetes object name that is also a label value (a LocalQueue or
# WorkloadPriorityClass named in a label): DNS-1123, at most 63 characters.
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# The kinds Kueue admits from a render: one JobSet is one Kueue workload, all
# of its pods admitted at once. A render of --kind=job makes a Job per role,
# each its own workload; Kueue's TFJob integration is off by default since
# Kueue v0.19 (its default Configuration).
QUEUED_KINDS = ("jobset",)


def trainers() -> list:
  """The trainer modules under ``trainers/`` (without importing them)."""
  spec = importlib.util.find_spec("trainers")
  return sorted(m.name for m in pkgutil.iter_modules(
      spec.submodule_search_locations))


_INTERPRETERS = ("python", "python3")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RenderOptions:
  """What to render; every field has a flag of the same name.

  Attributes:
    cluster: a validated cluster spec; only its shape is used.
    job_name: prefix of every object's name (a DNS-1035 label).
    image: the container image, built from the Dockerfile.
    trainer: the module under ``trainers/`` the pods run.
    strategy: ``multiworker`` or ``ps``.
    trainer_args: the words after the render's ``--``: extra flags of the
      trainer, after the ones the render sets; or a whole command
      ``python -m MODULE [FLAGS]`` (a user's own program, e.g.
      ``python -m tfdist.train --model=PACKAGE.MODULE:FUNCTION``), which
      the pods run instead of ``--trainer``, the render's flags inserted
      before FLAGS.
    kind: ``job`` (Indexed Jobs), ``tfjob`` (Kubeflow training operator) or
      ``jobset`` (one JobSet, for clusters with the JobSet controller).
    gpus_per_worker: ``nvidia.com/gpu`` per training task; 0 for CPU only.
    all_reduce: multiworker all-reduce: ``nccl`` (GPUs; the pods of the job
      may then connect on any TCP port), ``ring`` (over the gRPC port) or
      ``auto`` (nccl with GPUs, else ring).
    shm_size: size of the memory-backed /dev/shm of pods that use NCCL
      (the container runtime's 64 MB is too small for it); it counts
      against the pod's memory limit.
    gpu_node_selector: ``key=value`` label of GPU nodes; empty for none.
    port: the gRPC port of every task.
    cpu, memory: requests of every task (memory is also the limit).
    ps_memory: the memory of each ps task instead (request and limit), or
      empty for ``memory``: a ps holds its share of the variables, about
      1/N of a sharded table with N ps tasks (tfdist.training.sharding; the
      trainer's result line says the bytes each holds).
    data_pvc: an existing PersistentVolumeClaim mounted read-only at /data;
      empty for none.
    model_storage: size of the PersistentVolumeClaim for /model.
    storage_class: its storage class; empty for the cluster's default.
    max_restarts: how many times the job recovers from a lost pod. A Job's
      backoffLimit is max_restarts times its pod count, since one gang
      restart fails every pod of a multiworker Job once (a JobSet restarts
      at most max_restarts times instead).
    ttl_seconds: how long finished Jobs and their pods are kept.
    active_deadline_seconds: the deadline of the whole job.
    queue: a Kueue LocalQueue of the job's namespace, or empty for none:
      the JobSet is labelled for it and starts suspended, and Kueue
      unsuspends it once the quota of every pod fits (all or nothing).
    topology: a node label, a level of the ClusterQueue's Kueue Topology
      (e.g. ``topology.kubernetes.io/zone``): the pods of each role are
      admitted only within one domain of that level. Needs ``queue``.
    prefer_topology: the same as a preference: one domain of that level if
      one has room, else of the next level up, else spread. Needs
      ``queue``; not with ``topology``.
    priority_class: a Kubernetes PriorityClass for every pod (the
      scheduler's preemption; Kueue also takes it as the job's priority
      unless ``workload_priority_class`` is set), or empty for none.
    workload_priority_class: a Kueue WorkloadPriorityClass: the job's
      priority in its queue only (ordering and Kueue's preemption), not
      the pods'. Needs ``queue``.
  """
  cluster: dict
  job_name: str
  image: str
  trainer: str = "mnist"
  strategy: str = "multiworker"
  trainer_args: tuple = ()
  kind: str = "job"
  gpus_per_worker: int = 1
  all_reduce: str = "auto"
  shm_size: str = "1Gi"
  gpu_node_selector: str = DEFAULT_GPU_NODE_SELECTOR
  port: int = 2222
  cpu: str = "2"
  memory: str = "8Gi"
  ps_memory: str = ""
  data_pvc: str = ""
  model_storage: str = "10Gi"
  storage_class: str = ""
  max_restarts: int = 3
  ttl_seconds: int = 3600
  active_deadline_seconds: int = 86400
  queue: str = ""
  topology: str = ""
  prefer_topology: str = ""
  priority_class: str = ""
  workload_priority_class: str = ""

  def __post_init__(self):
    if "worker" not in self.cluster:
      raise ConfigError("the cluster spec has no worker task; list at least "
                        "one, e.g. {\"worker\": [\"127.0.0.1:20001\"]}")
    if self.strategy not in ("multiworker", "ps"):
      raise ConfigError(f"--strategy={self.strategy!r}: a Kubernetes job "
                        "runs multiworker or ps (mirrored is one machine)")
    # The strategy's own check of the topology (ps needs a chief and a ps).
    strategy_lib.plan_role(self.strategy,
                           cluster_lib.make_task(self.cluster, "worker", 0))
    _check_dns_label(self.job_name, "--job_name")
    # A JobSet's pods are <jobset>-<replicatedJob>-<job index>-<index>.
    job_index = "-0" if self.kind == "jobset" else ""
    longest = max(len(f"{self.job_name}-{t}{job_index}-{len(a) - 1}")
                  for t, a in self.cluster.items())
    if longest > 63:
      raise ConfigError(f"--job_name={self.job_name!r} is too long for "
                        f"{sum(map(len, self.cluster.values()))} tasks: pod "
                        f"hostnames like {self.job_name}-worker-N must be at "
                        f"most 63 characters; shorten it by {longest - 63}")
    if not self.image or any(c.isspace() for c in self.image):
      raise ConfigError(f"--image={self.image!r}: give an image reference "
                        "without spaces, e.g. registry.example.com/tfdist:0.1")
    if self.trainer not in trainers():
      raise ConfigError(f"--trainer={self.trainer!r}: no module "
                        f"trainers/{self.trainer}.py; use one of "
                        f"{', '.join(trainers())}, or give your own command "
                        "after --: -- python -m MODULE [FLAGS]")
    self.program()  # checks a command after --
    if self.kind not in KINDS:
      raise ConfigError(f"--kind={self.kind!r}: use one of {', '.join(KINDS)}")
    if self.all_reduce not in ALL_REDUCE:
      raise ConfigError(f"--all_reduce={self.all_reduce!r}: use one of "
                        f"{', '.join(ALL_REDUCE)}")
    if self.all_reduce == "nccl" and not self.gpus_per_worker:
      raise ConfigError("--all_reduce=nccl needs GPUs: set --gpus_per_worker "
                        "or use --all_reduce=ring")
    for name in ("gpus_per_worker", "max_restarts", "ttl_seconds"):
      if getattr(self, name) < 0:
        raise ConfigError(f"--{name}={getattr(self, name)}: must be 0 or more")
    if self.active_deadline_seconds < 1:
      raise ConfigError(f"--active_deadline_seconds="
                        f"{self.active_deadline_seconds}: must be at least 1")
    if not 1 <= self.port <= 65535:
      raise ConfigError(f"--port={self.port}: pick a port from 1 to 65535")
    if self.ps_memory and "ps" not in self.cluster:
      raise ConfigError(f"--ps_memory={self.ps_memory}: the cluster spec has "
                        "no ps task; drop it (--memory sizes every task)")
    for name in ("cpu", "memory", "model_storage", "shm_size") + (
        ("ps_memory",) if self.ps_memory else ()):
      if not _QUANTITY.match(getattr(self, name)):
        raise ConfigError(f"--{name}={getattr(self, name)!r} is not a "
                          "Kubernetes quantity; write e.g. 2, 500m, 8Gi")
    if self.gpu_node_selector:
      key, _, value = self.gpu_node_selector.partition("=")
      if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
        raise ConfigError(f"--gpu_node_selector={self.gpu_node_selector!r}: "
                          "write key=value, e.g. "
                          f"{DEFAULT_GPU_NODE_SELECTOR}, or '' for none")
    for name in ("data_pvc", "storage_class"):
      if getattr(self, name):
        _check_dns_label(getattr(self, name), f"--{name}")
    self._check_scheduling()
    self._check_min_workers()

  def _check_min_workers(self) -> None:
    """The trainer's --min_workers (after ``--``): multiworker, at most the
    cluster's training tasks (the trainer would fail every pod with 2)."""
    elastic.check(min_workers=self.min_workers, strategy=self.strategy,
                  model_dir="the claim every pod mounts: always rendered")
    full = len(elastic.members_of(self.cluster))
    if self.min_workers > full:
      raise ConfigError(f"--min_workers={self.min_workers} after --: the "
                        f"cluster spec has {full} training tasks; use at "
                        f"most {full}")

  def _check_scheduling(self) -> None:
    """The Kueue and priority flags: names, levels and combinations."""
    for name in ("queue", "priority_class", "workload_priority_class"):
      value = getattr(self, name)
      if value and (not _OBJECT_NAME.match(value) or len(value) > 63):
        raise ConfigError(f"--{name}={value!r} is not a Kubernetes object "
                          "name: use at most 63 lowercase letters, digits, "
                          "'-' and '.', starting and ending with a letter or "
                          "digit")
    if self.queue and self.kind not in QUEUED_KINDS:
      raise ConfigError(f"--queue with --kind={self.kind}: Kueue would "
                        + ("admit each role's Job on its own, not all pods "
                           "at once" if self.kind == "job" else
                           "not admit it (its TFJob integration is off by "
                           "default)") + "; render --kind=jobset")
    if self.topology and self.prefer_topology:
      raise ConfigError("--topology and --prefer_topology both set: give one "
                        "(--topology requires the level, --prefer_topology "
                        "falls back to the levels above it)")
    for name in ("topology", "prefer_topology", "workload_priority_class"):
      if getattr(self, name) and not self.queue:
        raise ConfigError(f"--{name} needs --queue: only Kueue reads it; "
                          "name the LocalQueue the job is admitted through")
    for name in ("topology", "prefer_topology"):
      level = getattr(self, name)
      if level and (not _LABEL_KEY.match(level)
                    or len(level.rpartition("/")[2]) > 63):
        raise ConfigError(f"--{name}={level!r} is not a node label key; give "
                          "a level of the ClusterQueue's Topology, e.g. "
                          "topology.kubernetes.io/zone")

  def program(self) -> tuple:
    """``(["python", "-m", MODULE], its flags)`` of what the pods run."""
    words = list(self.trainer_args)
    if not words or words[0] not in _INTERPRETERS:
      return ["python", "-m", f"trainers.{self.trainer}"], words
    module = words[2] if len(words) > 2 and words[1] == "-m" else ""
    if not module or not all(p.isidentifier() for p in module.split(".")):
      raise ConfigError(f"-- {' '.join(words[:3])}: the pods run a Python "
                        "module: write -- python -m MODULE [FLAGS], e.g. -- "
                        "python -m tfdist.train --model=PACKAGE.MODULE:"
                        "FUNCTION")
    if self.trainer != "mnist":
      raise ConfigError(f"--trainer={self.trainer} and the command after -- "
                        "both name what the pods run: drop one of them")
    return words[:3], words[3:]

  @property
  def min_workers(self) -> int:
    """The trainer's ``--min_workers`` among the words after ``--`` (0:
    not elastic)."""
    return launch.min_workers_of(self.trainer_args)

  @property
  def roles(self) -> list:
    return [r for r in ROLES if r in self.cluster]

  @property
  def nccl(self) -> bool:
    """Whether the workers all-reduce with NCCL (multiworker on GPUs)."""
    return self.strategy == "multiworker" and (
        self.all_reduce == "nccl" or
        (self.all_reduce == "auto" and self.gpus_per_worker > 0))

  def memory_of(self, role: str) -> str:
    """The memory request (and limit) of one task of ``role``."""
    return self.ps_memory if role == "ps" and self.ps_memory else self.memory

  def gpus(self, role: str) -> int:
    """GPUs of one task of ``role``: none for the ps tasks, which only hold
    variables, nor for the ps chief, which only dispatches steps."""
    if role == "ps" or (self.strategy == "ps" and role == "chief"):
      return 0
    return self.gpus_per_worker


def _check_dns_label(name: str, flag: str) -> None:
  if not _DNS_1035.match(name) or len(name) > 63:
    raise ConfigError(f"{flag}={name!r} is not a DNS-1035 label: use at most "
                      "63 lowercase letters, digits and '-', starting with a "
                      "letter and ending with a letter or digit")
