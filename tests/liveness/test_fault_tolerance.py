"""Fault tolerance, proven by killing real training processes.

Every task is a real TensorFlow process talking gRPC over loopback, trained
on the real MNIST files; tasks are killed with SIGKILL or SIGTERM once a
checkpoint file shows that training is under way (files for ordering, never
sleeps), and every child is killed when its test ends. Figures (recovery
time, steps redone, checkpoint overhead) are printed; run with -s to see
them.
"""

import contextlib
import glob
import hashlib
import json
import os
import re
import signal
import shutil
import socket
import subprocess
import sys
import threading
import time

import portpicker
import pytest

from conftest import (REPO, SPECS, child_env, json_lines, kill_groups, launch,
                      run, trainer, wait_for)
from tfdist import errors as errors_lib
from tfdist.bench import log_noise
from tfdist.cluster import launch as launch_lib
from tfdist.cluster import preflight
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError, retried

# Small and quick: a few hundred steps of softmax regression.
STEPS_PER_EPOCH = 100
# A task in the middle of its fit, or exiting, is given this long.
DEADLINE = 150


def _wait_for(predicate, what: str, timeout: float = DEADLINE) -> None:
  wait_for(predicate, what, timeout)


def _checkpoint_steps(model_dir: str) -> list:
  """Steps of the complete checkpoints in model_dir: those the ``checkpoint``
  state file names (what a restore finds; TensorFlow names a checkpoint there
  only after its data and index files are written) whose index file exists."""
  directory = os.path.join(model_dir, "checkpoints")
  try:
    with open(os.path.join(directory, "checkpoint")) as f:
      named = re.findall(r'^all_model_checkpoint_paths: "(?:.*/)?ckpt-(\d+)"',
                         f.read(), re.MULTILINE)
  except FileNotFoundError:
    return []
  return sorted(int(step) for step in set(named) if os.path.exists(
      os.path.join(directory, f"ckpt-{step}.index")))


def _error_lines(text: str) -> list:
  return [l for l in text.splitlines() if l.startswith("error: ")]


def _assert_ends_clean(text: str, prefix: str = "") -> None:
  """No E-level line and no traceback after the last epoch's line (of the
  lines with ``prefix``, e.g. the launcher's ``[chief-0] ``) in ``text``:
  a job that healed ends as quietly as one that did not need to."""
  lines = text.splitlines()
  assert log_noise.training_end(lines, prefix) is not None, text[-3000:]
  noise = log_noise.after_training(lines, prefix)
  assert not noise, "\n".join(noise[:10])


@contextlib.contextmanager
def _killed_at_exit(process):
  """SIGKILLs ``process``'s group (it and every child) when the block ends,
  passed or not, and reaps it."""
  try:
    yield process
  finally:
    try:
      os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    process.wait()


def _kill_and_fail(job, victim: str, *, survivor: str, timeout: float):
  """SIGKILLs ``victim``; ``survivor`` must exit 200 within ``timeout`` with
  one error line naming it. Returns (seconds to that exit, the line)."""
  killed = time.monotonic()
  job.signal(victim, signal.SIGKILL)
  status = job.wait(survivor, timeout=timeout)
  seconds = time.monotonic() - killed
  assert status == 200, job.log(survivor)[-3000:]
  (line,) = _error_lines(job.log(survivor))
  assert f"lost {victim}" in line, line
  return seconds, line


