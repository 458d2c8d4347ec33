"""One training job as real task processes on loopback, each watched alone.

Owns: :class:`Job`, which starts every task of a cluster (free loopback ports,
its own TF_CONFIG each, its own process group) running a trainer (MNIST's by
default), collects each task's output lines (its stdout's and stderr's, each
whole) and exit time, and sends signals to single tasks; the chaos sweep
(tfdist.bench.chaos) and the no-hang tests use it. Unlike tfdist.cluster.launch
it never stops the other tasks when one exits: what each survivor does on its
own is what is measured. Also :func:`checkpoints_readable`, what a job left.
Imports tfdist.bench.log_noise, tfdist.bench.runner (the children's
environment), tfdist.training.checkpoint, tfdist.cluster.specs,
tfdist.cluster.launch (exit statuses, a shape's --min_workers),
tfdist.cluster.preflight (is a task up?) and tfdist.cluster.relay (whole
lines); TensorFlow only to read checkpoints.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Optional, Sequence

from tfdist.bench import log_noise
from tfdist.bench import runner
from tfdist.cluster import launch
from tfdist.cluster import preflight
from tfdist.cluster import relay
from tfdist.cluster import specs as cluster_lib
from tfdist.training import checkpoint as checkpoint_lib

# Task counts per strategy: the smallest clusters with every role.
SHAPES = {"multiworker": {"worker": 2},
          "ps": {"chief": 1, "worker": 2, "ps": 1}}
# More shapes, each named ``STRATEGY-...``: its tasks run --strategy=STRATEGY.
# ps-2ps: the variables over two ps tasks (tfdist.training.sharding).
# multiworker-elastic: 3 workers with --min_workers=2
# (tfdist.training.elastic): one lost for good, the other two regroup and
# finish.
MORE_SHAPES = {"ps-2ps": {"chief": 1, "worker": 2, "ps": 2},
               "multiworker-elastic": {"worker": 3}}
# The trainer flags a shape adds to every task's.
_SHAPE_FLAGS = {"multiworker-elastic": ("--min_workers=2",)}
_START_ORDER = ("ps", "worker", "chief", "evaluator")  # servers first


def strategy_of(shape: str) -> str:
  """The --strategy of a shape's tasks: ``ps`` for ``ps-2ps``."""
  return shape.split("-", 1)[0]


def min_workers(shape: str) -> int:
  """The --min_workers of a shape's tasks (0: not elastic)."""
  return launch.min_workers_of(_SHAPE_FLAGS.get(shape, ()))


def free_cluster(shape: str) -> dict:
  """A cluster of ``shape`` (a key of SHAPES or MORE_SHAPES) on free
  loopback ports."""
  import portpicker  # pylint: disable=g-import-not-at-top
  counts = {**SHAPES, **MORE_SHAPES}[shape]
  return {job: [f"127.0.0.1:{portpicker.pick_unused_port()}"
                for _ in range(count)]
          for job, count in counts.items()}


