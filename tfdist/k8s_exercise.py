r"""Runs the pods of a manifest directory as local processes: no cluster.

    python -m tfdist.k8s exercise k8s --pvc=mnist-data=../shared/data \
        [--pvc=mnist-model=/tmp/model] [-- --epochs=1]

For every pod the manifests' Indexed Jobs would create, the exercise starts
the container's own command and arguments as a local process, with the
environment the pod would get: the container's ``env``, plus what Kubernetes
adds (``JOB_COMPLETION_INDEX``, ``HOSTNAME``). What only a cluster provides
is mapped, the way a node would provide it:

* DNS: every address in the cluster spec of a ConfigMap must be the name of
  a pod (``<job>-<index>.<subdomain>``) behind a headless Service of that
  subdomain selecting it, on a port the Service and container expose; it is
  rewritten to a free loopback port in the local copy of the ConfigMap.
* NetworkPolicy: every pod must be admitted to every such address's port
  (read, not enforced: loopback has no policies).
* Volumes: each ``mountPath`` becomes a local directory in the command and
  env (a ConfigMap's files written out, an emptyDir a fresh directory, a
  PersistentVolumeClaim the directory given with ``--pvc CLAIM=DIR`` or, for
  a claim the manifests create, a fresh one).

Arguments after ``--`` are appended to every trainer command (e.g. fewer
epochs). tfdist.launch's Launcher runs the pods (prefixed output, stop on
failure, deadlines); the job passes when every pod exits 0 by itself, as
every Job must for Kubernetes to call it Complete. Not proven: that the image
builds and runs, that pods get scheduled, GPUs, storage classes and
NetworkPolicy enforcement.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from typing import Optional
from tfdist import cluster as cluster_lib
from tfdist import k8s
from tfdist import k8s_pod
from tfdist import launch
from tfdist.errors import ConfigError

_POD_COMMAND = "_pod"  # internal: the launcher's command for one pod
_EXTENSIONS = (".yaml", ".yml", ".json")  # what kubectl apply -f DIR reads


@dataclasses.dataclass(frozen=True)
class Pod:
  """One pod an Indexed Job would create."""
  job: dict
  index: int

  @property
  def name(self) -> str:
    # The hostname Kubernetes gives pods of an Indexed Job with a subdomain.
    return f"{self.job['metadata']['name']}-{self.index}"

  @property
  def spec(self) -> dict:
    return self.job["spec"]["template"]["spec"]

  @property
  def labels(self) -> dict:
    return self.job["spec"]["template"].get("metadata", {}).get("labels", {})

  @property
  def container(self) -> dict:
    return self.spec["containers"][0]


def load_manifests(directory: str) -> list:
  """The objects ``kubectl apply -f DIRECTORY`` would create, in order."""
  import yaml  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(directory):
    raise ConfigError(f"{directory} is not a directory of manifests; e.g. "
                      "k8s or k8s/ps")
  objects = []
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    if not name.endswith(_EXTENSIONS) or not os.path.isfile(path):
      continue
    with open(path) as f:
      try:
        objects += [d for d in yaml.safe_load_all(f) if d]
      except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})")
  if not objects:
    raise ConfigError(f"{directory} has no manifests (*.yaml); render some "
                      "with python -m tfdist.k8s render")
  return objects


def _by_kind(objects: list, kind: str) -> dict:
  return {o["metadata"]["name"]: o for o in objects if o.get("kind") == kind}


def job_pods(objects: list) -> list:
  """Every pod of every Job, checking the exercise can run it."""
  unsupported = sorted({o.get("kind") for o in objects} - {
      "Job", "Service", "ConfigMap", "PersistentVolumeClaim", "NetworkPolicy"})
  if unsupported:
    raise ConfigError(f"the exercise runs batch/v1 Jobs; it cannot run "
                      f"{', '.join(map(str, unsupported))} (a TFJob's "
                      "TF_CONFIG comes from the training operator)")
  pods = []
  for name, job in _by_kind(objects, "Job").items():
    spec = job["spec"]
    if spec.get("completionMode") != "Indexed":
      raise ConfigError(f"Job {name}: not an Indexed Job; its pods would "
                        "have no completion index and no stable hostname")
    containers = spec["template"]["spec"]["containers"]
    if len(containers) != 1 or not containers[0].get("command"):
      raise ConfigError(f"Job {name}: the exercise runs pods of exactly one "
                        "container with an explicit command")
    pods += [Pod(job, i) for i in range(spec.get("completions", 1))]
  if not pods:
    raise ConfigError("the manifests have no Job: nothing would run")
  return pods


def resolve(host: str, port: int, pods: list, services: dict) -> Pod:
  """The pod that ``host:port`` reaches through cluster DNS, or ConfigError."""
  hostname, _, subdomain = host.partition(".")
  for pod in pods:
    if pod.name != hostname or pod.spec.get("subdomain") != subdomain:
      continue
    service = services.get(subdomain)
    if service is None or service["spec"].get("clusterIP") != "None":
      raise ConfigError(f"{host}: pod {pod.name} has subdomain {subdomain!r} "
                        "but no headless Service of that name exists")
    selector = service["spec"].get("selector", {})
    if not selector or any(pod.labels.get(k) != v
                           for k, v in selector.items()):
      raise ConfigError(f"{host}: Service {subdomain} does not select pod "
                        f"{pod.name} (selector {selector})")
    if port not in [p.get("port") for p in service["spec"].get("ports", [])]:
      raise ConfigError(f"{host}:{port}: Service {subdomain} has no port "
                        f"{port}")
    if port not in [p.get("containerPort")
                    for p in pod.container.get("ports", [])]:
      raise ConfigError(f"{host}:{port}: pod {pod.name}'s container does not "
                        f"declare port {port}")
    return pod
  raise ConfigError(f"{host}: no pod of these manifests has this DNS name "
                    "(<job>-<index>.<subdomain> of an Indexed Job)")


def _selects(selector: dict, labels: dict) -> bool:
  if set(selector) - {"matchLabels"}:
    raise ConfigError(f"label selector {selector}: the exercise reads "
                      "matchLabels only")
  return all(labels.get(k) == v
             for k, v in selector.get("matchLabels", {}).items())


def check_ingress(pod: Pod, port: int, pods: list, policies: dict) -> None:
  """Fails unless every pod may connect to ``pod`` on ``port``.

  Reads the NetworkPolicies as a cluster that enforces them would: a pod no
  Ingress policy selects admits everything; a selected pod admits what one
  of the rules of the policies selecting it allows.
  """
  selecting = [p for p in policies.values()
               if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
               and _selects(p["spec"].get("podSelector", {}), pod.labels)]
  if not selecting:
    return
  names = {p["name"]: p["containerPort"]
           for p in pod.container.get("ports", []) if "name" in p}
  for peer in (p for p in pods if p.name != pod.name):
    def admits(rule, peer=peer):
      ports = [names.get(p.get("port"), p.get("port"))
               for p in rule.get("ports", [])]
      sources = rule.get("from", [])
      return ((not ports or port in ports) and
              (not sources or any(set(f) == {"podSelector"} and
                                  _selects(f["podSelector"], peer.labels)
                                  for f in sources)))
    if not any(admits(rule) for policy in selecting
               for rule in policy["spec"].get("ingress", [])):
      raise ConfigError(
          f"NetworkPolicy {', '.join(p['metadata']['name'] for p in selecting)}"
          f" blocks pod {peer.name} from reaching pod {pod.name} on port "
          f"{port}: the tasks could not talk")


@dataclasses.dataclass
class Plan:
  """What the exercise runs: the local cluster and each task's pod."""
  cluster: dict = dataclasses.field(default_factory=dict)
  pods: dict = dataclasses.field(default_factory=dict)  # task name -> Pod
  # ConfigMap name -> {file name: local text}.
  config_maps: dict = dataclasses.field(default_factory=dict)


