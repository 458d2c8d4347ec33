"""The liveness layer's latent defects, each driven in a real process.

tests/liveness_task.py runs one piece of a ps chief (a save's phase, its
peer watch, a 2-ps save with a worker stopped, the stall watch) at the
moment a defect needs; then a real multiworker trainer is signalled in
strategy creation, and a ps job run by tfdist.k8s.exercise leaves a
stopped worker out. The package has no import cycle. Each test failed
before its fix.
"""

import ast
import os
import signal
import subprocess
import sys
import time

import portpicker
import pytest

from conftest import (MNIST_DIR, REPO, child_env, kill_groups, run, trainer,
                      wait_for)
from tfdist.cluster import launch
from tfdist.cluster import preflight
from tfdist.cluster import specs as cluster_lib
from tfdist.training import hosting

LIVENESS_TASK = os.path.join(REPO, "tests", "liveness_task.py")


def _run(mode: str, workdir, timeout: float):
  done = run([sys.executable, LIVENESS_TASK, mode, str(workdir)],
             timeout=timeout)
  return launch.exit_status(done.returncode), done.stdout, done.stderr


@pytest.mark.slow
def test_ps_save_with_a_worker_stopped_between_steps(tmp_path):
  """Two ps tasks, worker-0 stopped between steps, then a save: it runs op by op
  and registers nothing with worker-0, so it ends (a traced save registers its
  function with every task, and froze the chief: 142). Each save is
  tfdist.training.ps_save's (counted: the replacement took effect) and its 2 ps
  tasks write at once (their writes meet at a barrier)."""
  status, out, err = _run("ps_save", tmp_path, timeout=120)
  assert status == 0, out + err[-3000:]
  tasks = "['/job:ps/replica:0/task:0', '/job:ps/replica:0/task:1']"
  assert out.splitlines() == [f"saved 1 with 1 parallel saves on {tasks}",
                              f"saved 2 with 2 parallel saves on {tasks}"], (
                                  out + err[-3000:])
  assert os.path.exists(tmp_path / "ckpt-2.index")


@pytest.mark.slow
def test_sigterm_in_a_save_nested_in_training_keeps_the_checkpoint(
    tmp_path):
  """The task's SIGTERM handler ran: every guard (the save's too) learns
  it; the save ends and the next step boundary saves and stops (143)."""
  status, _, err = _run("save", tmp_path, timeout=120)
  assert status == 143, err[-3000:]
  assert "still blocks" not in err, err[-3000:]
  assert "preempted (SIGTERM): saved step 0" in err, err[-3000:]
  assert (tmp_path / "checkpoints" / "checkpoint").exists()


@pytest.fixture(scope="module")
def stall_watches(tmp_path_factory):
  """Both stall-watch tasks in one process (liveness_task.py stall_watch):
  its status, the stdout of each (unreadable, after_fit: None if the
  process ended in the first), and stderr."""
  status, out, err = _run("stall_watch", tmp_path_factory.mktemp("watch"),
                          timeout=200)
  unreadable, ended, after_fit = out.partition("---\n")
  return status, unreadable, after_fit if ended else None, err


@pytest.mark.slow
def test_unreadable_coordinator_turns_the_stall_watch_off(stall_watches):
  """Another TensorFlow's coordinator: one line, the watch and its
  heartbeat sentinel end, the healthy task goes on (was: 142 after 60 s)."""
  status, out, after_fit, err = stall_watches
  # It returned (0): the process went on to after_fit.
  assert after_fit is not None, f"status {status}: " + out + err[-3000:]
  assert out.strip() == "no child left", out
  lines = [l for l in err.splitlines() if "stall watch is off" in l]
  assert len(lines) == 1, err[-3000:]
  assert "Traceback" not in err, err[-3000:]


@pytest.mark.slow
def test_worker_stopped_after_fit_is_gone_on_without(stall_watches):
  """After fit the chief still needs every worker: TensorFlow registers and
  removes the chief's functions (the final save's, the test accuracy's)
  with every task and waits for a stopped one. So a worker stopped then is
  gone on without, as in training (was: left alone, and the chief waited
  forever: a chaos trial hung in CI)."""
  status, _, out, err = stall_watches
  assert status == 0, f"{out}" + err[-3000:]
  assert out.strip() == "goes on without ['worker-1']", out


