"""Kubernetes manifests: rendered, not drifted, valid, secured, exercised.

The exercise tests run every pod of k8s/ and k8s/ps/ as a local process with
the pod's own command and environment, training on the real MNIST files.
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import (MNIST_DIR, REPO, SPECS, child_env, json_lines, run,
                      wait_for)
from tfdist.k8s import files as k8s_files
from tfdist.k8s import render as k8s_render

K8S = os.path.join(REPO, "k8s")
# Every directory of rendered manifests (k8s/serving is written by hand by
# tfdist.export's owner and tested there).
RENDERED = {"": "mnist", "ps": "mnist-ps", "inception": "inception",
            "tfjob": "mnist-tfjob"}
# The exercise trains one epoch instead of the manifests' five.
QUICK = ["--epochs=1"]


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


def _pod_templates(objects):
  """(role, pod template) of every Job and TFJob replica."""
  for o in objects:
    if o["kind"] == "Job":
      yield o["metadata"]["labels"]["tfdist/role"], o["spec"]["template"]
    elif o["kind"] == "TFJob":
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
  assert output.count(" passed for resource ") == sum(
      len(_objects(_dir(n))) for n in RENDERED if n != "tfjob") + 2
  # The only object without a schema is the TFJob custom resource, whose
  # pod templates the next test validates.
  unknown = [line for line in output.splitlines() if "Couldn't find" in line]
  assert len(unknown) == 1 and "TFJob" in unknown[0], output


# The fields of TFJob kubeflow.org/v1 that tfdist writes, from the training
# operator's CRD (manifests/base/crds/kubeflow.org_tfjobs.yaml): unknown
# fields are rejected, as the API server's structural schema would.
_TFJOB_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {"spec": {
        "type": "object", "additionalProperties": False,
        "required": ["tfReplicaSpecs"],
        "properties": {
            "enableDynamicWorker": {"type": "boolean"},
            "successPolicy": {"type": "string"},
            "runPolicy": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                    "backoffLimit": {"type": "integer", "minimum": 0},
                    "cleanPodPolicy": {"enum": ["None", "All", "Running"]},
                    "schedulingPolicy": {"type": "object"},
                    "suspend": {"type": "boolean"},
                    "ttlSecondsAfterFinished": {"type": "integer"}}},
            "tfReplicaSpecs": {
                "type": "object",
                "propertyNames": {"enum": ["Chief", "Worker", "PS",
                                           "Evaluator", "Master"]},
                "additionalProperties": {
                    "type": "object", "additionalProperties": False,
                    "required": ["template"],
                    "properties": {
                        "replicas": {"type": "integer", "minimum": 1},
                        "restartPolicy": {"enum": ["Always", "OnFailure",
                                                   "Never", "ExitCode"]},
                        "template": {"type": "object"}}}}}}}}


def test_tfjob_fields_and_pod_templates_validate():
  import jsonschema  # pylint: disable=g-import-not-at-top
  import kubernetes_validate  # pylint: disable=g-import-not-at-top
  (tfjob,) = _objects(_dir("tfjob"))[-1:]
  assert tfjob["kind"] == "TFJob"
  jsonschema.validate(tfjob, _TFJOB_SCHEMA)
  for replica in tfjob["spec"]["tfReplicaSpecs"].values():
    # Each template is a core/v1 PodTemplateSpec: the real schema applies.
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "PodTemplate",
         "metadata": {"name": "tfjob"}, "template": replica["template"]},
        kubernetes_validate.latest_version(), strict=True)
    container = replica["template"]["spec"]["containers"][0]
    # The operator finds the container and port by these names.
    assert container["name"] == "tensorflow"
    assert container["ports"][0]["name"] == "tfjob-port"
    assert container["command"][:3] == ["python", "-m", "trainers.mnist"]


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_every_pod_is_secured_and_behind_the_network_policy(name):
  objects = _objects(_dir(name))
  (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
  selector = policy["spec"]["podSelector"]["matchLabels"]
  (rule,) = policy["spec"]["ingress"]
  assert policy["spec"]["policyTypes"] == ["Ingress"]
  assert rule["from"] == [{"podSelector": {"matchLabels": selector}}]
  port = rule["ports"][0]["port"]
  roles = []
  for role, template in _pod_templates(objects):
    roles.append(role)
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
    trains = role == "worker" or (role == "chief" and name != "ps")
    assert gpus == (1 if trains else 0), role
    if gpus:
      assert {"key": "nvidia.com/gpu", "operator": "Exists",
              "effect": "NoSchedule"} in spec["tolerations"]
      assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    else:
      assert "tolerations" not in spec and "nodeSelector" not in spec
  assert sorted(roles) == sorted(
      {"ps": ["chief", "ps", "worker"]}.get(name, ["worker"]))
  for service in (o for o in objects if o["kind"] == "Service"):
    assert service["spec"]["clusterIP"] == "None"  # headless, never exposed
    assert "type" not in service["spec"]


@pytest.mark.parametrize("name", sorted(set(RENDERED) - {"tfjob"}))
def test_jobs_fail_on_program_errors_and_retry_signals(name):
  for job in (o for o in _objects(_dir(name)) if o["kind"] == "Job"):
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] >= 1
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["activeDeadlineSeconds"] > 0
    rules = spec["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"]
    (exit_codes,) = [r["onExitCodes"] for r in fail]
    assert exit_codes["operator"] == "In"
    assert exit_codes["values"] == list(range(1, 128))
    # Exit statuses >= 128 match no rule: counted against backoffLimit and
    # retried; a preempted or evicted pod is not even counted.
    assert {"action": "Ignore", "onPodConditions": [
        {"type": "DisruptionTarget"}]} in rules
    assert spec["backoffLimit"] >= 1


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
    code = (f"import sys; from absl import flags; import {command[2]}; "
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
  _validate([str(d / f) for d in (multi, ps, tfjob) for f in _yaml_files(d)])
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
  """Runs the exercise of a manifest directory: the data claim is the real
  MNIST, the model claim ``model_dir``."""
  return run([sys.executable, "-m", "tfdist.k8s", "exercise", str(directory),
              f"--pvc=mnist-data={os.path.dirname(MNIST_DIR)}",
              f"--pvc={_model_claim(directory)}={model_dir}", *extra],
             timeout=timeout)


def _model_claim(directory):
  (claim,) = [o["metadata"]["name"] for o in _objects(directory)
              if o["kind"] == "PersistentVolumeClaim"]
  return claim


@pytest.mark.timeout(300)
def test_exercise_of_k8s_trains_multiworker_to_completion(mnist_dir,
                                                          tmp_path):
  del mnist_dir
  result = _exercise(K8S, tmp_path, "--", *QUICK)
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
  results = {r["task"]: r for r in json_lines(result.stdout, "[worker-0] ") +
             json_lines(result.stdout, "[worker-1] ")}
  assert set(results) == {"worker-0", "worker-1"}
  # One synchronous model: both pods end with bit-identical weights.
  assert results["worker-0"]["weights_digest"] == (
      results["worker-1"]["weights_digest"])
  assert results["worker-0"]["num_replicas"] == 2
  assert results["worker-0"]["test_accuracy"] >= 0.85
  # Only the chief (worker 0) wrote to the model volume.
  with open(tmp_path / "result.json") as f:
    assert json.load(f)["task"] == "worker-0"
  assert "[launch] Job mnist-worker: 2/2 pods succeeded: Complete" in (
      result.stdout)
  assert "did not end by themselves" not in result.stdout


@pytest.mark.timeout(300)
def test_exercise_of_k8s_ps_trains_to_completion(mnist_dir, tmp_path):
  del mnist_dir
  result = _exercise(_dir("ps"), tmp_path, "--", *QUICK)
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
  (chief,) = json_lines(result.stdout, "[chief-0] ")
  assert chief["strategy"] == "ps" and chief["test_accuracy"] >= 0.85
  assert all("/job:ps/" in d for d in chief["variable_devices"])
  with open(tmp_path / "result.json") as f:
    assert json.load(f)["task"] == "chief-0"
  # The worker and ps pods ended by themselves: every Job completes.
  for job, count in [("ps", 1), ("worker", 2), ("chief", 1)]:
    assert (f"[launch] Job mnist-ps-{job}: {count}/{count} pods succeeded: "
            "Complete") in result.stdout


@pytest.mark.parametrize("file_name, old, new, message", [
    ("00-cluster-configmap.yaml", "mnist-worker-1.mnist-worker",
     "mnist-worker-1.mnist", "mnist-worker-1.mnist: no pod of these manifests"),
    ("10-worker.yaml", "  subdomain: mnist-worker", "  subdomain: other",
     "no pod of these manifests"),
    ("01-networkpolicy.yaml", "port: 2222", "port: 2223",
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
  assert "[launch] starting" not in result.stdout  # checked before any start


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
  result = run([sys.executable, "-m", "tfdist.k8s", "exercise", K8S],
               timeout=60)
  assert result.returncode == 2
  assert "--pvc=mnist-data=DIR" in result.stderr
  assert len(result.stderr.splitlines()) == 1
