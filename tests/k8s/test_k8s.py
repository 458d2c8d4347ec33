"""Kubernetes manifests: rendered, not drifted, valid, secured, exercised.

The exercise tests run every pod of k8s/, k8s/ps/ and k8s/jobset-kueue/ as
a local process with the pod's own command and environment, restarted or
failed by the Job and JobSet controllers' rules, training on the real MNIST
files. Custom resources (the renders' and the Kueue objects of k8s/kueue/)
are validated against the real CRDs in third_party/crds, their CEL rules
included.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import (MNIST_DIR, REPO, SPECS, child_env, json_lines, run,
                      wait_for)
from tfdist.k8s import controller
from tfdist.k8s import crd
from tfdist.k8s import files as k8s_files
from tfdist.k8s import kueue
from tfdist.k8s import render as k8s_render

K8S = os.path.join(REPO, "k8s")
# Every directory of rendered manifests (k8s/serving is written by hand by
# tfdist.serving.export's owner and tested there).
RENDERED = {"": "mnist", "ps": "mnist-ps", "inception": "inception",
            "tfjob": "mnist-tfjob", "jobset": "mnist-jobset",
            "jobset-kueue": "mnist-kueue", "sparse-ps": "sparse-ps"}
# The directories rendered for multiworker on GPUs: NCCL all-reduce.
NCCL = {"", "inception", "tfjob", "jobset", "jobset-kueue"}
# The Kueue objects a cluster admin applies (written by hand), and the
# render that is admitted through them.
KUEUE, QUEUED = os.path.join(K8S, "kueue"), "jobset-kueue"
# The directories of ps jobs; the sparse one is rendered for CPU pods, each
# ps task with the memory of its share of the sharded table.
PS = {"ps", "sparse-ps"}
CPU_ONLY = {"sparse-ps"}
PS_MEMORY = {"sparse-ps": "3Gi"}
# The real CustomResourceDefinitions, in the repository (see its README).
CRD_DIR = os.path.join(REPO, "third_party", "crds")
CRDS = {"TFJob": "kubeflow.org_tfjobs-v1.9.yaml",
        "JobSet": "jobset.x-k8s.io_jobsets-v0.12.0.yaml",
        **{kind: f"kueue.x-k8s.io_{plural}-v0.19.2.yaml" for kind, plural in [
            ("Topology", "topologies"), ("ResourceFlavor", "resourceflavors"),
            ("ClusterQueue", "clusterqueues"),
            ("LocalQueue", "localqueues")]}}
# The exercise trains 300 steps with a checkpoint every 50 instead of the
# manifests' five epochs, on the real MNIST files.
QUICK = [f"--mnist_dir={MNIST_DIR}", "--epochs=2", "--steps_per_epoch=150",
         "--checkpoint_every_steps=50"]
TARGET = 300
# Asynchronous ps training with a worker killed and replaced: its accuracy
# depends on how the workers interleave (0.8997 once at 300 steps with both
# cores busy), so its exercise trains 400 steps.
PS_QUICK = [*QUICK[:2], "--steps_per_epoch=200", *QUICK[3:]]
PS_TARGET = 400


def _dir(name):
  return os.path.join(K8S, name) if name else K8S


def _yaml_files(directory):
  return sorted(f for f in os.listdir(directory) if f.endswith(".yaml"))


def _objects(directory):
  objects = []
  for name in _yaml_files(directory):
    with open(os.path.join(directory, name)) as f:
      objects += [d for d in yaml.safe_load_all(f) if d]
  return objects


def _job_specs(objects):
  """(role, Job spec) of every Job and JobSet replicated job."""
  for o in objects:
    if o["kind"] == "Job":
      yield o["metadata"]["labels"]["tfdist/role"], o["spec"]
    elif o["kind"] == "JobSet":
      for replicated in o["spec"]["replicatedJobs"]:
        yield replicated["name"], replicated["template"]["spec"]


def _pod_templates(objects):
  """(role, pod template) of every Job, JobSet and TFJob replica."""
  for role, spec in _job_specs(objects):
    yield role, spec["template"]
  for o in objects:
    if o["kind"] == "TFJob":
      for replica in o["spec"]["tfReplicaSpecs"].values():
        yield (replica["template"]["metadata"]["labels"]["tfdist/role"],
               replica["template"])


def _render_command(directory):
  """The render command written at the top of a directory's files."""
  with open(os.path.join(directory, _yaml_files(directory)[0])) as f:
    header = f.read(4000)
  assert header.startswith(k8s_files.HEADER), f"{directory}: no render header"
  words = shlex.split(header[len(k8s_files.HEADER):].splitlines()[0].lstrip("# "))
  assert words[:4] == ["python", "-m", "tfdist.k8s", "render"]
  return words[4:]


def _validate(paths):
  result = run(["kubernetes-validate", "--strict", *paths], timeout=120)
  assert result.returncode == 0, result.stdout + result.stderr
  return result.stdout + result.stderr


def _render(tmp_path, spec, *flags, name="job"):
  spec_path = tmp_path / f"{name}.json"
  spec_path.write_text(json.dumps(spec))
  out = tmp_path / name
  status = k8s_render.main([f"--cluster_spec={spec_path}",
                     f"--out_dir={out}", *flags])
  assert status == 0
  return out


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_committed_manifests_equal_a_fresh_render(name, tmp_path, monkeypatch):
  directory = _dir(name)
  monkeypatch.chdir(REPO)  # the header's spec path is relative to the repo
  # --out_dir before the command's "--", after which come trainer flags.
  assert k8s_render.main([f"--out_dir={tmp_path}",
                   *_render_command(directory)]) == 0
  assert _yaml_files(tmp_path) == _yaml_files(directory)
  for file_name in _yaml_files(directory):
    fresh = (tmp_path / file_name).read_text()
    with open(os.path.join(directory, file_name)) as f:
      assert f.read() == fresh, f"{directory}/{file_name} drifted: re-render"