def _imports(root: str) -> dict:
  """Module -> the tfdist modules it imports, anywhere in its text (at the
  top, inside a function, under TYPE_CHECKING)."""
  modules = {}
  for directory, _, files in os.walk(os.path.join(root, "tfdist")):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
        modules[module.removesuffix(".__init__")] = path
  found = {}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        names.update(a.name for a in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module:
        # ``from package import module`` imports that module; ``from
        # module import name``, the module.
        for alias in node.names:
          full = f"{node.module}.{alias.name}"
          names.add(full if full in modules else node.module)
    found[module] = {n for n in names
                     if n in modules and n not in ("tfdist", module)}
  return found


def test_no_import_cycle_in_tfdist():
  """Lazy and type-only imports included (were: deadlines <-> stall_watch,
  runtime <-> ps_runtime)."""
  imports = _imports(REPO)

  def reaches(start: str, goal: str, seen: set) -> bool:
    for module in imports[start] - seen:
      seen.add(module)
      if module == goal or reaches(module, goal, seen):
        return True
    return False

  cycles = sorted(m for m in imports if reaches(m, m, set()))
  assert not cycles, cycles


def _probe_kind(address: str) -> str:
  return (preflight.probe(address, timeout=0.2) or ("",))[0]


def _catches(pid: int, signum: int) -> bool:
  """Whether process ``pid`` has a handler for ``signum`` (Linux)."""
  with open(f"/proc/{pid}/status", encoding="ascii") as f:
    caught = next(line for line in f if line.startswith("SigCgt:"))
  return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)


# The trainer with the start barrier's look at TensorFlow's SIGTERM record
# switched off, as when the record comes after it (under load): the look
# during fit must act on it.
_NO_START_LOOK = (
    "import runpy, sys; from tfdist.training import runtime; "
    "runtime.MultiWorkerRuntime._stop_if_sigterm_taken = lambda self: None; "
    "sys.argv[0] = 'trainers.mnist'; "
    "runpy.run_module('trainers.mnist', run_name='__main__', alter_sys=True)")


def _sigterm_in_strategy_creation(tmp_path, command) -> tuple:
  """Two multiworker workers; worker-0 gets SIGTERM while it waits in
  strategy creation for worker-1, stopped as it left preflight (TensorFlow's
  own SIGTERM handler rules there). Returns their statuses and outputs."""
  cluster = {"worker": [f"127.0.0.1:{portpicker.pick_unused_port()}"
                        for _ in range(2)]}
  processes = []
  try:
    for index in (1, 0):
      processes.insert(0, subprocess.Popen(
          command(tmp_path / f"model-{index}"),
          cwd=REPO, env=child_env(TF_CONFIG=cluster_lib.make_tf_config(
              cluster, "worker", index)),
          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT, text=True, start_new_session=True))
      if index == 1:  # worker-1 in preflight before worker-0 starts
        wait_for(lambda: _probe_kind(cluster["worker"][1]) == "tfdist",
                 "worker-1's preflight", timeout=120)
    # worker-0 left preflight (its server answers): worker-1 is stopped
    # before it registers, so worker-0 waits in strategy creation. The
    # constructor starts the server before it sets up TensorFlow's SIGTERM
    # handler; a SIGTERM in between takes its default action (143, nothing
    # to save), so the signal waits for the handler.
    wait_for(lambda: _probe_kind(cluster["worker"][0]) == "server",
             "worker-0's TensorFlow server", timeout=120)
    os.killpg(processes[1].pid, signal.SIGSTOP)
    wait_for(lambda: _catches(processes[0].pid, signal.SIGTERM),
             "TensorFlow's SIGTERM handler in worker-0", timeout=120)
    os.killpg(processes[0].pid, signal.SIGTERM)
    os.killpg(processes[1].pid, signal.SIGCONT)
    outputs = [p.communicate(timeout=120)[0] for p in processes]
  finally:
    kill_groups(processes)
  return [launch.exit_status(p.returncode) for p in processes], outputs


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("start_look", [True, False],
                         ids=["start-barrier", "during-fit"])
def test_sigterm_in_strategy_creation_ends_the_job_with_143(mnist_dir,
                                                            tmp_path,
                                                            start_look):
  """The signal must end the job with 143 (was: both trained to the end
  and exited 0). TensorFlow's handler records it in its coordination
  service. start-barrier: without --model_dir only the start barrier looks
  for the record (for 1.5 s after creation), and says so in its own line
  before any step. during-fit: with --model_dir, a record that comes later
  (it did, under load) is found during fit (here without the start
  barrier's look: at the first agreement, after a save)."""
  flags = ["--strategy=multiworker", f"--mnist_dir={mnist_dir}",
           "--peer_timeout=60"]
  if start_look:  # a short run: without the look it ends with 0
    prefix = trainer("mnist")
    flags += ["--epochs=1", "--steps_per_epoch=20"]
  else:  # long enough for the look during fit (once a second)
    prefix = [sys.executable, "-c", _NO_START_LOOK]
    flags += ["--epochs=3", "--steps_per_epoch=200"]
  statuses, outputs = _sigterm_in_strategy_creation(
      tmp_path, lambda model_dir: [*prefix, *flags] + (
          [] if start_look else [f"--model_dir={model_dir}"]))
  assert statuses[0] == 143, outputs[0][-3000:]
  assert statuses[1] in (143, 200), outputs[1][-3000:]
  if start_look:
    assert ("SIGTERM to worker-0 during strategy creation (TensorFlow took "
            "it); nothing to save yet; exiting (143)" in outputs[0]), (
                outputs[0][-3000:])
  else:
    assert statuses == [143, 143], outputs[1][-3000:]
    assert "preempted (SIGTERM" in outputs[0], outputs[0][-3000:]
    assert (tmp_path / "model-0" / "checkpoints" / "checkpoint").exists()


