"""The Kubernetes objects of a training job, built from RenderOptions.

Per task type a headless Service and an Indexed Job whose pods derive their
TF_CONFIG from the spec (a ConfigMap), their type and their completion index
(see tfdist.k8s.pod); plus a NetworkPolicy that admits only the job's own
pods (to the gRPC port, or to every TCP port when NCCL connects them), and a
PersistentVolumeClaim for ``--model_dir``. With ``--kind=tfjob`` one Kubeflow
TFJob instead of the Jobs and Services (the training operator sets TF_CONFIG
itself); with ``--kind=jobset`` one JobSet whose replicated jobs are those
Jobs (the JobSet controller makes the headless Service), which with
``--queue`` starts suspended, for Kueue to admit (tfdist.k8s.kueue's names).

Recovery: a task that loses a peer exits 200 (tfdist.errors), which the
podFailurePolicy retries like a signal; 1-127 fail the job at once. A
replacement pod starts only once the pod it replaces has terminated
(podReplacementPolicy: Failed): two pods of one task never meet.

Elastic multiworker (the trainer's ``--min_workers=K`` after the render's
``--``, tfdist.training.elastic): a lost worker's pod is retried alone (the
others regroup without it, never exiting), and the workers' Job is complete
once enough of its pods succeeded (a Job ``successPolicy``, see
_elastic_success); the Job controller then removes a replacement pod that
never scheduled. A JobSet is complete with Any of its training Jobs.

Owns the objects and their YAML files' names and text. Imports
tfdist.k8s.options, tfdist.k8s.files and tfdist.k8s.kueue only.
"""

from __future__ import annotations

import json
from typing import Optional

from tfdist.k8s import files as files_lib
from tfdist.k8s import kueue
from tfdist.k8s.options import RenderOptions

CONTAINER = "trainer"
# Where the pods see their volumes; tfdist.k8s.exercise maps these to local
# directories.
CONFIG_DIR, MODEL_DIR, DATA_DIR = "/etc/tfdist", "/model", "/data"
# The user and group of the Dockerfile; non-root, so runAsNonRoot holds.
UID = 1000
# The training operator's names for the task types.
_TFJOB_REPLICA = {"chief": "Chief", "worker": "Worker", "ps": "PS",
                  "evaluator": "Evaluator"}


def k8s_cluster(options: RenderOptions) -> dict:
  """The cluster spec as the pods see it: each task at its pod's DNS name.

  An Indexed Job's pod gets the hostname ``<job>-<index>``; with
  ``subdomain`` set to a headless Service of the same name it resolves as
  ``<job>-<index>.<service>`` in the namespace. A JobSet's Job of a role is
  ``<jobset>-<role>-0`` and its subdomain the JobSet's name.
  """
  return {role: [f"{_job_name(options, role)}-{i}.{_subdomain(options, role)}"
                 f":{options.port}" for i in range(len(options.cluster[role]))]
          for role in options.roles}


def _name(options: RenderOptions, role: str) -> str:
  return f"{options.job_name}-{role}"


def _job_name(options: RenderOptions, role: str) -> str:
  """The name of the Job of ``role`` (a JobSet's first and only replica)."""
  return _name(options, role) + ("-0" if options.kind == "jobset" else "")


def _subdomain(options: RenderOptions, role: str) -> str:
  return options.job_name if options.kind == "jobset" else _name(options, role)


def _labels(options: RenderOptions,
            role: Optional[str] = None) -> dict:
  labels = {"app.kubernetes.io/name": "tfdist",
            "app.kubernetes.io/instance": options.job_name,
            "tfdist/job": options.job_name}
  if role:
    labels["tfdist/role"] = role
  return labels


def _trainer_command(options: RenderOptions) -> list:
  args = [f"--strategy={options.strategy}", f"--model_dir={MODEL_DIR}",
          # Pods of a job start minutes apart (image pulls, GPU node
          # scale-up); the default 2 min wait for peers is too short.
          "--peer_timeout=900"]
  if options.strategy == "multiworker":
    # NCCL, GPU to GPU, opens ports of its own between the pods (the
    # NetworkPolicy then admits every port from the job's pods); ring
    # all-reduce runs over the gRPC port.
    args.append(f"--all_reduce={'nccl' if options.nccl else 'ring'}")
  program, flags = options.program()
  return [*program, *args, *flags]


