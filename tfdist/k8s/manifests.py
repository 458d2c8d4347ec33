"""The Kubernetes objects of a training job, built from RenderOptions.

Per task type a headless Service and an Indexed Job whose pods derive their
TF_CONFIG from the spec (a ConfigMap), their type and their completion index
(see tfdist.k8s.pod); plus a NetworkPolicy that admits only the job's own
pods to the gRPC port, and a PersistentVolumeClaim for ``--model_dir``. With
``--kind=tfjob`` one Kubeflow TFJob instead of the Jobs and Services (the
training operator sets TF_CONFIG itself).

Owns the objects and their YAML files' names and text. Imports
tfdist.k8s.options and tfdist.k8s.files only.
"""

from __future__ import annotations

import json
from typing import Optional

from tfdist.k8s import files as files_lib
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
  ``<job>-<index>.<service>`` in the namespace.
  """
  return {role: [f"{_name(options, role)}-{i}.{_name(options, role)}:"
                 f"{options.port}" for i in range(len(options.cluster[role]))]
          for role in options.roles}


def _name(options: RenderOptions, role: str) -> str:
  return f"{options.job_name}-{role}"


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
    # Ring all-reduce runs over the gRPC port, the one port the
    # NetworkPolicy admits; NCCL would open other ports between the pods.
    args.append("--all_reduce=ring")
  return ["python", "-m", f"trainers.{options.trainer}", *args,
          *options.trainer_args]


def _container(options: RenderOptions, role: str, command: list, *,
               name: str, port_name: str, mounts: list) -> dict:
  resources = {"requests": {"cpu": options.cpu, "memory": options.memory},
               "limits": {"memory": options.memory}}
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
  spec = {}
  if job_pod:
    # The pod's DNS name <job>-<index>.<service>: the address in the spec.
    spec["subdomain"] = _name(options, role)
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
  return {"metadata": {"labels": _labels(options, role)}, "spec": spec}


def _pod_failure_policy() -> dict:
  return {"rules": [
      # Preempted, evicted or drained: not the trainer's fault; replace the
      # pod without counting it against backoffLimit.
      {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
      # 1-127: the program failed (2 is bad input): a retry fails again.
      # 128 + N (killed by signal N, e.g. 137 OOM-killed) falls through to
      # backoffLimit: the pod is retried.
      {"action": "FailJob", "onExitCodes": {
          "containerName": CONTAINER, "operator": "In",
          "values": files_lib.FlowList(range(1, 128))}},
  ]}


def _job_objects(options: RenderOptions, role: str) -> list:
  name = _name(options, role)
  count = len(options.cluster[role])
  command = ["python", "-m", "tfdist.k8s.pod",
             f"--cluster_spec={CONFIG_DIR}/cluster.json",
             f"--task_type={role}", "--", *_trainer_command(options)]
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
  job = {
      "apiVersion": "batch/v1", "kind": "Job",
      "metadata": {"name": name, "labels": _labels(options, role)},
      "spec": {
          # Indexed: pod i gets JOB_COMPLETION_INDEX=i and the hostname
          # <job>-<i>; the Job is complete when every index succeeded once.
          "completionMode": "Indexed",
          "completions": count,
          "parallelism": count,
          "backoffLimit": options.backoff_limit,
          "activeDeadlineSeconds": options.active_deadline_seconds,
          "ttlSecondsAfterFinished": options.ttl_seconds,
          "podFailurePolicy": _pod_failure_policy(),
          "template": _pod_template(options, role, command,
                                    container_name=CONTAINER,
                                    port_name="grpc", job_pod=True),
      },
  }
  return [service, job]


def _tfjob(options: RenderOptions) -> dict:
  replicas = {}
  for role in options.roles:
    replicas[_TFJOB_REPLICA[role]] = {
        "replicas": len(options.cluster[role]),
        # The operator's ExitCode policy is our fault model: 1-127 are
        # permanent errors, 128-255 (killed by a signal) are retried.
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
              "backoffLimit": options.backoff_limit,
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
          # job's own pods may connect, and only to the gRPC port.
          "ingress": [{
              "from": [{"podSelector": {"matchLabels": {
                  "tfdist/job": options.job_name}}}],
              "ports": [{"protocol": "TCP", "port": options.port}],
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
  if options.kind == "job":
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
  else:
    documents["10-tfjob.yaml"] = [_tfjob(options)]
  header = files_lib.HEADER + f"# {command}\n"
  return {name: header + files_lib.dump_yaml(docs)
          for name, docs in documents.items()}
