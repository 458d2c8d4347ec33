"""The jobs the fault tests kill, and what they look at afterwards.

Shared by tests/liveness/test_fault_tolerance.py (preemption and lost
tasks) and tests/liveness/test_checkpoints.py (checkpoints, resume, the
evaluator): a cluster's tasks as separately started processes (:class:`Job`,
each its own TF_CONFIG and log file), the trainer flags they run with, the
complete checkpoints of a model_dir, and the checks that a healed job ends
clean.
"""

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import time

import portpicker
import pytest

from conftest import REPO, child_env, error_lines, json_lines, trainer, wait_for
from tfdist.bench import log_noise
from tfdist.cluster import launch as launch_lib
from tfdist.cluster import specs as cluster_lib


# Small and quick: a few hundred steps of softmax regression.
STEPS_PER_EPOCH = 100
# A task in the middle of its fit, or exiting, is given this long.
DEADLINE = 150


def wait_long(predicate, what: str, timeout: float = DEADLINE) -> None:
  """conftest.wait_for, with a task's deadline by default."""
  wait_for(predicate, what, timeout)


def checkpoint_steps(model_dir: str) -> list:
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


def assert_ends_clean(text: str, prefix: str = "") -> None:
  """No E-level line and no traceback after the last epoch's line (of the
  lines with ``prefix``, e.g. the launcher's ``[chief-0] ``) in ``text``:
  a job that healed ends as quietly as one that did not need to."""
  lines = text.splitlines()
  assert log_noise.training_end(lines, prefix) is not None, text[-3000:]
  noise = log_noise.after_training(lines, prefix)
  assert not noise, "\n".join(noise[:10])


@contextlib.contextmanager
def killed_at_exit(process):
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


def kill_and_fail(job, victim: str, *, survivor: str, timeout: float):
  """SIGKILLs ``victim``; ``survivor`` must exit 200 within ``timeout`` with
  one error line naming it. Returns (seconds to that exit, the line)."""
  killed = time.monotonic()
  job.signal(victim, signal.SIGKILL)
  status = job.wait(survivor, timeout=timeout)
  seconds = time.monotonic() - killed
  assert status == 200, job.log(survivor)[-3000:]
  (line,) = error_lines(job.log(survivor))
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



def job_flags(mnist_dir, model_dir, strategy, *, epochs, every_steps,
              steps_per_epoch=STEPS_PER_EPOCH):
  return [f"--strategy={strategy}", f"--mnist_dir={mnist_dir}",
          f"--epochs={epochs}", f"--steps_per_epoch={steps_per_epoch}",
          f"--model_dir={model_dir}",
          f"--checkpoint_every_steps={every_steps}", "--peer_timeout=60"]


def tree_digest(directory: str) -> str:
  digest = hashlib.sha256()
  for root, _, files in sorted(os.walk(directory)):
    for name in sorted(files):
      path = os.path.join(root, name)
      digest.update(path.encode())
      with open(path, "rb") as f:
        digest.update(f.read())
  return digest.hexdigest()