def _container(options: RenderOptions, role: str, command: list, *,
               name: str, port_name: str, mounts: list) -> dict:
  memory = options.memory_of(role)
  resources = {"requests": {"cpu": options.cpu, "memory": memory},
               "limits": {"memory": memory}}
  if options.gpus(role):
    resources["limits"]["nvidia.com/gpu"] = options.gpus(role)
  return {
      "name": name,
      "image": options.image,
      "command": command,
      "ports": [{"name": port_name, "containerPort": options.port,
                 "protocol": "TCP"}],
      "resources": resources,
      "securityContext": {
          "allowPrivilegeEscalation": False,
          "readOnlyRootFilesystem": True,
          "runAsNonRoot": True,
          "capabilities": {"drop": ["ALL"]},
      },
      "volumeMounts": mounts,
  }


def _pod_template(options: RenderOptions, role: str, command: list, *,
                  container_name: str, port_name: str,
                  job_pod: bool) -> dict:
  mounts = [{"name": "model", "mountPath": MODEL_DIR},
            # The root filesystem is read-only; TensorFlow, tempfile and the
            # ps done markers write to /tmp.
            {"name": "tmp", "mountPath": "/tmp"}]
  volumes = [{"name": "model", "persistentVolumeClaim": {
                  "claimName": f"{options.job_name}-model"}},
             {"name": "tmp", "emptyDir": {}}]
  if job_pod:
    mounts.insert(0, {"name": "cluster", "mountPath": CONFIG_DIR,
                      "readOnly": True})
    volumes.insert(0, {"name": "cluster", "configMap": {
        "name": f"{options.job_name}-cluster"}})
  if options.data_pvc:
    mounts.append({"name": "data", "mountPath": DATA_DIR, "readOnly": True})
    volumes.append({"name": "data", "persistentVolumeClaim": {
        "claimName": options.data_pvc, "readOnly": True}})
  if options.nccl and options.gpus(role):
    # NCCL's buffers live in /dev/shm; the runtime's 64 MB makes it fail
    # (NVIDIA/nccl#525). Memory-backed: it counts against the memory limit.
    mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    volumes.append({"name": "shm", "emptyDir": {
        "medium": "Memory", "sizeLimit": options.shm_size}})
  spec = {}
  if options.priority_class:
    spec["priorityClassName"] = options.priority_class
  if job_pod and options.kind == "job":
    # The pod's DNS name <job>-<index>.<service>: the address in the spec
    # (a JobSet's controller sets the subdomain itself).
    spec["subdomain"] = _name(options, role)
  if job_pod:
    # podFailurePolicy needs Never: a failed container means a failed pod,
    # which the policy then fails or retries by exit status.
    spec["restartPolicy"] = "Never"
  spec.update({
      # No pod talks to the Kubernetes API: no token to steal.
      "automountServiceAccountToken": False,
      # Service environment variables are noise to TensorFlow.
      "enableServiceLinks": False,
      # Time for a trainer to write a checkpoint after SIGTERM.
      "terminationGracePeriodSeconds": 60,
      "securityContext": {
          "runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
          # The volumes become writable by the non-root user.
          "fsGroup": UID,
          "seccompProfile": {"type": "RuntimeDefault"},
      },
  })
  if options.gpus(role):
    if options.gpu_node_selector:
      key, _, value = options.gpu_node_selector.partition("=")
      spec["nodeSelector"] = {key: value}
    # GPU node pools are usually tainted so that only GPU pods land there.
    spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists",
                            "effect": "NoSchedule"}]
  spec["containers"] = [_container(options, role, command, name=container_name,
                                   port_name=port_name, mounts=mounts)]
  spec["volumes"] = volumes
  metadata = {"labels": _labels(options, role)}
  if options.topology or options.prefer_topology:
    # Each pod template is one Kueue PodSet: its pods in one domain.
    metadata["annotations"] = {
        kueue.REQUIRED_TOPOLOGY: options.topology} if options.topology else {
            kueue.PREFERRED_TOPOLOGY: options.prefer_topology}
  return {"metadata": metadata, "spec": spec}