class Job:
  """The tasks of one cluster as separately started processes.

  Unlike the launcher, a test can signal, wait for or restart any one task.
  """

  def __init__(self, tmp_path, layout: dict, flags, program=None):
    self.program = program or trainer("mnist")  # the command before flags
    self.cluster = {t: tuple(f"127.0.0.1:{portpicker.pick_unused_port()}"
                             for _ in range(n)) for t, n in layout.items()}
    self.flags = list(flags)
    self.dir = tmp_path
    self.processes = {}
    self.log_paths = {}
    self.started_at = {}

  def start(self, *names, extra=()):
    for name in names:
      task_type, index = name.rsplit("-", 1)
      env = child_env(TF_CONFIG=cluster_lib.make_tf_config(
          self.cluster, task_type, int(index)))
      count = sum(1 for k in self.log_paths if k[0] == name)
      path = os.path.join(self.dir, f"{name}.{count}.log")
      self.log_paths[(name, count)] = path
      with open(path, "w") as log:
        self.processes[name] = subprocess.Popen(
            [*self.program, *self.flags, *extra], cwd=REPO, env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
      self.started_at[name] = time.monotonic()

  def signal(self, name, signum):
    os.killpg(self.processes[name].pid, signum)

  def wait(self, name, timeout=DEADLINE) -> int:
    try:
      code = self.processes[name].wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      pytest.fail(f"{name} still running after {timeout} s:\n"
                  f"{self.log(name)[-3000:]}")
    return launch_lib.exit_status(code)

  def log(self, name, count=None) -> str:
    """The output of ``name``'s last run, or of its run ``count`` (0: the
    first)."""
    if count is None:
      count = max(k[1] for k in self.log_paths if k[0] == name)
    with open(self.log_paths[(name, count)]) as f:
      return f.read()

  def result(self, name) -> dict:
    results = json_lines(self.log(name))
    assert results, self.log(name)[-3000:]
    return results[-1]

  def stop(self):
    for process in self.processes.values():
      try:
        os.killpg(process.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      process.wait()


@pytest.fixture
def job_factory(tmp_path):
  jobs = []

  def make(layout, flags, program=None):
    jobs.append(Job(tmp_path, layout, flags, program))
    return jobs[-1]

  yield make
  for job in jobs:
    job.stop()


def _flags(mnist_dir, model_dir, strategy, *, epochs, every_steps,
           steps_per_epoch=STEPS_PER_EPOCH):
  return [f"--strategy={strategy}", f"--mnist_dir={mnist_dir}",
          f"--epochs={epochs}", f"--steps_per_epoch={steps_per_epoch}",
          f"--model_dir={model_dir}",
          f"--checkpoint_every_steps={every_steps}", "--peer_timeout=60"]


# --- checkpoints and resume: one process --------------------------------------

@pytest.fixture(scope="module")
def resumed_mirrored(tmp_path_factory, mnist_dir):
  """A mirrored run of 2 epochs, then a relaunch asking for 3; the learning
  rate warms up over 4 epochs, so it is still rising when the relaunch
  resumes."""
  model_dir = str(tmp_path_factory.mktemp("mirrored") / "model")
  flags = ["--strategy=mirrored", f"--mnist_dir={mnist_dir}",
           "--steps_per_epoch=10", f"--model_dir={model_dir}",
           "--checkpoint_every_steps=3", "--keep_checkpoints=2",
           "--learning_rate=0.5", "--warmup_epochs=4"]
  first = run(trainer("mnist", *flags, "--epochs=2"), timeout=120)
  assert first.returncode == 0, first.stderr[-3000:]
  kept = _checkpoint_steps(model_dir)
  second = run(trainer("mnist", *flags, "--epochs=3"), timeout=120)
  assert second.returncode == 0, second.stderr[-3000:]
  return {"dir": model_dir, "kept_after_first": kept,
          "first": json_lines(first.stdout)[-1],
          "second": json_lines(second.stdout)[-1], "stderr": second.stderr}


@pytest.mark.slow
def test_checkpoints_on_schedule_bounded(resumed_mirrored):
  first = resumed_mirrored["first"]
  # Steps 3, 6, 9, 10 (epoch end), 12, 15, 18, 20: 8 saves, newest 2 kept.
  assert first["checkpoints_saved"] == 8
  assert resumed_mirrored["kept_after_first"] == [18, 20]
  assert first["global_step"] == 20


def test_relaunch_resumes_step_counter(resumed_mirrored):
  second = resumed_mirrored["second"]
  assert second["start_step"] == 20
  assert second["global_step"] == 30  # exactly the target, nothing redone
  assert "resumed from" in resumed_mirrored["stderr"]
  print(f"\ncheckpoint overhead (mirrored): {second['checkpoint_seconds']} s "
        f"of {second['train_seconds']} s")


def test_relaunch_continues_learning_rate_schedule(resumed_mirrored):
  # Linear warmup from 0 to 0.5 over 40 steps: lr(step) = 0.5 * step / 40;
  # each epoch reports the rate of its last step (steps 9, 19, 29).
  # Restarted at step 0, the relaunch would report lr(9) = 0.1125.
  assert resumed_mirrored["first"]["learning_rate_history"] == [0.1125,
                                                                0.2375]
  assert resumed_mirrored["second"]["learning_rate_history"] == [0.3625]


@pytest.mark.slow
def test_corrupt_checkpoint_one_line_nothing_overwritten(resumed_mirrored,
                                                         mnist_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  shutil.copytree(resumed_mirrored["dir"], model_dir)
  latest = max(glob.glob(os.path.join(model_dir, "checkpoints", "*.data-*")))
  with open(latest, "r+b") as f:
    f.truncate(16)
  before = _tree_digest(model_dir)
  done = run(trainer("mnist", "--strategy=mirrored", f"--mnist_dir={mnist_dir}",
                     "--steps_per_epoch=10", "--epochs=4",
                     f"--model_dir={model_dir}"), timeout=120)
  assert done.returncode == 2, done.stderr[-3000:]
  assert "Traceback" not in done.stderr
  (line,) = _error_lines(done.stderr)
  assert "cannot restore" in line and "corrupt" in line, line
  assert _tree_digest(model_dir) == before


@pytest.mark.slow
def test_checkpoint_of_another_model_is_refused(resumed_mirrored, tmp_path):
  model_dir = str(tmp_path / "model")
  shutil.copytree(resumed_mirrored["dir"], model_dir)
  before = _tree_digest(model_dir)
  flags = ["--data=synthetic", "--steps_per_epoch=2", "--epochs=1",
           "--batch_size=8", f"--model_dir={model_dir}"]
  # The saved model description differs: refused before TensorFlow loads.
  done = run(trainer("inception", *flags), timeout=120)
  assert done.returncode == 2, done.stderr[-3000:]
  (line,) = _error_lines(done.stderr)
  assert "holds checkpoints of a different model" in line, line
  # Without that description, TensorFlow's own restore check refuses it.
  os.remove(os.path.join(model_dir, "checkpoints", "tfdist_model.json"))
  before = _tree_digest(model_dir)
  done = run(trainer("inception", *flags), timeout=180)
  assert done.returncode == 2, done.stderr[-3000:]
  (line,) = _error_lines(done.stderr)
  assert "cannot restore" in line, line
  assert _tree_digest(model_dir) == before


def _tree_digest(directory: str) -> str:
  digest = hashlib.sha256()
  for root, _, files in sorted(os.walk(directory)):
    for name in sorted(files):
      path = os.path.join(root, name)
      digest.update(path.encode())
      with open(path, "rb") as f:
        digest.update(f.read())
  return digest.hexdigest()


# tfdist's saver (checkpoint.Checkpointing, as training builds it) on a
# model of 4 million weights (checkpoints of 32 MB): a save takes a while.
# "save" sets every weight and the global step to 1, 2, 3, ... and saves
# each; "restore" restores as a relaunch does and prints the step and the
# values.
_CHECKPOINTING = r"""
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
from tfdist.training import checkpoint
model = tf.keras.Sequential([tf.keras.Input((2000,)),
                             tf.keras.layers.Dense(2000)])
model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
saver = checkpoint.Checkpointing(
    model=model, strategy=tf.distribute.get_strategy(),
    model_dir=sys.argv[2], write_dir=sys.argv[2],
    options=checkpoint.CheckpointOptions(keep=3), steps_per_epoch=1,
    signature={"model": "big"}, workers_agree=False)
start = saver.restore()
if sys.argv[1] == "save":
  for step in range(start + 1, 10_000):
    for weight in model.weights:
      weight.assign(tf.fill(weight.shape, float(step)))
    model.optimizer.iterations.assign(step)
    saver.save()
else:
  values = set()
  for weight in model.weights:
    values |= set(weight.numpy().ravel().tolist())
  print(json.dumps({"start": start, "path": checkpoint.latest(sys.argv[2]),
                    "values": sorted(values)}))
"""


def _save_in_progress(directory: str):
  """The step of the save in progress in ``directory``, or None.

  TensorFlow writes a checkpoint ``ckpt-N`` into a directory
  ``ckpt-N_temp``, merges it into ``ckpt-N.index`` and ``.data`` files and
  removes that directory; only then is it named in the ``checkpoint`` file.
  """
  try:
    names = os.listdir(directory)
  except FileNotFoundError:
    return None
  steps = [int(m.group(1)) for m in map(re.compile(r"ckpt-(\d+)_temp$").match,
                                        names) if m]
  return max(steps, default=None)


def _stopped(process) -> None:
  """SIGSTOPs ``process`` and returns once the kernel has stopped it."""
  os.kill(process.pid, signal.SIGSTOP)
  _, status = os.waitpid(process.pid, os.WUNTRACED)
  assert os.WIFSTOPPED(status), f"the saver exited ({status})"


def _kill_inside_a_save(process, directory: str, *, after: int) -> int:
  """SIGKILLs ``process`` inside a save of a step above ``after``: stopped
  while that save's temporary directory exists; returns its step."""
  def saving() -> bool:
    assert process.poll() is None, f"the saver exited ({process.returncode})"
    return (_save_in_progress(directory) or 0) > after

  deadline = time.monotonic() + 120
  while time.monotonic() < deadline:
    wait_for(saving, f"a save of a step above {after}", timeout=120)
    _stopped(process)
    step = _save_in_progress(directory)
    if step is not None:  # the save is still in progress, and frozen
      os.kill(process.pid, signal.SIGKILL)
      return step
    os.kill(process.pid, signal.SIGCONT)  # it ended meanwhile: the next
  pytest.fail("no save caught in progress in 120 s")


@pytest.mark.slow
def test_killed_while_saving_never_leaves_a_half_checkpoint(tmp_path):
  """SIGKILL inside tfdist's save (its temporary files present, the
  process frozen by SIGSTOP before the kill): the restore a relaunch does
  picks the last complete checkpoint, every weight as saved."""
  model_dir = tmp_path / "model"
  directory = os.path.join(model_dir, "checkpoints")
  process = subprocess.Popen(
      [sys.executable, "-c", _CHECKPOINTING, "save", str(model_dir)],
      env=child_env(), start_new_session=True, stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  with _killed_at_exit(process):
    # Past the first saves: complete checkpoints to fall back on.
    killed_in = _kill_inside_a_save(process, directory, after=3)
  complete = _checkpoint_steps(str(model_dir))
  assert complete and max(complete) == killed_in - 1, (complete, killed_in)
  assert os.path.isdir(os.path.join(directory, f"ckpt-{killed_in}_temp"))
  done = run([sys.executable, "-c", _CHECKPOINTING, "restore",
              str(model_dir)], timeout=120)
  assert done.returncode == 0, done.stdout + done.stderr[-3000:]
  (restored,) = json_lines(done.stdout)
  assert restored["start"] == killed_in - 1, restored
  assert restored["path"].endswith(f"ckpt-{killed_in - 1}"), restored
  assert restored["values"] == [float(killed_in - 1)], restored
  print(f"\nkilled inside the save of step {killed_in}; restored step "
        f"{restored['start']}")


# --- preemption and lost tasks: multiworker -----------------------------------

@pytest.mark.slow
def test_multiworker_sigterm_saves_exits_143_and_resumes_exactly(
    job_factory, mnist_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  target = 2 * STEPS_PER_EPOCH
  job = job_factory({"worker": 2}, _flags(mnist_dir, model_dir, "multiworker",
                                          epochs=2, every_steps=40))
  job.start("worker-0", "worker-1")
  _wait_for(lambda: 40 in _checkpoint_steps(model_dir), "a first checkpoint")
  before = _checkpoint_steps(model_dir)
  signalled = time.monotonic()
  job.signal("worker-1", signal.SIGTERM)
  assert job.wait("worker-1") == 143, job.log("worker-1")[-3000:]
  assert job.wait("worker-0") == 143, job.log("worker-0")[-3000:]
  stopped = time.monotonic() - signalled
  saved = max(_checkpoint_steps(model_dir))
  # The preemption's own checkpoint (the next agreement, within 10 steps).
  assert max(before) < saved < target, (before, saved)
  assert f"saved step {saved}" in job.log("worker-0")

  relaunched = time.monotonic()
  job.start("worker-0", "worker-1")
  assert job.wait("worker-0") == 0, job.log("worker-0")[-3000:]
  assert job.wait("worker-1") == 0, job.log("worker-1")[-3000:]
  results = [job.result(n) for n in ("worker-0", "worker-1")]
  for result in results:
    assert result["start_step"] == saved  # nothing redone
    assert result["global_step"] == target  # exactly the target
  assert results[0]["weights_digest"] == results[1]["weights_digest"]
  _assert_ends_clean(job.log("worker-0"))
  print(f"\nmultiworker SIGTERM: all tasks exited 143 in {stopped:.1f} s, "
        f"saved step {saved}, 0 steps redone; relaunch to end "
        f"{time.monotonic() - relaunched:.1f} s; checkpoint "
        f"{results[0]['checkpoint_seconds']} s of "
        f"{results[0]['train_seconds']} s training")


@pytest.mark.slow
def test_multiworker_worker_killed_others_fail_in_one_line(
    job_factory, mnist_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  job = job_factory({"worker": 2}, _flags(mnist_dir, model_dir, "multiworker",
                                          epochs=3, every_steps=40))
  job.start("worker-0", "worker-1")
  _wait_for(lambda: 40 in _checkpoint_steps(model_dir), "a first checkpoint")
  seconds, line = _kill_and_fail(job, "worker-1", survivor="worker-0",
                                 timeout=90)
  assert "--model_dir" in line, line
  print(f"\nmultiworker SIGKILL worker-1: worker-0 failed after {seconds:.1f} "
        f"s; last checkpoint step {max(_checkpoint_steps(model_dir))}")


@pytest.mark.slow
def test_multiworker_worker_killed_in_set_up_is_a_lost_peer(job_factory,
                                                           mnist_dir):
  """worker-1 dies as its model is built; worker-0's model function then
  fails in the variables' broadcast: a lost peer (200, retried), not the
  function's error (was: 2, which fails a Kubernetes job for good)."""
  job = job_factory({"worker": 2}, [
      "--strategy=multiworker", f"--mnist_dir={mnist_dir}", "--epochs=1",
      "--steps_per_epoch=5", "--peer_timeout=60",
      "--model=tests.user_models:killed_on_worker_1"],
      program=[sys.executable, "-m", "tfdist.train"])
  job.start("worker-0", "worker-1")
  assert job.wait("worker-1") == 137, job.log("worker-1")[-3000:]
  assert job.wait("worker-0", timeout=90) == 200, job.log("worker-0")[-3000:]
  (line,) = _error_lines(job.log("worker-0"))
  assert "lost worker-1 during set-up" in line, line


@contextlib.contextmanager
def _launched(command, out_path):
  """Runs the launcher with its output in ``out_path``; kills its process
  group (every task it started) when the block ends, passed or not."""
  with open(out_path, "w") as out:
    process = subprocess.Popen(command, cwd=REPO, env=child_env(),
                               stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
  with _killed_at_exit(process):
    yield process


def _kill_worker_1(out_path) -> None:
  """SIGKILLs worker-1's process group, found by the launcher's pid line."""
  pid = int(re.search(r"starting worker-1 at \S+ \(pid (\d+)\)",
                      out_path.read_text()).group(1))
  os.killpg(pid, signal.SIGKILL)


@pytest.mark.slow
def test_launcher_restarts_whole_multiworker_job_which_resumes(
    mnist_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  out_path = tmp_path / "launch.log"
  target = 2 * STEPS_PER_EPOCH
  command = launch(os.path.join(SPECS, "two_workers.json"),
                   trainer("mnist", *_flags(mnist_dir, model_dir,
                                            "multiworker", epochs=2,
                                            every_steps=40)),
                   "--max_restarts=1")
  with _launched(command, out_path) as process:
    _wait_for(lambda: 40 in _checkpoint_steps(model_dir), "a first checkpoint")
    _kill_worker_1(out_path)
    killed_at = time.monotonic()
    assert process.wait(timeout=DEADLINE) == 0, out_path.read_text()[-4000:]
    recovery = time.monotonic() - killed_at
  text = out_path.read_text()
  assert "restarting every task (restart 1/1)" in text
  results = json_lines(text, "[worker-0] ")
  assert results[-1]["start_step"] >= 40
  assert results[-1]["global_step"] == target
  _assert_ends_clean(text, "[worker-0] ")
  print(f"\nlauncher restart of a multiworker job: kill to end "
        f"{recovery:.1f} s, resumed at step {results[-1]['start_step']}")


# --- parameter-server training ------------------------------------------------

@pytest.mark.slow
def test_ps_worker_killed_job_finishes_worker_restarted(
    mnist_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  out_path = tmp_path / "launch.log"
  target = 3 * STEPS_PER_EPOCH
  command = launch(os.path.join(SPECS, "chief_two_workers_ps.json"),
                   trainer("mnist", *_flags(mnist_dir, model_dir, "ps",
                                            epochs=3, every_steps=50)),
                   "--max_restarts=1", "--grace=90")
  with _launched(command, out_path) as process:
    # As the chief's last epoch starts: worker-1 is back after its end.
    _wait_for(lambda: 2 * STEPS_PER_EPOCH in _checkpoint_steps(model_dir),
              "the checkpoint that ends epoch 2")
    _kill_worker_1(out_path)
    assert process.wait(timeout=DEADLINE) == 0, out_path.read_text()[-4000:]
  text = out_path.read_text()
  _assert_ends_clean(text, "[chief-0] ")
  assert "worker-1 failed with exit status 137; restarting it" in text
  assert len(re.findall(r"starting worker-1 at", text)) == 2
  # The restarted worker rejoined and was told that training is over, even
  # when it came back after the chief's last step: it exits 0 by itself,
  # not stopped by the launcher after the grace period.
  assert "[worker-1] tfdist: worker-1: chief-0 finished training" in text
  assert "is done; stopping" not in text
  (result,) = json_lines(text, "[chief-0] ")
  # At least the target: a step the lost worker had applied to the ps
  # before dying is scheduled again (ps training is at-least-once).
  assert target <= result["global_step"] <= target + 2
  assert result["test_accuracy"] >= 0.85


@pytest.mark.slow
@pytest.mark.timeout(600)  # may set up the chain of ps jobs (below)
def test_ps_killed_ps_fails_the_chief_fast_then_a_killed_chief_resumes(
    ps_sigterm_chain):
  """ps-0 SIGKILLed: the chief fails in one line naming it, and the whole
  job relaunched resumes; then the relaunched chief SIGKILLed and restarted
  alone (as Kubernetes would: workers and ps keep serving) resumes and ends
  exactly at the target, after which every task exits 0 by itself. The
  first job and the last of the ps SIGTERM chain (below) are these."""
  killed, last = ps_sigterm_chain["ps killed"], ps_sigterm_chain["last"]
  assert killed["status"] == 200, killed["log"][-3000:]
  (line,) = _error_lines(killed["log"])
  assert "lost ps-0" in line, line
  saved = killed["saved"]
  relaunch = ps_sigterm_chain[_PS_SIGTERM_CASES[0][0]]["logs"]["chief-0"]
  assert 0 < saved and re.search(rf"resumed from \S+ at step {saved}\n",
                                 relaunch), relaunch[-3000:]
  assert last["killed_status"] == 137, last["first_log"][-3000:]
  assert last["status"] == 0, last["log"][-3000:]
  result = json_lines(last["log"])[-1]
  assert result["start_step"] == last["resumed"] > last["started_at_step"]
  assert result["global_step"] == _PS_SIGTERM_TARGET
  _assert_ends_clean(last["log"])
  for name in ("ps-0", "worker-0", "worker-1"):
    assert last["others"][name] == 0, last["other_logs"][name][-3000:]
  print(f"\nps SIGKILL ps-0: chief failed after {killed['seconds']:.1f} s; "
        f"relaunch resumed at step {saved}; chief SIGKILL + restart alone: "
        f"resumed at step {last['resumed']}, restart to end "
        f"{last['recovery']:.1f} s, checkpoint {result['checkpoint_seconds']}"
        f" s of {result['train_seconds']} s")


@pytest.mark.slow
def test_ps_lost_after_fit_or_during_restore_is_a_lost_peer(
    job_factory, mnist_dir, tmp_path):
  """ps-0 SIGKILLed while the chief's final save is under way (8 s
  slower, tfdist.bench.slowed): one line, 200, retried (was: a traceback
  and 1, which fails a Kubernetes job for good). Relaunched, ps-0 killed
  while the chief restores: 200 again, a lost peer (was: 2 and "corrupt,
  remove it" of a good checkpoint), which is left as it was."""
  from tfdist.bench import slowed  # pylint: disable=g-import-not-at-top
  model_dir = str(tmp_path / "model")
  flags = _flags(mnist_dir, model_dir, "ps", epochs=1, every_steps=10,
                 steps_per_epoch=20)
  # One worker: the claim is the ps's and the chief's.
  layout, names = ({"chief": 1, "worker": 1, "ps": 1},
                   ("ps-0", "worker-0", "chief-0"))
  for moment, slow, phase in [
      ("final", {"writes": "final"}, "the end of training"),
      ("restore", {"restore": True}, "set-up")]:
    checkpoints = os.path.join(model_dir, "checkpoints")
    before = _tree_digest(checkpoints) if moment == "restore" else None
    job = job_factory(layout, flags, [*slowed.command(seconds=8, **slow),
                                      "-m", "trainers.mnist"])
    job.start(*names)
    _wait_for(lambda: "slowed by 8 s" in job.log("chief-0"), moment)
    job.signal("ps-0", signal.SIGKILL)
    assert job.wait("chief-0", timeout=60) == 200, job.log("chief-0")[-3000:]
    (line,) = _error_lines(job.log("chief-0"))
    assert f"lost ps-0 during {phase}" in line, line
    assert "Traceback" not in job.log("chief-0"), job.log("chief-0")[-3000:]
    job.stop()
    if before is not None:
      assert _tree_digest(checkpoints) == before


# SIGTERM to each kind of task stops all four with 143 after the chief's
# save, newer than the signal, and a relaunch resumes exactly there. One
# chain of ps jobs on one model_dir serves the three cases: each job is the
# relaunch of the one before it (it resumes at that one's preemption
# checkpoint) and is itself SIGTERMed to the next kind of task; the last
# relaunch ends exactly at the target. The chief's case comes first and also
# runs 5 steps per scheduled function (one RPC to a worker): checkpoints and
# the preemption check happen between functions, so a save due at step 48
# happens at step 50, and the relaunches still end exactly (the last one
# also runs 5 steps per function). There each of its first two writes (the
# save at step 50 and the preemption's) takes 8 s longer than it would
# (tfdist.bench.slowed), past the stall deadline of 5 s: a write is never a
# stall (was: the stall watch ended the chief with 200 in the first one, or
# made 143 a 200 in the second, losing the preemption checkpoint).
_PS_SIGTERM_CASES = [("chief-0", 48, 5, 8), ("worker-1", 50, 1, 0),
                     ("ps-0", 50, 1, 0)]
_PS_NAMES = ("ps-0", "worker-0", "worker-1", "chief-0")
# Before the chain, its first job is ps-0 SIGKILLed after its first
# checkpoint (test_ps_killed_ps_...); the last relaunch's chief is SIGKILLed
# after its first checkpoint and restarted alone, which ends the chain.
# Enough steps that the chain is still training when each signal arrives
# (each is sent after a checkpoint of its job; saves came <= 110 steps
# after that checkpoint): 5 jobs of at most about 160 steps each.
_PS_SIGTERM_TARGET = 7 * STEPS_PER_EPOCH


def _ps_flags(mnist_dir, model_dir, every_steps, per_execution):
  return [*_flags(mnist_dir, model_dir, "ps", epochs=7,
                  every_steps=every_steps),
          f"--steps_per_execution={per_execution}"]


def _sigterm_one(tmp, mnist_dir, model_dir, case, jobs) -> dict:
  """Starts the next job of the chain, SIGTERMs ``case``'s task once a
  checkpoint of this job is written; every task must exit 143."""
  from tfdist.bench import slowed  # pylint: disable=g-import-not-at-top
  signalled, every_steps, per_execution, slow_s = case
  resumed_at = max(_checkpoint_steps(model_dir), default=0)
  flags = _ps_flags(mnist_dir, model_dir, every_steps, per_execution)
  job = _chain_job(tmp, signalled,
                   [*flags, "--stall_timeout=5"] if slow_s else flags, jobs,
                   [*slowed.command(writes="1,2", seconds=slow_s), "-m",
                    "trainers.mnist"] if slow_s else None)
  chief = job.processes["chief-0"]
  _wait_for(lambda: chief.poll() is not None or max(_checkpoint_steps(
      model_dir), default=0) > max(45, resumed_at),
            f"a checkpoint after step {max(45, resumed_at)}")
  before = _checkpoint_steps(model_dir)
  started, signalled_at = time.monotonic(), time.time()
  if chief.poll() is None:
    job.signal(signalled, signal.SIGTERM)
    statuses = {name: job.wait(name, timeout=60) for name in _PS_NAMES}
  else:  # this case fails on the chief's status
    statuses = {"chief-0": job.wait("chief-0")}
    job.stop()
  stopped = time.monotonic() - started
  steps = _checkpoint_steps(model_dir)
  saved = max(steps, default=0)
  index = os.path.join(model_dir, "checkpoints", f"ckpt-{saved}.index")
  return {"job": job, "statuses": statuses, "stopped": stopped,
          "before": before, "steps": steps, "saved": saved,
          # (a later job of the chain removes it: read now)
          "saved_at": os.path.getmtime(index) if saved else 0,
          "resumed_at": resumed_at, "signalled_at": signalled_at,
          "logs": {name: job.log(name) for name in _PS_NAMES}}


def _chain_job(tmp, name, flags, jobs, program=None) -> Job:
  """A ps job of the chain (chief, 2 workers, ps), started, logs in
  tmp/name."""
  job = Job(tmp / name, {"chief": 1, "worker": 2, "ps": 1}, flags, program)
  os.makedirs(job.dir)
  jobs.append(job)
  job.start(*_PS_NAMES)
  return job


def _ps_killed(tmp, mnist_dir, model_dir, jobs) -> dict:
  """The chain's first job: ps-0 SIGKILLed after the first checkpoint; the
  chief's status, log, seconds to it and the checkpoint to resume from."""
  job = _chain_job(tmp, "ps_killed", _ps_flags(mnist_dir, model_dir, 50, 1),
                   jobs)
  _wait_for(lambda: 50 in _checkpoint_steps(model_dir), "a first checkpoint")
  killed = time.monotonic()
  job.signal("ps-0", signal.SIGKILL)
  status = job.wait("chief-0", timeout=60)
  seconds = time.monotonic() - killed
  job.stop()
  return {"status": status, "log": job.log("chief-0"), "seconds": seconds,
          "saved": max(_checkpoint_steps(model_dir), default=0)}


def _last_chief_killed(tmp, mnist_dir, model_dir, jobs) -> dict:
  """The chain's last relaunch (5 steps per function): its chief SIGKILLed
  after a checkpoint of its own and restarted alone, run to the end; then
  the other tasks, which must exit by themselves."""
  started_at = max(_checkpoint_steps(model_dir), default=0)
  job = _chain_job(tmp, "last", _ps_flags(mnist_dir, model_dir, 50, 5), jobs)
  chief = job.processes["chief-0"]
  _wait_for(lambda: chief.poll() is not None or max(_checkpoint_steps(
      model_dir), default=0) > started_at, "a checkpoint of the last job")
  if chief.poll() is None:
    job.signal("chief-0", signal.SIGKILL)
  killed_status = job.wait("chief-0")
  resumed = max(_checkpoint_steps(model_dir), default=0)
  job.start("chief-0")
  status = job.wait("chief-0")
  recovery = time.monotonic() - job.started_at["chief-0"]
  others = {name: job.wait(name, timeout=30) for name in _PS_NAMES[:3]}
  return {"killed_status": killed_status, "first_log": job.log("chief-0", 0),
          "status": status, "log": job.log("chief-0"), "resumed": resumed,
          "started_at_step": started_at, "recovery": recovery,
          "others": others,
          "other_logs": {name: job.log(name) for name in _PS_NAMES[:3]}}


@pytest.fixture(scope="module")
def ps_sigterm_chain(tmp_path_factory, mnist_dir):
  """The chain of ps jobs: ps-0 killed, then each SIGTERMed to one case's
  task, then the last relaunch, whose chief is killed and restarted alone,
  run to the end: per case, what its job did and the next job's chief log
  (its relaunch)."""
  tmp = tmp_path_factory.mktemp("ps_sigterm")
  model_dir = str(tmp / "model")
  jobs, done = [], {}
  try:
    done["ps killed"] = _ps_killed(tmp, mnist_dir, model_dir, jobs)
    for case in _PS_SIGTERM_CASES:
      # A case whose job failed fails on it; the next one goes on from the
      # checkpoints there are.
      done[case[0]] = _sigterm_one(tmp, mnist_dir, model_dir, case, jobs)
    done["last"] = _last_chief_killed(tmp, mnist_dir, model_dir, jobs)
    names = [case[0] for case in _PS_SIGTERM_CASES] + ["last"]
    for name, after in zip(names, names[1:]):
      done[name]["relaunch"] = done[after].get("first_log") or (
          done[after]["logs"]["chief-0"])
    yield done
  finally:
    for job in jobs:
      job.stop()


@pytest.mark.slow
@pytest.mark.timeout(600)  # the first case sets up the chain of 4 jobs
@pytest.mark.parametrize("signalled, every_steps, per_execution, slow_s",
                         _PS_SIGTERM_CASES)
def test_ps_sigterm_every_task_143_relaunch_exact(
    ps_sigterm_chain, signalled, every_steps, per_execution, slow_s):
  case = ps_sigterm_chain[signalled]
  done = ps_sigterm_chain
  for name in reversed(_PS_NAMES):  # the chief first
    assert case["statuses"].get(name) == 143, case["logs"][name][-3000:]
  steps, saved, before = case["steps"], case["saved"], case["before"]
  chief = case["logs"]["chief-0"]
  by = "" if signalled == "chief-0" else f" to {signalled}"
  assert f"preempted (SIGTERM{by}): saved step {saved}" in chief
  # The preemption's own checkpoint, written after the signal.
  assert saved > max(before), (before, steps)
  assert case["saved_at"] >= case["signalled_at"]
  assert saved < _PS_SIGTERM_TARGET
  assert all(step % per_execution == 0 for step in steps), steps
  if slow_s:
    assert chief.count(f"slowed by {slow_s} s") == 2, chief[-3000:]
    assert "no step completed" not in chief, chief[-3000:]
  if case["resumed_at"]:
    assert re.search(rf"resumed from \S+ at step {case['resumed_at']}\n",
                     chief), chief[-3000:]

  # The relaunch: the next case's job, or the last one, which ends.
  relaunch = done[signalled]["relaunch"]
  assert re.search(rf"resumed from \S+ at step {saved}\n",
                   relaunch), relaunch[-3000:]  # nothing redone
  assert done["last"]["status"] == 0, done["last"]["log"][-3000:]
  result = json_lines(done["last"]["log"])[-1]
  assert result["global_step"] == _PS_SIGTERM_TARGET  # exactly the target
  _assert_ends_clean(done["last"]["log"])
  print(f"\nps SIGTERM to {signalled}, steps_per_execution={per_execution}: "
        f"all 4 tasks exited 143 in {case['stopped']:.1f} s, checkpoints at "
        f"{steps}; relaunch resumed at {saved}, the chain ended at exactly "
        f"{_PS_SIGTERM_TARGET}")


# --- evaluator ----------------------------------------------------------------

@pytest.mark.slow
def test_evaluator_scores_each_checkpoint_and_exits(mnist_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  # One worker beside the chief: the claim is the evaluator's.
  with open(os.path.join(SPECS, "chief_two_workers_evaluator.json")) as f:
    spec = json.load(f)
  spec["worker"] = spec["worker"][:1]  # its ports are replaced by free ones
  (tmp_path / "spec.json").write_text(json.dumps(spec))
  done = run(launch(str(tmp_path / "spec.json"),
                    trainer("mnist", "--strategy=multiworker",
                            f"--mnist_dir={mnist_dir}", "--epochs=2",
                            "--steps_per_epoch=30", f"--model_dir={model_dir}",
                            "--peer_timeout=60")),
             timeout=DEADLINE)
  assert done.returncode == 0, done.stdout[-4000:]
  (chief,) = json_lines(done.stdout, "[chief-0] ")
  (evaluation,) = json_lines(done.stdout, "[evaluator-0] ")
  assert evaluation["checkpoints_evaluated"] >= 1
  assert evaluation["step"] == chief["global_step"] == 60
  # The same weights, the same test split, the same code: the same number.
  assert evaluation["test_accuracy"] == chief["test_accuracy"]
  assert glob.glob(os.path.join(model_dir, "eval", "events.out.tfevents.*"))


@pytest.mark.slow
def test_evaluator_skips_a_checkpoint_it_cannot_read(resumed_mirrored,
                                                     mnist_dir, tmp_path):
  """The newest checkpoint garbled (a half-copied file), then the chief's
  result: one line says it was skipped, and the evaluator ends as after
  training (was: DataLossError, exit 1)."""
  model_dir = tmp_path / "model"
  shutil.copytree(resumed_mirrored["dir"], model_dir)
  latest = max(glob.glob(str(model_dir / "checkpoints" / "*.data-*")))
  with open(latest, "r+b") as f:
    f.seek(40)
    f.write(b"\xff" * 20)
  (model_dir / "result.json").write_text("{}")  # newer than the checkpoint
  cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"],
             "evaluator": ["127.0.0.1:3"]}
  done = run(trainer("mnist", "--strategy=multiworker",
                     f"--mnist_dir={mnist_dir}", f"--model_dir={model_dir}"),
             env=child_env(TF_CONFIG=json.dumps(
                 {"cluster": cluster,
                  "task": {"type": "evaluator", "index": 0}})),
             timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  step = latest.rsplit("ckpt-", 1)[1].split(".")[0]
  assert re.search(rf"evaluator-0: skipped \S+ckpt-{step}, which it cannot "
                   r"read \(DataLossError: ", done.stderr), done.stderr[-3000:]
  assert json_lines(done.stdout)[-1]["checkpoints_evaluated"] == 0


@pytest.mark.slow
def test_evaluator_without_checkpoints_gives_up_in_one_line(mnist_dir,
                                                            tmp_path):
  cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"],
             "evaluator": ["127.0.0.1:3"]}
  done = run(trainer("mnist", "--strategy=multiworker",
                     f"--mnist_dir={mnist_dir}", "--eval_timeout=2",
                     f"--model_dir={tmp_path / 'empty'}"),
             env=child_env(TF_CONFIG=json.dumps(
                 {"cluster": cluster,
                  "task": {"type": "evaluator", "index": 0}})),
             timeout=60)
  assert done.returncode == 1, done.stderr[-3000:]
  (line,) = _error_lines(done.stderr)
  assert "no new checkpoint" in line and "for 2 s" in line, line


# --- preflight ----------------------------------------------------------------

@pytest.mark.slow
def test_unreachable_peer_named_with_deadline(mnist_dir):
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  started = time.monotonic()
  done = run(trainer("mnist", "--strategy=multiworker",
                     f"--mnist_dir={mnist_dir}", "--peer_timeout=6"),
             env=child_env(TF_CONFIG=cluster_lib.make_tf_config(
                 cluster, "worker", 0)), timeout=60)
  # Retried (a pod may wait for a node, or be preempted while starting).
  assert done.returncode == 200, done.stderr[-3000:]
  assert time.monotonic() - started < 40
  assert f"waiting for worker-1 at 127.0.0.1:{ports[1]}, 5/6 s" in done.stderr
  (line,) = _error_lines(done.stderr)
  assert f"worker-1 at 127.0.0.1:{ports[1]} did not answer within 6 s" in line


@pytest.mark.slow
def test_tasks_from_different_specs_refused(mnist_dir):
  ports = [portpicker.pick_unused_port() for _ in range(3)]
  addresses = [f"127.0.0.1:{p}" for p in ports]
  # worker-1 was started from a spec with a third worker.
  specs = [{"worker": addresses[:2]}, {"worker": addresses}]
  processes = [subprocess.Popen(
      trainer("mnist", "--strategy=multiworker", f"--mnist_dir={mnist_dir}",
              "--peer_timeout=8"), cwd=REPO,
      env=child_env(TF_CONFIG=cluster_lib.make_tf_config(spec, "worker", i)),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      start_new_session=True) for i, spec in enumerate(specs)]
  try:
    outputs = [p.communicate(timeout=90) for p in processes]
  finally:
    kill_groups(processes)
  # The one that met the other's spec: 2 (bad input); the other may time
  # out first on the third worker it waits for: 200 (retried).
  statuses = sorted(p.returncode for p in processes)
  assert statuses in ([2, 2], [2, 200]), outputs
  lines = [_error_lines(err) for _, err in outputs]
  assert any("was started from a different cluster spec" in l[0]
             for l in lines), lines


def test_preflight_handshake_compares_spec_digests():
  """In-process: a peer answering with another digest is named."""
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  cluster = {"worker": (f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}")}
  other = dict(cluster, chief=(f"127.0.0.1:{portpicker.pick_unused_port()}",))
  peer = preflight._Listener(  # pylint: disable=protected-access
      cluster_lib.make_task(other, "worker", 1),
      f"tfdist-preflight {cluster_lib.spec_digest(other)} worker-1\n".encode())
  try:
    with pytest.raises(ConfigError, match="different cluster spec"):
      preflight.check_peers(cluster_lib.make_task(cluster, "worker", 0),
                            timeout=5)
  finally:
    peer.close()
  # Once closed, the port is free again for TensorFlow.
  with socket.socket() as again:
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    again.bind(("127.0.0.1", ports[1]))


class _Calls:
  """A clock for preflight that also says how often it was read: once a
  wait has looked more than ``after`` times, ``looked`` is set."""

  def __init__(self, after: int, step: float = 0.0):
    self.calls, self.after, self.step = 0, after, step
    self.looked = threading.Event()

  def __call__(self) -> float:
    self.calls += 1
    if self.calls > self.after:
      self.looked.set()
    return time.monotonic() + self.calls * self.step


def _preflight_in_a_thread(task, *, timeout: float, clock) -> tuple:
  """check_peers of ``task`` in a thread; returns (thread, its outcome)."""
  outcome = []

  def check():
    try:
      preflight.check_peers(task, timeout=timeout, clock=clock)
      outcome.append(None)
    except Exception as e:  # pylint: disable=broad-except
      outcome.append(e)

  thread = threading.Thread(target=check, daemon=True)
  thread.start()
  return thread, outcome


def test_preflight_waits_for_a_missing_peer_until_it_answers():
  """worker-1 not up: preflight keeps waiting (it looked several times),
  and returns once worker-1 answers its handshake, which saw ours."""
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  clock = _Calls(after=8)  # a look at the peer is two reads, and more
  thread, outcome = _preflight_in_a_thread(
      cluster_lib.make_task(cluster, "worker", 0), timeout=60, clock=clock)
  _wait_for(lambda: clock.looked.is_set() or not thread.is_alive(),
            "preflight to look at worker-1", timeout=30)
  assert thread.is_alive() and not outcome, outcome  # still waiting
  peer = preflight._Listener(  # pylint: disable=protected-access
      cluster_lib.make_task(cluster, "worker", 1),
      f"tfdist-preflight {cluster_lib.spec_digest(cluster)} "
      "worker-1\n".encode())
  try:
    thread.join(10)
    assert outcome == [None], outcome
    assert peer.heard_from == {"worker-0"}
  finally:
    peer.close()


def test_preflight_waits_for_its_own_port_then_a_retried_status():
  """Another process holds worker-0's port: preflight waits (it looked
  more than once), takes the port once it is free and goes on; held past
  the deadline, it is a lost peer's status (200, retried), in one line."""
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  task = cluster_lib.make_task(cluster, "worker", 0)
  stand_in = preflight._Listener(  # pylint: disable=protected-access
      cluster_lib.make_task(cluster, "worker", 1),
      f"tfdist-preflight {cluster_lib.spec_digest(cluster)} "
      "worker-1\n".encode())
  try:
    holder = socket.create_server(("127.0.0.1", ports[0]))
    clock = _Calls(after=3)
    thread, outcome = _preflight_in_a_thread(task, timeout=60, clock=clock)
    _wait_for(lambda: clock.looked.is_set() or not thread.is_alive(),
              "preflight to try its port", timeout=30)
    assert thread.is_alive() and not outcome, outcome
    holder.close()
    thread.join(10)
    assert outcome == [None], outcome
    with socket.create_server(("127.0.0.1", ports[0])) as holder:
      # Each read of this clock is 10 s later: past the deadline at once.
      with pytest.raises(errors_lib.PeerLost) as raised:
        preflight.check_peers(task, timeout=30, clock=_Calls(0, step=10))
  finally:
    stand_in.close()
  assert (f"preflight: worker-0's port {ports[0]} (127.0.0.1:{ports[0]}) was "
          "held by another process for 30 s; the job is retried"
          in str(raised.value)), raised.value
  assert "\n" not in str(raised.value)


# --- launcher restarts, without TensorFlow ------------------------------------

# A stand-in task: worker-1 fails on its first run (with the status given,
# 200 by default: a lost peer); the others end once worker-1's second run
# has begun (a file), within 20 s.
_FAIL_ONCE = r"""
import json, os, sys, time
task = json.loads(os.environ["TF_CONFIG"])["task"]
name = f"{task['type']}-{task['index']}"
first, second = (os.path.join(sys.argv[1], f) for f in ("first", "second"))
if name == "worker-1":
  if not os.path.exists(first):
    open(first, "w").close()
    sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 200)
  open(second, "w").close()
deadline = time.monotonic() + 20
while not os.path.exists(second) and time.monotonic() < deadline:
  time.sleep(0.05)  # polling a file, not synchronising by time
sys.exit(0 if os.path.exists(second) else 5)
"""


@pytest.mark.parametrize("spec,message,starts", [
    ("two_workers.json", "restarting every task (restart 1/1)", 2),
    ("chief_two_workers_ps.json", "worker-1 failed with exit status 200; "
     "restarting it (restart 1/1)", 1),
])
def test_launcher_restart_policy(spec, message, starts, tmp_path):
  done = run(launch(os.path.join(SPECS, spec),
                    [sys.executable, "-c", _FAIL_ONCE, str(tmp_path)],
                    "--max_restarts=1", "--grace=5"), timeout=60)
  assert done.returncode == 0, done.stdout
  assert message in done.stdout
  assert done.stdout.count("starting worker-0 at") == starts


def test_launcher_fails_at_once_on_a_programs_verdict(tmp_path):
  """Status 3 (1-127: the program's own verdict) is never restarted, as
  the rendered podFailurePolicy fails the Job on it (was: restarted)."""
  done = run(launch(os.path.join(SPECS, "chief_two_workers_ps.json"),
                    [sys.executable, "-c", _FAIL_ONCE, str(tmp_path), "3"],
                    "--max_restarts=1"), timeout=60)
  assert done.returncode == 3, done.stdout
  assert ("worker-1 failed with exit status 3 (the program's verdict: not "
          "restarted, as Kubernetes would not); stopping the other tasks"
          in done.stdout), done.stdout
  assert "restart 1/1" not in done.stdout
  assert done.stdout.count("starting worker-1 at") == 1


def test_launcher_restarts_what_the_rendered_pod_failure_policy_retries():
  """A local run previews the cluster: for every status, the launcher
  restarts a task exactly when the rendered Job's podFailurePolicy does
  not fail the Job (tfdist.k8s.controller applies it)."""
  from tfdist.k8s import controller, local_cluster  # pylint: disable=g-import-not-at-top
  (job,) = [o for o in local_cluster.load_manifests(
      os.path.join(REPO, "k8s", "ps")) if o["kind"] == "Job"
            and o["metadata"]["name"].endswith("-worker")]
  container = job["spec"]["template"]["spec"]["containers"][0]["name"]
  for status in range(1, 256):
    fails_job = controller.pod_failure_action(
        job["spec"], container, status) == controller.FAIL_JOB
    assert retried(status) == (not fails_job), status


def test_launcher_gives_up_after_max_restarts(tmp_path):
  done = run(launch(os.path.join(SPECS, "two_workers.json"),
                    [sys.executable, "-c", "import sys; sys.exit(200)"],
                    "--max_restarts=2"), timeout=60)
  assert done.returncode == 200
  assert "restart 2/2" in done.stdout
  assert "job failed: worker-" in done.stdout
