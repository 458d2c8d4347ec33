"""A manifest directory's pods, and the local cluster that stands in for them.

Reads the objects ``kubectl apply -f DIR`` would create (a JobSet as the
Jobs and headless Service its controller makes) and checks what only
a cluster would otherwise prove: every address of the cluster spec (a
ConfigMap) is the DNS name of a pod of an Indexed Job behind a headless
Service that selects it on a port both expose, and the NetworkPolicies admit
every other pod to it. Each address becomes a free loopback port.

Owns Pod, Plan and those checks. Imports tfdist.cluster.specs and tfdist.errors
only; tfdist.k8s.exercise runs the plan.
"""

from __future__ import annotations

import dataclasses
import json
import os

from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError

_EXTENSIONS = (".yaml", ".yml", ".json")  # what kubectl apply -f DIR reads
# The labels the JobSet controller puts on its Jobs and pods.
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"


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

  @property
  def job_name(self) -> str:
    return self.job["metadata"]["name"]


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


def _with_labels(template: dict, labels: dict) -> dict:
  metadata = dict(template.get("metadata", {}))
  metadata["labels"] = {**metadata.get("labels", {}), **labels}
  return {**template, "metadata": metadata}


def expand_jobsets(objects: list) -> list:
  """``objects`` with each JobSet followed by what its controller creates.

  Replica ``j`` of replicated job ``r`` is the Job ``<jobset>-<r>-<j>``;
  with ``network.enableDNSHostnames`` (the default) its pods get the
  JobSet's subdomain (default its name), a headless Service of that name.
  """
  expanded = []
  for o in objects:
    expanded.append(o)
    if o.get("kind") != "JobSet":
      continue
    name, spec = o["metadata"]["name"], o["spec"]
    network = spec.get("network", {})
    subdomain = network.get("subdomain") or name
    ports = []
    for replicated in spec["replicatedJobs"]:
      labels = {JOBSET_LABEL: name,
                REPLICATED_JOB_LABEL: replicated["name"]}
      template = _with_labels(replicated["template"], labels)
      job_spec = dict(template["spec"])
      pod = _with_labels(job_spec["template"], labels)
      if network.get("enableDNSHostnames", True):
        pod["spec"] = dict(pod["spec"], subdomain=subdomain)
      job_spec["template"] = pod
      ports += [p for c in pod["spec"]["containers"]
                for p in c.get("ports", []) if p not in ports]
      for j in range(replicated.get("replicas", 1)):
        expanded.append({"apiVersion": "batch/v1", "kind": "Job",
                         "metadata": {"name": f"{name}-{replicated['name']}-"
                                              f"{j}", "labels": labels},
                         "spec": job_spec})
    expanded.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": subdomain},
                     "spec": {"clusterIP": "None",
                              "selector": {JOBSET_LABEL: name},
                              "ports": [{"name": p.get("name"),
                                         "port": p["containerPort"]}
                                        for p in ports]}})
  return expanded


def by_kind(objects: list, kind: str) -> dict:
  return {o["metadata"]["name"]: o for o in objects if o.get("kind") == kind}


def job_pods(objects: list) -> list:
  """Every pod of every Job, checking the exercise can run it."""
  unsupported = sorted({o.get("kind") for o in objects} - {
      "Job", "JobSet", "Service", "ConfigMap", "PersistentVolumeClaim",
      "NetworkPolicy"})
  if unsupported:
    raise ConfigError(f"the exercise runs batch/v1 Jobs and JobSets; it "
                      f"cannot run "
                      f"{', '.join(map(str, unsupported))} (a TFJob's "
                      "TF_CONFIG comes from the training operator)")
  pods = []
  for name, job in by_kind(objects, "Job").items():
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
      # A ports entry without a port admits every port (of its protocol).
      ports = [names.get(p.get("port"), p.get("port"))
               for p in rule.get("ports", [])]
      sources = rule.get("from", [])
      return ((not ports or port in ports or None in ports) and
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
  services = by_kind(objects, "Service")
  policies = by_kind(objects, "NetworkPolicy")
  result = Plan()
  for map_name, config_map in by_kind(objects, "ConfigMap").items():
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