def _pod_failure_policy() -> dict:
  return {"rules": [
      # Preempted, evicted or drained: not the trainer's fault; replace the
      # pod without counting it against backoffLimit.
      {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
      # 1-127: the program failed (2 is bad input): a retry fails again.
      # 128 + N (killed by signal N, e.g. 137 OOM-killed) and 200 (a lost
      # peer: the survivors of a gang) fall through to backoffLimit: the pod
      # is retried, and the restarted pods meet again in preflight.
      {"action": "FailJob", "onExitCodes": {
          "containerName": CONTAINER, "operator": "In",
          "values": files_lib.FlowList(range(1, 128))}},
  ]}


def _job_spec(options: RenderOptions, role: str, *,
              backoff_limit: int) -> dict:
  """The spec of the Indexed Job of ``role``."""
  count = len(options.cluster[role])
  command = ["python", "-m", "tfdist.k8s.pod",
             f"--cluster_spec={CONFIG_DIR}/cluster.json",
             f"--task_type={role}", "--", *_trainer_command(options)]
  return {
      # Indexed: pod i gets JOB_COMPLETION_INDEX=i and the hostname
      # <job>-<i>; the Job is complete when every index succeeded once.
      "completionMode": "Indexed",
      "completions": count,
      "parallelism": count,
      "backoffLimit": backoff_limit,
      "activeDeadlineSeconds": options.active_deadline_seconds,
      "podFailurePolicy": _pod_failure_policy(),
      # A replacement only once the old pod has terminated (phase Failed),
      # not while it is still terminating (a lost node's pod may be, for
      # minutes): TensorFlow's servers and coordination service must never
      # see two pods of one task, nor Kueue's quota both. The only value
      # Kubernetes allows beside a podFailurePolicy; GA since Kubernetes 1.34.
      "podReplacementPolicy": "Failed",
      "template": _pod_template(options, role, command,
                                container_name=CONTAINER,
                                port_name="grpc", job_pod=True),
      **_elastic_success(options, role),
  }


def _elastic_success(options: RenderOptions, role: str) -> dict:
  """With --min_workers=K, the workers' Job is complete once as many of
  its pods succeeded as the fewest workers that can train (K, or K - 1
  beside a chief; at least 1): a training task exits 0 only after every
  member passed the final barrier, after the chief's outputs. Lingering
  pods (a replacement that never scheduled) are then removed. GA since
  Kubernetes 1.33."""
  if not options.min_workers or role != "worker":
    return {}
  needed = max(1, options.min_workers - len(options.cluster.get("chief", ())))
  return {"successPolicy": {"rules": [{"succeededCount": needed}]}}


def _backoff_limit(options: RenderOptions, role: str) -> int:
  # A gang restart fails each pod of a multiworker Job once (the lost one
  # and the survivors exiting 200): max_restarts of them fit.
  return options.max_restarts * len(options.cluster[role])


def _job_objects(options: RenderOptions, role: str) -> list:
  name = _name(options, role)
  service = {
      "apiVersion": "v1", "kind": "Service",
      "metadata": {"name": name, "labels": _labels(options, role)},
      "spec": {
          # Headless: DNS names for the pods, no virtual IP, no load
          # balancing (every task must reach one exact peer).
          "clusterIP": "None",
          # DNS records before the pods are Ready: TensorFlow dials its peers
          # while they start.
          "publishNotReadyAddresses": True,
          "selector": _labels(options, role),
          "ports": [{"name": "grpc", "port": options.port,
                     "targetPort": "grpc", "protocol": "TCP"}],
      },
  }
  spec = _job_spec(options, role,
                   backoff_limit=_backoff_limit(options, role))
  spec["ttlSecondsAfterFinished"] = options.ttl_seconds
  job = {
      "apiVersion": "batch/v1", "kind": "Job",
      "metadata": {"name": name, "labels": _labels(options, role)},
      "spec": spec,
  }
  return [service, job]


def _jobset(options: RenderOptions) -> dict:
  """One JobSet: a replicated job (one Indexed Job) per role."""
  primary = "chief" if "chief" in options.cluster else "worker"
  spec = {
      # Pods resolve as <jobset>-<role>-0-<index>.<jobset>, before Ready.
      "network": {"enableDNSHostnames": True, "subdomain": options.job_name,
                  "publishNotReadyAddresses": True},
      # The chief (else worker 0, whose Job completes with every worker's
      # pod, all ending together) ends the set; ps and worker tasks of the
      # ps strategy end once the chief tells them to. Elastic: the chief's
      # Job or the workers' (their successPolicy), whichever completes; a
      # chief lost for good never completes its own.
      "successPolicy": {"operator": "Any", "targetReplicatedJobs": [
          r for r in options.roles if r in ("chief", "worker")]}
                       if options.min_workers else
                       {"operator": "All", "targetReplicatedJobs": [primary]},
      "failurePolicy": {
          "maxRestarts": options.max_restarts,
          "rules": [
              # A program error (1-127) failed a Job through its
              # podFailurePolicy: a restart would fail again.
              {"name": "ProgramError", "action": "FailJobSet",
               "onJobFailureReasons": ["PodFailurePolicy"]},
              # Anything else (a lost pod, a lost peer's 200): recreate
              # every pod, which resume from the last checkpoint.
              {"name": "LostPod", "action": "RestartJobSet"}]},
      "ttlSecondsAfterFinished": options.ttl_seconds,
  }
  if options.strategy == "ps":
    # The ps tasks hold the variables: up before the workers and the chief.
    spec["startupPolicy"] = {"startupPolicyOrder": "InOrder"}
  jobs = []
  for role in options.roles:
    # Multiworker: the first lost pod fails its Job and the JobSet restarts
    # them all at once. ps, and elastic multiworker (--min_workers): a lost
    # pod is retried alone while the others go on.
    backoff = (_backoff_limit(options, role)
               if options.strategy == "ps" or options.min_workers else 0)
    jobs.append({"name": role, "replicas": 1, "template": {
        "metadata": {"labels": _labels(options, role)},
        "spec": _job_spec(options, role, backoff_limit=backoff)}})
  spec["replicatedJobs"] = jobs
  labels = _labels(options)
  if options.queue:
    # Kueue admits the whole set at once, when every pod's quota fits; until
    # then no pod exists (suspended from the start: no pod races admission).
    labels[kueue.QUEUE_LABEL] = options.queue
    if options.workload_priority_class:
      labels[kueue.PRIORITY_LABEL] = options.workload_priority_class
    spec["suspend"] = True
  return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
          "metadata": {"name": options.job_name, "labels": labels},
          "spec": spec}