def plan(objects: list, pick_port) -> Plan:
  """Maps the cluster spec in the ConfigMaps to pods and loopback ports.

  Raises:
    ConfigError: no cluster spec, an address no pod answers to or a
      NetworkPolicy keeps from the other pods, or a pod that has no address
      in the spec.
  """
  pods = job_pods(objects)
  services = _by_kind(objects, "Service")
  policies = _by_kind(objects, "NetworkPolicy")
  result = Plan()
  for map_name, config_map in _by_kind(objects, "ConfigMap").items():
    files = {}
    for key, text in config_map.get("data", {}).items():
      try:
        spec = cluster_lib.validate_cluster(
            json.loads(text), where=f"ConfigMap {map_name} {key}")
      except (ValueError, TypeError):
        files[key] = text  # not a cluster spec: copied as it is
        continue
      if result.cluster:
        raise ConfigError(f"ConfigMap {map_name} {key}: a second cluster "
                          "spec; a job has one")
      local = {}
      for task_type, addresses in spec.items():
        local[task_type] = []
        for index, address in enumerate(addresses):
          host, port = cluster_lib.split_address(address, where=map_name)
          pod = resolve(host, port, pods, services)
          check_ingress(pod, port, pods, policies)
          result.pods[f"{task_type}-{index}"] = pod
          local[task_type].append(f"127.0.0.1:{pick_port()}")
      files[key] = json.dumps(local, indent=1) + "\n"
      result.cluster = local
    result.config_maps[map_name] = files
  if not result.cluster:
    raise ConfigError("no ConfigMap holds a cluster spec; the pods could not "
                      "derive their TF_CONFIG")
  unaddressed = sorted({p.name for p in pods} -
                       {p.name for p in result.pods.values()})
  if unaddressed:
    raise ConfigError(f"pods {', '.join(unaddressed)} have no address in the "
                      "cluster spec: no task could reach them")
  return result