class Job:
  """Every task of ``cluster`` (default: ``shape``'s, a key of SHAPES or
  MORE_SHAPES) running ``trainers.<trainer>`` with ``flags``.

  Attributes:
    output: task name -> its output lines (stdout and stderr) so far.
    line_times: task name -> time.monotonic() of each of its output lines.
    started_at: task name -> time.monotonic() when it was started.
    exited_at: task name -> time.monotonic() when it exited.
  """

  def __init__(self, shape: str, flags: Sequence[str], *,
               cluster: Optional[dict] = None, environ=None,
               trainer: str = "mnist",
               prefix: Callable[[str], list] = lambda name: []):
    """``prefix(task name)``: words run before that task's command (e.g.
    tfdist.bench.capped's)."""
    self.strategy = strategy_of(shape)
    self.cluster = cluster or free_cluster(shape)
    self._flags = [f"--strategy={self.strategy}",
                   *_SHAPE_FLAGS.get(shape, ()), *flags]
    self._module = f"trainers.{trainer}"
    self._prefix = prefix
    self._env = runner.child_env(dict(os.environ if environ is None
                                      else environ))
    self.processes = {}
    self.output = {}
    self.line_times = {}
    self.started_at = {}
    self.exited_at = {}
    self._readers = []
    self._lines_lock = threading.Lock()  # a line and its time go together

  def task_names(self) -> list:
    return [f"{job}-{index}" for job, addresses in self.cluster.items()
            for index in range(len(addresses))]

  @property
  def primary(self) -> str:
    return launch.primary_task(self.cluster)

  def start(self) -> None:
    for job in _START_ORDER:
      for index in range(len(self.cluster.get(job, ()))):
        name = f"{job}-{index}"
        env = dict(self._env, TF_CONFIG=cluster_lib.make_tf_config(
            self.cluster, job, index))
        process = subprocess.Popen(
            [*self._prefix(name), sys.executable, "-m", self._module,
             *self._flags],
            cwd=runner.REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
        self.processes[name] = process
        self.started_at[name] = time.monotonic()
        self.output[name] = []
        self.line_times[name] = []
        reader = threading.Thread(target=self._read, args=(name, process),
                                  daemon=True)
        reader.start()
        self._readers.append(reader)

  def _read(self, name: str, process: subprocess.Popen) -> None:
    def add(line: str) -> None:
      with self._lines_lock:
        self.line_times[name].append(time.monotonic())
        self.output[name].append(line)
    for reader in relay.follow(process, add):
      reader.join()
    process.wait()
    self.exited_at[name] = time.monotonic()

  def address(self, name: str) -> str:
    job, index = name.rsplit("-", 1)
    return self.cluster[job][int(index)]

  def waits_for_peers(self, name: str) -> bool:
    """Whether task ``name`` is past its start-up (TensorFlow's import):
    its address answers, in preflight or as a TensorFlow server."""
    answer = preflight.probe(self.address(name), timeout=0.5)
    return (answer or ("",))[0] in ("tfdist", "server")

  def alive(self, name: str) -> bool:
    return name not in self.exited_at

  def status(self, name: str) -> Optional[int]:
    """The shell-style exit status (128 + N when signal N ended it)."""
    code = self.processes[name].poll()
    return None if code is None else launch.exit_status(code)

  def result(self, name: str) -> Optional[str]:
    """The result JSON line a training task printed, if any."""
    return next((line for line in self.output[name]
                 if line.startswith("{")), None)

  def done_at(self, name: str) -> float:
    """When task ``name`` said its work was done (its result line, or a
    hosting task's "finished training" line); infinity if it never did."""
    for line, at in zip(self.output[name], self.line_times[name]):
      if line.startswith("{") or "chief-0 finished training" in line:
        return at
    return float("inf")

  def training_ended_at(self, name: str = "") -> float:
    """When task ``name`` (default: the primary) ended its last epoch
    (tfdist.bench.log_noise: it must run at ``--verbose=2``); infinity if
    it never did."""
    name = name or self.primary
    end = log_noise.training_end(self.output[name])
    return float("inf") if end is None else self.line_times[name][end]

  def noise_after_training(self, name: str = "") -> Optional[list]:
    """Every task's E-level lines and tracebacks after the last epoch of
    task ``name`` (default: the primary; see :meth:`training_ended_at`),
    each prefixed ``[task] ``; None if it never ended an epoch."""
    ended_at = self.training_ended_at(name)
    if ended_at == float("inf"):
      return None
    return [f"[{name}] {line}" for name in self.processes
            for line, at in zip(self.output[name], self.line_times[name])
            if at > ended_at and log_noise.is_noise(line)]

  def error_lines(self, name: str) -> list:
    return [line for line in self.output[name] if line.startswith("error:")]

  def signal(self, name: str, signum: int) -> None:
    try:
      os.kill(self.processes[name].pid, signum)
    except ProcessLookupError:
      pass

  def wait(self, names, until: float) -> list:
    """Waits until every task of ``names`` exited or time.monotonic()
    passes ``until``; returns the names still alive."""
    while True:
      alive = [name for name in names if self.alive(name)]
      if not alive or time.monotonic() >= until:
        return alive
      time.sleep(0.1)  # a polling interval, not synchronisation

  def kill(self) -> None:
    """SIGKILL to every task's group (a stopped task too); reaps them."""
    for process in self.processes.values():
      try:
        os.killpg(process.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    for reader in self._readers:
      reader.join(timeout=10)


def checkpoints_readable(model_dir: str) -> bool:
  """Whether every checkpoint in ``model_dir`` reads back completely."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  directory = checkpoint_lib.checkpoint_dir(model_dir)
  if not os.path.isdir(directory):
    return True
  prefixes = {name.rsplit(".", 1)[0] for name in os.listdir(directory)
              if name.endswith(".index")}
  try:
    for prefix in prefixes:
      reader = tf.train.load_checkpoint(os.path.join(directory, prefix))
      for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)
  except (tf.errors.OpError, ValueError) as e:
    print(f"unreadable checkpoint in {directory}: {e}", file=sys.stderr)
    return False
  return True