def test_committed_manifests_pass_strict_schema_validation():
  paths = [os.path.join(_dir(n), f) for n in RENDERED
           for f in _yaml_files(_dir(n))]
  output = _validate(paths)
  objects = [o for n in RENDERED for o in _objects(_dir(n))]
  custom = [o["kind"] for o in objects if o["kind"] in CRDS]
  assert output.count(" passed for resource ") == len(objects) - len(custom)
  # The objects without a built-in schema are the custom resources, which
  # the next tests validate against their CRDs.
  unknown = [line for line in output.splitlines() if "Couldn't find" in line]
  assert len(unknown) == len(custom) == 3, output
  assert {kind for kind in CRDS if any(kind in l for l in unknown)} == {
      "TFJob", "JobSet"}, output


def _crd_path(kind):
  """The CRD file of ``kind``; a missing one fails the test."""
  path = os.path.join(CRD_DIR, CRDS[kind])
  if not os.path.isfile(path):
    pytest.fail(f"the {kind} CRD is expected at {path} (third_party/crds)")
  return path


def _validate_custom_resources(objects):
  """Validates every TFJob and JobSet against its real CRD, and their pod
  templates against core/v1; returns how many were validated."""
  import kubernetes_validate  # pylint: disable=g-import-not-at-top
  validated = 0
  for o in (o for o in objects if o["kind"] in CRDS):
    crd.validate(o, _crd_path(o["kind"]))
    validated += 1
  for _, template in _pod_templates(objects):
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "PodTemplate",
         "metadata": {"name": "t"}, "template": template},
        kubernetes_validate.latest_version(), strict=True)
  return validated


@pytest.mark.parametrize("name", ["tfjob", "jobset", QUEUED])
def test_custom_resources_validate_against_the_real_crds(name):
  objects = _objects(_dir(name))
  assert _validate_custom_resources(objects) == 1
  for role, template in _pod_templates(objects):
    container = template["spec"]["containers"][0]
    if name == "tfjob":
      # The operator finds the container and port by these names.
      assert container["name"] == "tensorflow", role
      assert container["ports"][0]["name"] == "tfjob-port", role
      assert container["command"][:3] == ["python", "-m", "trainers.mnist"]


@pytest.mark.parametrize("kind, path, field", [
    ("TFJob", ["spec", "runPolicy"], "backofLimit"),
    ("TFJob", ["spec", "tfReplicaSpecs", "Worker"], "restartPolicyy"),
    ("JobSet", ["spec", "failurePolicy"], "maxRestart"),
    ("JobSet", ["spec", "network"], "enableDnsHostnames"),
    ("JobSet", ["spec", "replicatedJobs", 0, "template", "spec"],
     "backoffLimitt"),
    ("ClusterQueue", ["spec", "resourceGroups", 0, "flavors", 0, "resources",
                      0], "nominalQuotaa"),
    ("ResourceFlavor", ["spec"], "topologName"),
    ("LocalQueue", ["spec"], "clusterQueu"),
])
def test_crd_validation_rejects_a_misspelt_field(kind, path, field):
  import jsonschema  # pylint: disable=g-import-not-at-top
  resource = _committed(kind)
  place = resource
  for key in path:
    place = place[key]
  place[field] = 1
  crd_path = _crd_path(kind)
  with pytest.raises(jsonschema.ValidationError, match=field):
    crd.validate(resource, crd_path)


def _committed(kind):
  """The committed object of a custom ``kind``: a render's, or k8s/kueue's."""
  directory = _dir(kind.lower()) if kind in ("TFJob", "JobSet") else KUEUE
  (resource,) = [o for o in _objects(directory) if o["kind"] == kind]
  return resource


def _break_jobset_order(jobset):
  jobset["spec"]["startupPolicy"] = {"startupPolicyOrder": "InOrder"}
  jobset["spec"]["replicatedJobs"][0]["dependsOn"] = [
      {"name": "other", "status": "Ready"}]