def _map_path(value: str, mounts: dict) -> str:
  """``value`` (a path, or ``--flag=path``) with its mount path made local."""
  prefix, path = "", value
  if value.startswith("-") and "=" in value:
    flag, _, path = value.partition("=")
    prefix = flag + "="
  for mount_path in sorted(mounts, key=len, reverse=True):
    root = mount_path.rstrip("/")
    if path == root or path.startswith(root + "/"):
      return prefix + mounts[mount_path] + path[len(root):]
  return value


def pod_process(pod: Pod, *, volume_dir, extra_args: list) -> dict:
  """The local command and environment of one pod.

  Args:
    pod: the pod.
    volume_dir: ``volume_dir(pod, volume)`` -> the local directory of one of
      the pod's volumes.
    extra_args: appended to the command.
  """
  volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
  mounts = {m["mountPath"]: volume_dir(pod, volumes[m["name"]])
            for m in pod.container.get("volumeMounts", [])}
  env = {}
  for variable in pod.container.get("env", []):
    if "value" not in variable:
      raise ConfigError(f"pod {pod.name}: env {variable['name']} uses "
                        "valueFrom, which the exercise cannot provide")
    env[variable["name"]] = _map_path(variable["value"], mounts)
  # What Kubernetes adds to every pod of an Indexed Job.
  env[k8s_pod.INDEX_ENV] = str(pod.index)
  env["HOSTNAME"] = pod.name
  command = pod.container["command"] + pod.container.get("args", [])
  return {"pod": pod.name,
          "command": [_map_path(a, mounts) for a in command] + extra_args,
          "env": env}


class _Volumes:
  """Local directories standing in for the pods' volumes."""

  def __init__(self, *, root: str, plan_: Plan, pvcs: dict, claims: dict):
    self._root, self._plan, self._pvcs, self._claims = root, plan_, pvcs, claims
    self._dirs: dict = {}

  def __call__(self, pod: Pod, volume: dict) -> str:
    if "configMap" in volume:
      name = volume["configMap"]["name"]
      if name not in self._plan.config_maps:
        raise ConfigError(f"pod {pod.name}: ConfigMap {name} is not in the "
                          "manifests")
      key = ("configMap", name)
    elif "persistentVolumeClaim" in volume:
      claim = volume["persistentVolumeClaim"]["claimName"]
      if claim in self._pvcs:
        return self._pvcs[claim]
      if claim not in self._claims:
        raise ConfigError(f"pod {pod.name} mounts PersistentVolumeClaim "
                          f"{claim}, which the manifests do not create; map "
                          f"it to a local directory with --pvc={claim}=DIR")
      key = ("pvc", claim)  # one directory, shared by every pod
    elif "emptyDir" in volume:
      key = ("emptyDir", pod.name, volume["name"])  # one per pod
    else:
      raise ConfigError(f"pod {pod.name}: volume {volume['name']} is neither "
                        "a ConfigMap, a PVC nor an emptyDir")
    if key not in self._dirs:
      path = tempfile.mkdtemp(prefix="-".join(key[:2]) + "-", dir=self._root)
      if key[0] == "configMap":
        for file_name, text in self._plan.config_maps[key[1]].items():
          with open(os.path.join(path, file_name), "w") as f:
            f.write(text)
      self._dirs[key] = path
    return self._dirs[key]