# --- a worker the ps chief went on without ends clean -------------------------

def test_a_worker_left_out_learns_that_the_job_is_done(tmp_path):
  """The record names the worker at its address, written since it started;
  the chief's result newer than the record: done. Anything else: not."""
  cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2",
                                                  "127.0.0.1:3"],
             "ps": ["127.0.0.1:4"]}
  chief = cluster_lib.make_task(cluster, "chief", 0)
  worker = cluster_lib.make_task(cluster, "worker", 1)
  model_dir = str(tmp_path)
  started = time.time() - 60
  assert not hosting.left_out_and_done(model_dir, worker, since=started)
  hosting.record_left_out(model_dir, chief, ["worker-1"])
  left_at = os.path.getmtime(tmp_path / "left_out" / "worker-1")
  assert not hosting.left_out_and_done(model_dir, worker, since=started)
  (tmp_path / "result.json").write_text("{}")
  os.utime(tmp_path / "result.json", (left_at + 1, left_at + 1))
  assert hosting.left_out_and_done(model_dir, worker, since=started)
  # Not this task (worker-0), a record older than this process (an earlier
  # run's), a result older than the record (an earlier run's), none at all.
  assert not hosting.left_out_and_done(
      model_dir, cluster_lib.make_task(cluster, "worker", 0), since=started)
  assert not hosting.left_out_and_done(model_dir, worker,
                                       since=left_at + 0.5)
  os.utime(tmp_path / "result.json", (left_at - 1, left_at - 1))
  assert not hosting.left_out_and_done(model_dir, worker, since=started)
  assert not hosting.left_out_and_done(None, worker, since=started)


def _pod_group(hostname: str) -> int:
  """The process group of the local pod named ``hostname`` (the exercise
  gives each pod that HOSTNAME, and a session of its own)."""
  wanted = f"HOSTNAME={hostname}".encode()
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/environ", "rb") as f:
        environ = f.read().split(b"\0")
      if wanted in environ and os.getpgid(int(pid)) == int(pid):
        return int(pid)
    except (OSError, ProcessLookupError):
      continue
  return 0


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_exercise_a_worker_left_out_ends_clean_and_its_job_completes(
    tmp_path):
  """k8s/ps, run by tfdist.k8s.exercise: worker-1's pod stopped (SIGSTOP)
  once training began; the chief goes on without it and finishes. Woken
  after the chief's Job completed, worker-1 learns from the chief's record
  in the model volume that the job is done and exits 0, so its Job
  completes too (was: 200 after the chief's grace, then its replacements
  200 in preflight, until the exercise gave up on it)."""
  model_dir, out_path = tmp_path / "model", tmp_path / "exercise.log"
  model_dir.mkdir()
  with open(out_path, "w") as out:
    exercise = subprocess.Popen(
        [sys.executable, "-m", "tfdist.k8s", "exercise",
         os.path.join(REPO, "k8s", "ps"), f"--pvc=mnist-ps-model={model_dir}",
         "--", f"--mnist_dir={MNIST_DIR}", "--epochs=2",
         "--steps_per_epoch=150", "--checkpoint_every_steps=50",
         "--peer_timeout=30"],
        cwd=REPO, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True)
  try:
    wait_for((model_dir / "checkpoints" / "checkpoint").exists,
             "the first checkpoint", timeout=240)
    group = _pod_group("mnist-ps-worker-1")
    assert group, "no pod mnist-ps-worker-1"
    os.killpg(group, signal.SIGSTOP)
    wait_for(lambda: "[exercise] Job mnist-ps-chief: 1/1 pods succeeded"
             in out_path.read_text() or exercise.poll() is not None,
             "the chief's Job to complete", timeout=240)
    os.killpg(group, signal.SIGCONT)
    assert exercise.wait(timeout=60) == 0, out_path.read_text()[-5000:]
  finally:
    kill_groups([exercise])
  text = out_path.read_text()
  assert "chief-0 goes on without it" in text, text[-5000:]
  assert ("[worker-1] tfdist: worker-1: chief-0 went on without this task "
          "(stalled or lost) and finished training; exiting") in text, (
              text[-5000:])
  for job, count in [("ps", 1), ("worker", 2), ("chief", 1)]:
    assert (f"[exercise] Job mnist-ps-{job}: {count}/{count} pods "
            "succeeded: Complete") in text, text[-5000:]
  assert "restarting it as a new pod" not in text, text[-5000:]