@pytest.mark.parametrize("kind, change, message", [
    ("Topology", lambda o: o["spec"]["levels"].reverse(),
     "the kubernetes.io/hostname label can only be used at the lowest level"),
    ("ResourceFlavor", lambda o: o["spec"].pop("nodeLabels"),
     "self.nodeLabels.size() >= 1"),
    ("ClusterQueue", lambda o: o["spec"]["resourceGroups"][0]["flavors"][0][
        "resources"].pop(), "flavors must have the same number of resources"),
    ("JobSet", _break_jobset_order,
     "StartupPolicy and DependsOn APIs are mutually exclusive"),
])
def test_crd_validation_applies_the_crds_cel_rules(kind, change, message):
  """Rules the API server evaluates on create (x-kubernetes-validations),
  which no JSON schema can say: each broken, each rejected."""
  import jsonschema  # pylint: disable=g-import-not-at-top
  resource = _committed(kind)
  crd.validate(resource, _crd_path(kind))  # as committed: every rule holds
  change(resource)
  with pytest.raises(jsonschema.ValidationError, match=re.escape(message)):
    crd.validate(resource, _crd_path(kind))


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_every_pod_is_secured_and_behind_the_network_policy(name):
  objects = _objects(_dir(name))
  (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
  selector = policy["spec"]["podSelector"]["matchLabels"]
  (rule,) = policy["spec"]["ingress"]
  assert policy["spec"]["policyTypes"] == ["Ingress"]
  assert rule["from"] == [{"podSelector": {"matchLabels": selector}}]
  port = 2222
  # Only the gRPC port, but any TCP port between the pods of a job whose
  # workers all-reduce with NCCL (it picks its ports at run time).
  assert rule["ports"] == ([{"protocol": "TCP"}] if name in NCCL else
                           [{"protocol": "TCP", "port": port}])
  roles = []
  for role, template in _pod_templates(objects):
    roles.append(role)
    nccl = "--all_reduce=nccl" in template["spec"]["containers"][0]["command"]
    assert nccl == (name in NCCL and role in ("worker", "chief")), role
    labels, spec = template["metadata"]["labels"], template["spec"]
    assert all(labels.get(k) == v for k, v in selector.items()), role
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"}
    (container,) = spec["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert [p["containerPort"] for p in container["ports"]] == [port]
    # A writable /tmp, since the root filesystem is read-only.
    tmp = [m["name"] for m in container["volumeMounts"]
           if m["mountPath"] == "/tmp"]
    assert [v for v in spec["volumes"] if v["name"] in tmp] == [
        {"name": "tmp", "emptyDir": {}}]
    assert "/model" in [m["mountPath"] for m in container["volumeMounts"]]
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    gpus = resources["limits"].get("nvidia.com/gpu", 0)
    trains = role == "worker" or (role == "chief" and name not in PS)
    assert gpus == (1 if trains and name not in CPU_ONLY else 0), role
    memory = PS_MEMORY.get(name, "8Gi") if role == "ps" else "8Gi"
    assert resources["requests"]["memory"] == memory, role
    assert resources["limits"]["memory"] == memory, role
    if gpus:
      assert {"key": "nvidia.com/gpu", "operator": "Exists",
              "effect": "NoSchedule"} in spec["tolerations"]
      assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    else:
      assert "tolerations" not in spec and "nodeSelector" not in spec
  assert sorted(roles) == (["chief", "ps", "worker"] if name in PS
                           else ["worker"])
  for service in (o for o in objects if o["kind"] == "Service"):
    assert service["spec"]["clusterIP"] == "None"  # headless, never exposed
    assert "type" not in service["spec"]


@pytest.mark.parametrize("name", sorted(set(RENDERED) - {"tfjob"}))
def test_jobs_fail_on_program_errors_and_retry_signals(name):
  objects = _objects(_dir(name))
  (jobset,) = [o["spec"] for o in objects if o["kind"] == "JobSet"] or [None]
  multiworker = "--strategy=multiworker" in json.dumps(objects)
  for role, spec in _job_specs(objects):
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] >= 1
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    # A new pod only once the one it replaces has terminated: never two
    # pods of one task at once.
    assert spec["podReplacementPolicy"] == "Failed", role
    assert controller.replacement_policy(role, spec) == "Failed"
    assert spec["activeDeadlineSeconds"] > 0
    rules = spec["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"]
    (exit_codes,) = [r["onExitCodes"] for r in fail]
    assert exit_codes["operator"] == "In"
    assert exit_codes["values"] == list(range(1, 128))
    # A preempted or evicted pod is replaced without being counted.
    assert {"action": "Ignore", "onPodConditions": [
        {"type": "DisruptionTarget"}]} in rules
    # The rules as the exercise applies them: 1-127 fail the Job; a signal
    # (137 OOM-killed, 143 SIGTERM) and 200 (a lost peer) are retried.
    container = spec["template"]["spec"]["containers"][0]["name"]
    for status, action in [(1, "FailJob"), (2, "FailJob"), (127, "FailJob"),
                           (130, "Count"), (137, "Count"), (143, "Count"),
                           (200, "Count")]:
      assert controller.pod_failure_action(spec, container, status) == action
    if jobset is None:
      assert spec["ttlSecondsAfterFinished"] > 0
      # Room for 3 gang restarts: each fails every pod of the Job once.
      assert spec["backoffLimit"] == 3 * spec["completions"], role
    elif multiworker:
      # The first lost pod fails its Job: the JobSet restarts every pod.
      assert spec["backoffLimit"] == 0, role
  if jobset is not None:
    assert jobset["failurePolicy"] == {"maxRestarts": 3, "rules": [
        {"name": "ProgramError", "action": "FailJobSet",
         "onJobFailureReasons": ["PodFailurePolicy"]},
        {"name": "LostPod", "action": "RestartJobSet"}]}
    assert jobset["successPolicy"] == {"operator": "All",
                                       "targetReplicatedJobs": ["worker"]}
    assert jobset["network"]["enableDNSHostnames"] is True


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_trainer_commands_parse(name):
  """The trainer flags in the manifests exist (no TensorFlow needed)."""
  commands = []
  for _, template in _pod_templates(_objects(_dir(name))):
    command = template["spec"]["containers"][0]["command"]
    if "--" in command:  # tfdist.k8s.pod ... -- TRAINER
      command = command[command.index("--") + 1:]
    commands.append(command)
  for command in {tuple(c) for c in commands}:
    assert command[:2] == ("python", "-m")
    # tfdist.main defines tfdist's flags, a trainer its own (define_flags)
    # when it runs.
    code = ("import sys; from absl import flags; from tfdist import app; "
            f"app.define_flags(); import {command[2]} as trainer; "
            "getattr(trainer, 'define_flags', lambda: None)(); "
            "flags.FLAGS(sys.argv); print('parsed')")
    result = run([sys.executable, "-c", code, *command[3:]], timeout=60)
    assert result.returncode == 0 and "parsed" in result.stdout, result.stderr


@pytest.mark.parametrize("workers", [1, 2, 8, 64])
def test_worker_counts_render_valid_manifests(workers, tmp_path):
  spec = {"worker": [f"127.0.0.1:{20000 + i}" for i in range(workers)]}
  multi = _render(tmp_path, spec, "--job_name=big", "--image=img:1",
                  name="multiworker")
  ps_spec = dict(spec, chief=["127.0.0.1:19998"], ps=["127.0.0.1:19999"])
  ps = _render(tmp_path, ps_spec, "--job_name=big-ps", "--image=img:1",
               "--strategy=ps", "--gpus_per_worker=8", name="ps")
  tfjob = _render(tmp_path, spec, "--job_name=big-tf", "--image=img:1",
                  "--kind=tfjob", name="tfjob")
  jobset = _render(tmp_path, ps_spec, "--job_name=big-js", "--image=img:1",
                   "--kind=jobset", "--strategy=ps", name="jobset")
  _validate([str(d / f) for d in (multi, ps, tfjob, jobset)
             for f in _yaml_files(d)])
  assert _validate_custom_resources(_objects(tfjob) + _objects(jobset)) == 2
  (js,) = [o for o in _objects(jobset) if o["kind"] == "JobSet"]
  # ps first, started in order; the chief's completion ends the set.
  assert [r["name"] for r in js["spec"]["replicatedJobs"]] == [
      "ps", "worker", "chief"]
  assert js["spec"]["startupPolicy"] == {"startupPolicyOrder": "InOrder"}
  assert js["spec"]["successPolicy"]["targetReplicatedJobs"] == ["chief"]
  (config,) = [o for o in _objects(jobset) if o["kind"] == "ConfigMap"]
  assert json.loads(config["data"]["cluster.json"])["worker"] == [
      f"big-js-worker-0-{i}.big-js:2222" for i in range(workers)]
  (config,) = [o for o in _objects(multi) if o["kind"] == "ConfigMap"]
  addresses = json.loads(config["data"]["cluster.json"])["worker"]
  assert addresses == [f"big-worker-{i}.big-worker:2222"
                       for i in range(workers)]
  jobs = {o["metadata"]["name"]: o for o in _objects(ps) if o["kind"] == "Job"}
  assert jobs["big-ps-worker"]["spec"]["completions"] == workers
  assert [jobs[f"big-ps-{r}"]["spec"]["completions"]
          for r in ("chief", "ps")] == [1, 1]
  worker = jobs["big-ps-worker"]["spec"]["template"]["spec"]["containers"][0]
  assert worker["resources"]["limits"]["nvidia.com/gpu"] == 8
  (tf_job,) = [o for o in _objects(tfjob) if o["kind"] == "TFJob"]
  assert tf_job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == workers


@pytest.mark.parametrize("strategy, flags", [
    ("multiworker", ["--topology=topology.kubernetes.io/zone"]),
    ("ps", ["--prefer_topology=kubernetes.io/hostname",
            "--priority_class=training", "--workload_priority_class=urgent"]),
])
def test_queued_jobset_renders_validate_and_start_suspended(strategy, flags,
                                                            tmp_path):
  """--queue: labelled for Kueue, suspended until admitted, each role's pod
  template annotated with the topology; strictly valid against the JobSet
  CRD (its CEL rules too) and core/v1, every Job with the replacement
  policy."""
  spec = json.load(open(os.path.join(SPECS, "chief_two_workers_ps.json"
                                     if strategy == "ps" else
                                     "two_workers.json")))
  out = _render(tmp_path, spec, "--job_name=q", "--image=img:1",
                "--kind=jobset", f"--strategy={strategy}", "--queue=gpu-queue",
                *flags)
  objects = _objects(out)
  assert _validate_custom_resources(objects) == 1
  (jobset,) = [o for o in objects if o["kind"] == "JobSet"]
  labels = jobset["metadata"]["labels"]
  assert labels[kueue.QUEUE_LABEL] == "gpu-queue"
  assert jobset["spec"]["suspend"] is True
  # Kueue's priority only when asked for; the pods' priority likewise.
  workload_priority = "--workload_priority_class=urgent" in flags
  assert labels.get(kueue.PRIORITY_LABEL) == (
      "urgent" if workload_priority else None)
  annotation = ({kueue.REQUIRED_TOPOLOGY: "topology.kubernetes.io/zone"}
                if strategy == "multiworker" else
                {kueue.PREFERRED_TOPOLOGY: "kubernetes.io/hostname"})
  roles = []
  for role, job_spec in _job_specs(objects):
    roles.append(role)
    assert job_spec["podReplacementPolicy"] == "Failed", role
    template = job_spec["template"]
    assert template["metadata"]["annotations"] == annotation, role
    assert template["spec"].get("priorityClassName") == (
        "training" if "--priority_class=training" in flags else None), role
  assert sorted(roles) == sorted(spec)
  # The render names the flags it was given (and no other Kueue flag).
  header = (out / "10-jobset.yaml").read_text().splitlines()[1]
  assert "--queue=gpu-queue" in header and all(f in header for f in flags)
  assert header.count("topology=") == 1


@pytest.mark.parametrize("kind", ["job", "jobset"])
@pytest.mark.parametrize("spec, needed", [
    ({"worker": ["w:1", "w:2", "w:3"]}, 2),
    ({"chief": ["c:1"], "worker": ["w:1", "w:2"]}, 1)])
def test_elastic_renders_finish_on_min_workers(kind, spec, needed, tmp_path):
  """--min_workers=2 after --: strictly valid; a lost pod is retried alone;
  the workers' Job is complete with the members' pods (2 of 3 workers, or
  1 worker beside a chief), the JobSet with the chief's Job or theirs."""
  out = _render(tmp_path, spec, "--job_name=el", "--image=img:1",
                f"--kind={kind}", "--gpus_per_worker=0", "--",
                "--min_workers=2")
  _validate([str(out / f) for f in _yaml_files(out)])
  objects = _objects(out)
  assert _validate_custom_resources(objects) == (kind == "jobset")
  specs = dict(_job_specs(objects))
  worker = specs["worker"]
  assert worker["successPolicy"] == {"rules": [{"succeededCount": needed}]}
  assert worker["backoffLimit"] == 3 * len(spec["worker"])
  assert "successPolicy" not in specs.get("chief", {})
  # The controller's reading (the exercise's): the members' pods complete
  # it, one fewer does not.
  job = controller.JobState("el-worker", worker, "trainer")
  job.succeeded = set(range(needed - 1))
  assert not job.complete
  job.succeeded.add(len(spec["worker"]) - 1)
  assert job.complete
  if kind == "jobset":
    (jobset,) = [o for o in objects if o["kind"] == "JobSet"]
    assert jobset["spec"]["successPolicy"] == {
        "operator": "Any", "targetReplicatedJobs": [
            r for r in ("worker", "chief") if r in spec]}
    state = controller.JobSetState("el", jobset["spec"])
    assert state.succeeded({"worker"}) and not state.succeeded(set())


def test_render_is_deterministic_and_removes_stale_files(tmp_path):
  ps_spec = os.path.join(SPECS, "chief_two_workers_ps.json")
  out = tmp_path / "out"
  (out / "serving").mkdir(parents=True)
  (out / "mine.yaml").write_text("kind: ConfigMap\n")
  flags = ["--job_name=j", "--image=img:1", f"--out_dir={out}"]
  assert k8s_render.main([*flags, f"--cluster_spec={ps_spec}", "--strategy=ps"]) == 0
  first = {f: (out / f).read_text() for f in _yaml_files(out)}
  assert k8s_render.main([*flags, f"--cluster_spec={ps_spec}", "--strategy=ps"]) == 0
  assert {f: (out / f).read_text() for f in _yaml_files(out)} == first
  # From ps to multiworker: the ps and chief files of the earlier render go;
  # files it did not write stay.
  two = os.path.join(SPECS, "two_workers.json")
  assert k8s_render.main([*flags, f"--cluster_spec={two}"]) == 0
  assert _yaml_files(out) == ["00-cluster-configmap.yaml",
                              "01-networkpolicy.yaml", "02-model-pvc.yaml",
                              "10-worker.yaml", "mine.yaml"]
  assert (out / "serving").is_dir()


@pytest.mark.parametrize("spec, flags, message", [
    ("not json", [], "not valid JSON"),
    ({"worker": []}, [], "non-empty list"),
    ({"chief": ["127.0.0.1:1"]}, [], "no worker task"),
    ({"worker": ["127.0.0.1:1"]}, ["--job_name=MNIST_1"], "DNS-1035"),
    ({"worker": ["127.0.0.1:1"]}, ["--job_name=" + "a" * 60], "too long"),
    ({"worker": ["127.0.0.1:1"]}, ["--gpus_per_worker=-1"], "0 or more"),
    ({"worker": ["127.0.0.1:1"]}, ["--gpus_per_worker=x"], "invalid int"),
    ({"worker": ["127.0.0.1:1"]}, ["--strategy=ps"], "needs a chief"),
    ({"worker": ["127.0.0.1:1"]}, ["--trainer=resnet"], "no module"),
    ({"worker": ["127.0.0.1:1"]}, ["--memory=8 GB"], "quantity"),
    ({"worker": ["127.0.0.1:1"]}, ["--gpus_per_worker=0",
                                   "--all_reduce=nccl"], "needs GPUs"),
    ({"worker": ["127.0.0.1:1"]}, ["--all_reduce=mpi"], "use one of"),
    ({"worker": ["127.0.0.1:1"]}, ["--kind=jobset", "--job_name=" + "a" * 53],
     "too long"),
    ({"worker": ["127.0.0.1:1"]}, ["--queue=q"],
     "--queue with --kind=job: Kueue would admit each role's Job on its own"),
    ({"worker": ["127.0.0.1:1"]}, ["--kind=tfjob", "--queue=q"],
     "--queue with --kind=tfjob: Kueue would not admit it"),
    ({"worker": ["127.0.0.1:1"]}, ["--kind=jobset", "--queue=Gpu_Queue"],
     "--queue='Gpu_Queue' is not a Kubernetes object name"),
    ({"worker": ["127.0.0.1:1"]}, ["--kind=jobset", "--queue=q",
                                   "--topology=kubernetes.io/hostname",
                                   "--prefer_topology=kubernetes.io/hostname"],
     "--topology and --prefer_topology both set"),
    ({"worker": ["127.0.0.1:1"]}, ["--kind=jobset",
                                   "--topology=kubernetes.io/hostname"],
     "--topology needs --queue"),
    ({"worker": ["127.0.0.1:1"]}, ["--workload_priority_class=high"],
     "--workload_priority_class needs --queue"),
    ({"worker": ["127.0.0.1:1"]}, ["--kind=jobset", "--queue=q",
                                   "--prefer_topology=rack level"],
     "--prefer_topology='rack level' is not a node label key"),
    ({"worker": ["127.0.0.1:1"]}, ["--priority_class=High"],
     "--priority_class='High' is not a Kubernetes object name"),
    ({"worker": ["127.0.0.1:1"], "chief": ["127.0.0.1:2"],
      "ps": ["127.0.0.1:3"]}, ["--strategy=ps", "--", "--min_workers=1"],
     "--min_workers applies to --strategy=multiworker"),
    ({"worker": ["127.0.0.1:1"]}, ["--", "--min_workers=2"],
     "--min_workers=2 after --: the cluster spec has 1 training tasks"),
])
def test_bad_input_is_one_line_and_writes_nothing(spec, flags, message,
                                                  tmp_path):
  spec_path = tmp_path / "spec.json"
  spec_path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
  out = tmp_path / "out"
  result = run([sys.executable, "-m", "tfdist.k8s", "render",
                f"--cluster_spec={spec_path}", "--job_name=mnist",
                "--image=img:1", f"--out_dir={out}", *flags], timeout=60)
  assert result.returncode == 2
  assert result.stdout == ""
  lines = result.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  assert message in lines[0]
  assert not out.exists()


def test_pod_entry_needs_its_completion_index():
  spec = os.path.join(SPECS, "two_workers.json")
  base = [sys.executable, "-m", "tfdist.k8s.pod", f"--cluster_spec={spec}",
          "--task_type=worker", "--", sys.executable, "-c", "pass"]
  for index, message in [(None, "JOB_COMPLETION_INDEX is not set"),
                         ("x", "is not a task index"),
                         ("2", "out of range")]:
    env = child_env()
    env.pop("JOB_COMPLETION_INDEX", None)
    if index is not None:
      env["JOB_COMPLETION_INDEX"] = index
    result = run(base, timeout=30, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_pod_entry_passes_sigterm_on_and_reports_128_plus_signal(tmp_path):
  """As PID 1 of a pod it must forward the kubelet's SIGTERM; a trainer
  killed by it ends the pod with 143, which the Job retries."""
  ready = tmp_path / "ready"
  out = tmp_path / "tf_config"
  child = ("import os, signal, sys; open(sys.argv[2], 'w').write("
           "os.environ['TF_CONFIG']); open(sys.argv[1], 'w').close(); "
           "signal.pause()")
  process = subprocess.Popen(
      [sys.executable, "-m", "tfdist.k8s.pod",
       f"--cluster_spec={os.path.join(SPECS, 'two_workers.json')}",
       "--task_type=worker", "--", sys.executable, "-c", child, str(ready),
       str(out)], cwd=REPO, env=child_env(JOB_COMPLETION_INDEX="1"),
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      start_new_session=True)
  try:
    # The child's file, not a sleep, orders this; tfdist.k8s.pod must not exit.
    wait_for(lambda: ready.exists() or process.poll() is not None,
             "the trainer child to start", timeout=30)
    assert process.poll() is None, "tfdist.k8s.pod exited early"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
  finally:
    try:
      os.killpg(process.pid, signal.SIGKILL)  # whatever is left of it
    except ProcessLookupError:
      pass
  assert json.loads(out.read_text()) == {
      "cluster": {"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]},
      "task": {"type": "worker", "index": 1}}


def _exercise(directory, model_dir, *extra, timeout=240):
  """Runs the exercise of a manifest directory, its model claim mapped to
  ``model_dir``; ``extra`` are exercise flags (then -- and trainer flags)."""
  return run([sys.executable, "-m", "tfdist.k8s", "exercise", str(directory),
              f"--pvc={_model_claim(directory)}={model_dir}", *extra],
             timeout=timeout)


def _model_claim(directory):
  (claim,) = [o["metadata"]["name"] for o in _objects(directory)
              if o["kind"] == "PersistentVolumeClaim"]
  return claim


def _restarts(stdout):
  return [line for line in stdout.splitlines()
          if line.startswith("[exercise] ") and (
              "restarting it" in line or "RestartJobSet" in line)]


def _resumed_at(stdout):
  """The step training resumed at after the kill, as the exercise saw it."""
  (line,) = [l for l in stdout.splitlines()
             if l.startswith("[exercise] training resumed at step ")]
  return int(line.split()[5]), line


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_exercise_of_k8s_recovers_a_killed_worker_by_gang_restart(
    mnist_dir, tmp_path):
  del mnist_dir
  result = _exercise(K8S, tmp_path, "--kill=mnist-worker-1@100steps", "--",
                     *QUICK)
  out = result.stdout
  assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
  assert ("[exercise] no GPU on this machine: --all_reduce=nccl runs as ring"
          in out)
  # worker-1 killed, then worker-0 lost its peer (200): both restarted by
  # the Job's rules, each a new pod, each counted once.
  assert _restarts(out) == [
      "[exercise] pod mnist-worker-1 failed with exit status 137 "
      "(podFailurePolicy of Job mnist-worker: Count, 1/6 of its "
      "backoffLimit); restarting it as a new pod",
      "[exercise] pod mnist-worker-0 failed with exit status 200 "
      "(podFailurePolicy of Job mnist-worker: Count, 2/6 of its "
      "backoffLimit); restarting it as a new pod"]
  assert "[worker-0] error: lost worker-1 during training" in out
  step, line = _resumed_at(out)
  assert 100 <= step < TARGET, line
  results = {r["task"]: r for r in json_lines(out, "[worker-0] ") +
             json_lines(out, "[worker-1] ")}
  assert set(results) == {"worker-0", "worker-1"}
  for result_ in results.values():
    assert result_["start_step"] == step
    assert result_["global_step"] == TARGET  # exactly the target
  # One synchronous model: both pods end with bit-identical weights.
  assert results["worker-0"]["weights_digest"] == (
      results["worker-1"]["weights_digest"])
  assert results["worker-0"]["num_replicas"] == 2
  assert results["worker-0"]["test_accuracy"] >= 0.90
  # Only the chief (worker 0) wrote to the model volume.
  with open(tmp_path / "result.json") as f:
    assert json.load(f)["task"] == "worker-0"
  assert "[exercise] Job mnist-worker: 2/2 pods succeeded: Complete" in out
  print(f"\ngang restart: {line[len('[exercise] '):]}")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_exercise_of_k8s_ps_restarts_a_killed_worker_alone(mnist_dir,
                                                           tmp_path):
  del mnist_dir
  result = _exercise(_dir("ps"), tmp_path, "--kill=mnist-ps-worker-1@100steps",
                     "--", *PS_QUICK)
  out = result.stdout
  assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
  # Only the killed pod restarted; the chief, the ps and worker-0 went on.
  assert _restarts(out) == [
      "[exercise] pod mnist-ps-worker-1 failed with exit status 137 "
      "(podFailurePolicy of Job mnist-ps-worker: Count, 1/6 of its "
      "backoffLimit); restarting it as a new pod"]
  (chief,) = json_lines(out, "[chief-0] ")
  assert chief["strategy"] == "ps" and chief["test_accuracy"] >= 0.90
  assert chief["start_step"] == 0
  # ps training is at-least-once: a step the killed worker had applied
  # before dying may be scheduled again.
  assert PS_TARGET <= chief["global_step"] <= PS_TARGET + 2
  assert all("/job:ps/" in d for d in chief["variable_devices"])
  # The restarted worker rejoined and was told that training is over.
  assert "[worker-1] tfdist: worker-1: chief-0 finished training" in out
  with open(tmp_path / "result.json") as f:
    assert json.load(f)["task"] == "chief-0"
  for job, count in [("ps", 1), ("worker", 2), ("chief", 1)]:
    assert (f"[exercise] Job mnist-ps-{job}: {count}/{count} pods succeeded: "
            "Complete") in out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_exercise_of_k8s_jobset_restarts_the_set(mnist_dir, tmp_path):
  """The recommended form (k8s/jobset-kueue/): admitted in Kueue's stead
  (it starts suspended), trained, a pod killed, the set restarted."""
  del mnist_dir
  result = _exercise(_dir(QUEUED), tmp_path,
                     "--kill=mnist-kueue-worker-0-1@100steps", "--", *QUICK)
  out = result.stdout
  assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
  assert _admitted(out) == ["JobSet mnist-kueue"]
  # backoffLimit 0: the kill fails the Job, and the JobSet recreates every
  # pod at once (admitted once: a restart is no new admission here).
  assert _restarts(out) == [
      "[exercise] JobSet mnist-kueue: RestartJobSet (1/3 of maxRestarts): "
      "recreating every pod"]
  assert ("[exercise] Job mnist-kueue-worker-0 failed (BackoffLimitExceeded): "
          "pod mnist-kueue-worker-0-1 exited with status 137") in out
  step, line = _resumed_at(out)
  assert 100 <= step < TARGET, line
  (result_,) = json_lines(out, "[worker-0] ")
  assert result_["global_step"] == TARGET
  assert result_["test_accuracy"] >= 0.90
  assert "[exercise] JobSet mnist-kueue: successPolicy met: Completed" in out
  print(f"\nJobSet restart: {line[len('[exercise] '):]}")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_exercise_of_an_elastic_jobset_finishes_without_a_pod_gone_for_good(
    mnist_dir, tmp_path):
  """Rendered with --min_workers=2 for 3 workers: worker 2's pod killed at
  step 10 and its replacement never scheduled; the other two regroup with
  the global batch kept, and the JobSet completes on them."""
  del mnist_dir
  out = _render(tmp_path, {"worker": ["w:1", "w:2", "w:3"]}, "--job_name=el",
                "--image=img:1", "--kind=jobset", "--gpus_per_worker=0",
                "--", "--min_workers=2")
  result = _exercise(out, tmp_path, "--kill=el-worker-0-2@10steps:gone",
                     "--grace=20", "--", f"--mnist_dir={MNIST_DIR}",
                     "--epochs=1", "--steps_per_epoch=30",
                     "--checkpoint_every_steps=10", "--peer_timeout=10")
  out = result.stdout
  assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
  assert ("[exercise] pod el-worker-0-2 stays Pending: its node is gone"
          in out)
  assert not [l for l in out.splitlines() if "RestartJobSet" in l]
  assert "[exercise] Job el-worker-0: 2/3 pods succeeded: Complete" in out
  assert "[exercise] JobSet el: successPolicy met: Completed" in out
  (chief,) = json_lines(out, "[worker-0] ")
  assert chief["global_step"] == 30 and chief["global_batch_size"] == 300
  assert [(m["workers"], m["members"]) for m in chief["membership"]][1:] == [
      (2, ["worker-0", "worker-1"])]
  assert chief["membership"][0]["workers"] == 3


def _admitted(stdout):
  """What the exercise admitted in Kueue's stead (before any pod)."""
  lines = stdout.splitlines()
  first_pod = min([i for i, l in enumerate(lines) if " is pod " in l] or [0])
  return [l[len("[exercise] "):].split(" is suspended for Kueue's ")[0]
          for l in lines[:first_pod]
          if l.startswith("[exercise] ") and "is suspended for Kueue's "
          "LocalQueue gpu-queue: admitted here at once" in l]


@pytest.mark.parametrize("name", ["", QUEUED])
def test_exercise_fails_the_job_at_once_on_a_program_error(name, tmp_path):
  """Status 2 (a bad trainer flag) is permanent: FailJob, no new pod."""
  result = _exercise(_dir(name), tmp_path, "--", f"--mnist_dir={MNIST_DIR}",
                     "--optimizer=nope", timeout=120)
  out = result.stdout
  assert result.returncode == 2, out[-4000:] + result.stderr[-2000:]
  assert "error: --optimizer='nope'" in out
  assert _restarts(out) == []
  assert _admitted(out) == ([] if not name else ["JobSet mnist-kueue"])
  job = "mnist-worker" if not name else "mnist-kueue-worker-0"
  assert f"[exercise] Job {job} failed (PodFailurePolicy)" in out
  assert out.count(" is pod ") == 2  # each started once


@pytest.mark.parametrize("old, new, message", [
    (f"    {kueue.QUEUE_LABEL}: gpu-queue\n", "",
     "JobSet mnist-kueue is suspended and has no kueue.x-k8s.io/queue-name "
     "label: nothing would ever start it"),
    ("podReplacementPolicy: Failed", "podReplacementPolicy: TerminatingOrFailed",
     "Job mnist-kueue-worker-0: podReplacementPolicy TerminatingOrFailed "
     "beside a podFailurePolicy, which the API server rejects"),
])
def test_exercise_rejects_a_job_kubernetes_would_never_run(old, new, message,
                                                           tmp_path):
  copy = tmp_path / "queued"
  shutil.copytree(_dir(QUEUED), copy)
  path = copy / "10-jobset.yaml"
  assert path.read_text().count(old) == 1
  path.write_text(path.read_text().replace(old, new))
  result = _exercise(copy, tmp_path, timeout=60)
  assert result.returncode == 2, result.stdout + result.stderr
  assert result.stderr.startswith("error: ") and message in result.stderr
  assert len(result.stderr.splitlines()) == 1
  assert " is pod " not in result.stdout  # checked before any start


@pytest.mark.parametrize("file_name, old, new, message", [
    ("00-cluster-configmap.yaml", "mnist-worker-1.mnist-worker",
     "mnist-worker-1.mnist", "mnist-worker-1.mnist: no pod of these manifests"),
    ("10-worker.yaml", "  subdomain: mnist-worker", "  subdomain: other",
     "no pod of these manifests"),
    ("01-networkpolicy.yaml", "    - protocol: TCP\n",
     "    - protocol: TCP\n      port: 2223\n",
     "NetworkPolicy mnist blocks pod mnist-worker-1 from reaching pod "
     "mnist-worker-0 on port 2222"),
])
def test_exercise_rejects_manifests_whose_pods_could_not_talk(
    file_name, old, new, message, tmp_path):
  copy = tmp_path / "k8s"
  copy.mkdir()
  for name in _yaml_files(K8S):
    shutil.copy(os.path.join(K8S, name), copy)
  path = copy / file_name
  assert old in path.read_text()
  path.write_text(path.read_text().replace(old, new))
  result = _exercise(copy, tmp_path, timeout=60)
  assert result.returncode == 2
  assert message in result.stderr
  assert " is pod " not in result.stdout  # checked before any start


def test_exercise_fails_when_a_pod_would_linger(tmp_path):
  """A pod that does not end after the chief would keep its Job from ever
  completing: the exercise stops it and fails."""
  out = _render(tmp_path, {"worker": ["127.0.0.1:0"] * 2}, "--job_name=j",
                "--image=img:1", "--gpus_per_worker=0")
  path = out / "10-worker.yaml"
  service, job = yaml.safe_load_all(path.read_text())
  command = job["spec"]["template"]["spec"]["containers"][0]["command"]
  # Pod 1 waits forever, as a ps task would without its chief's signal.
  command[command.index("--") + 1:] = [
      "python", "-c", "import os, signal; "
      "os.environ['JOB_COMPLETION_INDEX'] == '0' or signal.pause()"]
  path.write_text(k8s_files.dump_yaml([service, job]))
  result = run([sys.executable, "-m", "tfdist.k8s", "exercise", str(out),
                "--grace=1"], timeout=60)
  assert result.returncode == 1, result.stdout + result.stderr
  assert "pods j-worker-1 did not end by themselves" in result.stdout


def test_exercise_needs_the_data_claim_mapped():
  result = run([sys.executable, "-m", "tfdist.k8s", "exercise",
                _dir("inception")], timeout=60)
  assert result.returncode == 2
  assert "--pvc=mnist-data=DIR" in result.stderr
  assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("kill, message", [
    ("mnist-worker-1", "write POD@SECONDS or POD@NUMBERsteps"),
    ("mnist-worker-1@soon", "write POD@SECONDS or POD@NUMBERsteps"),
    ("mnist-worker-1@40steps:never", "then :gone if its replacement "
                                     "never schedules"),
    ("mnist-worker-7@5", "--kill=mnist-worker-7@...: no such pod; the pods "
                         "are mnist-worker-0, mnist-worker-1"),
])
def test_exercise_rejects_a_bad_kill_in_one_line(kill, message, tmp_path):
  result = _exercise(K8S, tmp_path, f"--kill={kill}", timeout=60)
  assert result.returncode == 2
  assert result.stderr.startswith("error: ") and message in result.stderr
  assert len(result.stderr.splitlines()) == 1
  assert " is pod " not in result.stdout


_QUANTITY = re.compile(r"^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(value):
  number, unit = _QUANTITY.match(str(value)).groups()
  return float(number) * _UNITS[unit]


def test_kueue_objects_validate_and_admit_the_queued_render():
  """k8s/kueue/: valid against Kueue's CRDs (CEL rules too), each reference
  resolves, and the committed queued render could be admitted: its queue,
  its topology level, the flavor's nodes its pods select, every resource
  they request covered, and all of them fitting the quota at once."""
  objects = _objects(KUEUE)
  assert _validate_custom_resources(objects) == len(objects) == 4
  kinds = {o["kind"]: o for o in objects}
  local, cluster_queue = kinds["LocalQueue"], kinds["ClusterQueue"]
  flavor, topology = kinds["ResourceFlavor"], kinds["Topology"]
  assert local["spec"]["clusterQueue"] == cluster_queue["metadata"]["name"]
  (group,) = cluster_queue["spec"]["resourceGroups"]
  (flavor_quota,) = group["flavors"]
  assert flavor_quota["name"] == flavor["metadata"]["name"]
  assert flavor["spec"]["topologyName"] == topology["metadata"]["name"]
  levels = [level["nodeLabel"] for level in topology["spec"]["levels"]]
  quota = {r["name"]: _quantity(r["nominalQuota"])
           for r in flavor_quota["resources"]}
  queued = _objects(_dir(QUEUED))
  (jobset,) = [o for o in queued if o["kind"] == "JobSet"]
  assert jobset["metadata"]["labels"][kueue.QUEUE_LABEL] == (
      local["metadata"]["name"])
  total = {}
  for role, spec in _job_specs(queued):
    template = spec["template"]
    assert set(template["metadata"]["annotations"].values()) <= set(levels)
    assert template["spec"].get("nodeSelector", {}).items() <= (
        flavor["spec"]["nodeLabels"].items()), role
    container = template["spec"]["containers"][0]["resources"]
    requests = {**container["limits"], **container["requests"]}
    assert set(requests) <= set(group["coveredResources"]), role
    for name, value in requests.items():
      total[name] = total.get(name, 0) + _quantity(value) * spec["parallelism"]
  assert total and all(total[r] <= quota[r] for r in total), (total, quota)


def test_default_k8s_needs_no_prepared_volume():
  """kubectl apply -f k8s/ alone: only built-in kinds (no CRD, no Kueue:
  its objects are in k8s/kueue/, which apply -f k8s/ does not read), every
  claim a pod mounts is created by the manifests, and the trainer is given
  no data path (it trains on the MNIST sample in the package)."""
  objects = _objects(K8S)
  assert {o["kind"] for o in objects} == {
      "ConfigMap", "NetworkPolicy", "PersistentVolumeClaim", "Service", "Job"}
  created = {o["metadata"]["name"] for o in objects
             if o["kind"] == "PersistentVolumeClaim"}
  for role, template in _pod_templates(objects):
    claims = {v["persistentVolumeClaim"]["claimName"]
              for v in template["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims and claims <= created, role
    command = template["spec"]["containers"][0]["command"]
    assert not [a for a in command if a.startswith(("--mnist_dir", "--data"))]


@pytest.mark.parametrize("strategy, kind", [
    ("multiworker", "job"), ("multiworker", "tfjob"),
    ("multiworker", "jobset"), ("ps", "job"), ("ps", "jobset")])
@pytest.mark.parametrize("gpus", [0, 2])
def test_gpu_renders_use_nccl_and_cpu_renders_ring(strategy, kind, gpus,
                                                   tmp_path):
  spec = json.load(open(os.path.join(SPECS, "chief_two_workers_ps.json"
                                     if strategy == "ps" else
                                     "two_workers.json")))
  out = _render(tmp_path, spec, "--job_name=g", "--image=img:1",
                f"--strategy={strategy}", f"--kind={kind}",
                f"--gpus_per_worker={gpus}", "--shm_size=2Gi")
  objects = _objects(out)
  nccl = gpus > 0 and strategy == "multiworker"
  (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
  (rule,) = policy["spec"]["ingress"]
  # Never anything from outside the job.
  assert rule["from"] == [{"podSelector": {"matchLabels": {"tfdist/job": "g"}}}]
  assert rule["ports"] == ([{"protocol": "TCP"}] if nccl else
                           [{"protocol": "TCP", "port": 2222}])
  for role, template in _pod_templates(objects):
    container = template["spec"]["containers"][0]
    command = container["command"]
    shm = [v for v in template["spec"]["volumes"] if v["name"] == "shm"]
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    if strategy == "multiworker":
      assert f"--all_reduce={'nccl' if nccl else 'ring'}" in command, role
    else:
      assert not [a for a in command if a.startswith("--all_reduce")]
    if nccl:
      assert shm == [{"name": "shm", "emptyDir": {"medium": "Memory",
                                                  "sizeLimit": "2Gi"}}], role
      assert "/dev/shm" in mounts
    else:
      assert not shm and "/dev/shm" not in mounts, role
  for o in (o for o in objects if o["kind"] in CRDS):
    crd.validate(o, _crd_path(o["kind"]))
  # Back to ring on GPUs: the gRPC port only, no /dev/shm.
  if nccl:
    ring = _render(tmp_path, spec, "--job_name=g", "--image=img:1",
                   f"--kind={kind}", f"--gpus_per_worker={gpus}",
                   "--all_reduce=ring", name="ring")
    text = "".join((ring / f).read_text() for f in _yaml_files(ring))
    assert "--all_reduce=ring" in text and "/dev/shm" not in text
    assert "port: 2222" in (ring / "01-networkpolicy.yaml").read_text()