def _parse_pvcs(values: list) -> dict:
  pvcs = {}
  for value in values:
    claim, sep, path = value.partition("=")
    if not sep or not claim or not path:
      raise ConfigError(f"--pvc={value!r}: write CLAIM=DIR, e.g. "
                        "mnist-data=../shared/data")
    if not os.path.isdir(path):
      raise ConfigError(f"--pvc={value}: {path} is not a directory")
    pvcs[claim] = os.path.abspath(path)
  return pvcs


def _read_status(path: str) -> Optional[int]:
  try:
    with open(path) as f:
      return int(f.read())
  except (OSError, ValueError):
    return None  # killed before it could write one


def exercise(directory: str, *, pvcs: dict, extra_args: list, grace: float,
             work_dir: str, out=None) -> int:
  """Runs every pod of ``directory`` locally; returns the exit status.

  0 only when every pod exited 0 by itself: every Job would be Complete.
  """
  import portpicker  # pylint: disable=g-import-not-at-top
  out = out or sys.stdout
  objects = load_manifests(directory)
  job_plan = plan(objects, portpicker.pick_unused_port)
  volumes = _Volumes(root=work_dir, plan_=job_plan, pvcs=pvcs,
                     claims=_by_kind(objects, "PersistentVolumeClaim"))
  processes = {}
  for task_name, pod in job_plan.pods.items():
    processes[task_name] = pod_process(pod, volume_dir=volumes,
                                       extra_args=extra_args)
    processes[task_name]["status_file"] = os.path.join(
        work_dir, f"{pod.name}.status")
    out.write(f"[exercise] {task_name} is pod {pod.name}: "
              f"{' '.join(processes[task_name]['command'])}\n")
  plan_file = os.path.join(work_dir, "plan.json")
  with open(plan_file, "w") as f:
    json.dump(processes, f)
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  # The image's `python` is the one running this.
  env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get(
      "PATH", "")
  launcher = launch.Launcher(
      cluster=job_plan.cluster, grace=grace, env=env, out=out,
      command=[sys.executable, "-m", "tfdist.k8s_exercise", _POD_COMMAND,
               plan_file])
  status = launcher.run()
  if status != 0:
    return status
  # The launcher returned 0, so a pod without status 0 was still running
  # when the launcher stopped it after the grace period.
  lingering = sorted(p["pod"] for p in processes.values()
                     if _read_status(p["status_file"]) != 0)
  if lingering:
    launcher.say(f"pods {', '.join(lingering)} did not end by themselves "
                 f"within {grace:.0f} s of the chief: on Kubernetes they "
                 "would keep running and their Job would never complete")
    return 1
  for job in _by_kind(objects, "Job"):
    count = sum(1 for p in job_plan.pods.values()
                if p.job["metadata"]["name"] == job)
    launcher.say(f"Job {job}: {count}/{count} pods succeeded: Complete")
  return 0


def run_pod(plan_file: str) -> int:
  """The launcher's command for one task: runs its pod's process.

  The launcher identifies the task by TF_CONFIG; the pod must derive its
  own, so TF_CONFIG is removed and the pod's environment added.
  """
  task = cluster_lib.parse_tf_config(os.environ.get("TF_CONFIG"))
  with open(plan_file) as f:
    process = json.load(f)[task.name]
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  env.update(process["env"])
  status = k8s_pod.run_child(process["command"], env)
  with open(process["status_file"], "w") as f:
    f.write(str(status))
  return status


def main(argv=None) -> int:
  """``python -m tfdist.k8s exercise DIR``: runs a job's pods locally."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == [_POD_COMMAND]:
    return run_pod(argv[1])
  split = argv.index("--") if "--" in argv else len(argv)
  own, extra_args = argv[:split], argv[split + 1:]
  parser = k8s.OneLineParser(
      prog="python -m tfdist.k8s exercise",
      description="Run every pod of a manifest directory as a local process; "
                  "arguments after -- are appended to every trainer command.")
  parser.add_argument("directory", help="manifest directory, e.g. k8s")
  parser.add_argument("--pvc", action="append", default=[],
                      help="CLAIM=DIR: the local directory of a "
                           "PersistentVolumeClaim (repeatable)")
  parser.add_argument("--grace", type=float, default=60.0,
                      help="seconds the other pods get to end by themselves "
                           "after the chief exits 0")
  args = parser.parse_args(own)
  work_dir = tempfile.mkdtemp(prefix="tfdist-exercise-")
  try:
    return exercise(args.directory, pvcs=_parse_pvcs(args.pvc),
                    extra_args=extra_args, grace=args.grace,
                    work_dir=work_dir)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
  sys.exit(main())