def _tfjob(options: RenderOptions) -> dict:
  replicas = {}
  for role in options.roles:
    replicas[_TFJOB_REPLICA[role]] = {
        "replicas": len(options.cluster[role]),
        # The operator's ExitCode policy is our fault model: 1-127 are
        # permanent errors, 128-255 (a signal, or 200: a lost peer) are
        # retried.
        "restartPolicy": "ExitCode",
        # The operator sets TF_CONFIG itself, so the trainer runs directly;
        # it requires the container name "tensorflow" and port "tfjob-port".
        "template": _pod_template(options, role, _trainer_command(options),
                                  container_name="tensorflow",
                                  port_name="tfjob-port", job_pod=False),
    }
  return {
      "apiVersion": "kubeflow.org/v1", "kind": "TFJob",
      "metadata": {"name": options.job_name, "labels": _labels(options)},
      "spec": {
          "runPolicy": {
              # Pods still running when the job ends are removed; finished
              # ones stay for their logs until the TTL.
              "cleanPodPolicy": "Running",
              "backoffLimit": options.max_restarts * sum(
                  len(options.cluster[r]) for r in options.roles),
              "activeDeadlineSeconds": options.active_deadline_seconds,
              "ttlSecondsAfterFinished": options.ttl_seconds,
          },
          "tfReplicaSpecs": replicas,
      },
  }


def _shared_objects(options: RenderOptions) -> dict:
  policy = {
      "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
      "metadata": {"name": options.job_name, "labels": _labels(options)},
      "spec": {
          # Every pod of the job, whatever its role.
          "podSelector": {"matchLabels": {"tfdist/job": options.job_name}},
          "policyTypes": ["Ingress"],
          # TensorFlow's gRPC servers have no authentication: only the
          # job's own pods may connect, only to the gRPC port, or to any TCP
          # port when NCCL connects them (it picks its ports at run time).
          "ingress": [{
              "from": [{"podSelector": {"matchLabels": {
                  "tfdist/job": options.job_name}}}],
              "ports": [{"protocol": "TCP"} if options.nccl else
                        {"protocol": "TCP", "port": options.port}],
          }],
      },
  }
  claim_spec = {
      # Every training pod mounts it (one template per role), possibly on
      # different nodes; only the chief writes to it.
      "accessModes": ["ReadWriteMany"],
      "resources": {"requests": {"storage": options.model_storage}},
  }
  if options.storage_class:
    claim_spec["storageClassName"] = options.storage_class
  claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": f"{options.job_name}-model",
                        "labels": _labels(options)},
           "spec": claim_spec}
  return {"01-networkpolicy.yaml": [policy], "02-model-pvc.yaml": [claim]}


def render(options: RenderOptions, *, command: str) -> dict:
  """Renders the manifests; returns ``{file name: YAML text}``.

  Args:
    options: what to render.
    command: the shell command that re-renders them, written at the top of
      every file.
  """
  documents = {}
  if options.kind != "tfjob":
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{options.job_name}-cluster",
                     "labels": _labels(options)},
        "data": {"cluster.json": json.dumps(k8s_cluster(options),
                                            indent=1) + "\n"},
    }
    documents["00-cluster-configmap.yaml"] = [config_map]
  documents.update(_shared_objects(options))
  if options.kind == "job":
    for number, role in enumerate(options.roles):
      documents[f"{10 + number}-{role}.yaml"] = _job_objects(options, role)
  elif options.kind == "jobset":
    documents["10-jobset.yaml"] = [_jobset(options)]
  else:
    documents["10-tfjob.yaml"] = [_tfjob(options)]
  header = files_lib.HEADER + f"# {command}\n"
  return {name: header + files_lib.dump_yaml(docs)
          for name, docs in documents.items()}
