"""Local processes standing in for pods: started, watched, killed, stopped.

Each pod runs in its own process group (a stop or a kill reaches the
trainer under tfdist.k8s.pod too), dies with the exercise (the kernel
SIGKILLs it if the exercise is killed), and has every line of its stdout and
stderr written whole to the exercise's output, prefixed with its task
(``[worker-1] ...``), as ``kubectl logs`` shows a pod's. What happens to a
process is reported as an event on one queue, which only the exercise's main
loop reads: ``("exit", task, process, status)`` and ``("resumed", task,
step)`` (the trainer restored a checkpoint).

Owns Pods and Kill (when to SIGKILL one, and whether it comes back).
Imports tfdist.training.checkpoint (where checkpoints are), tfdist.errors,
tfdist.cluster.launch (exit statuses, and children that die with their
parent) and tfdist.cluster.relay (whole lines).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import queue
import re
import signal
import subprocess
import threading
import time
from typing import Optional

from tfdist.cluster import launch
from tfdist.cluster import relay
from tfdist.errors import ConfigError
from tfdist.training import checkpoint

# What tfdist.training.checkpoint prints when a trainer restores a checkpoint.
_RESUMED = re.compile(r"resumed from \S+ at step (\d+)")


class Pods:
  """The running pod processes, by task name (``worker-1``)."""

  def __init__(self, *, out, events: queue.SimpleQueue, env: dict):
    self._relay = relay.Relay(out)
    self._events = events
    self._env = env
    self.processes: dict = {}  # task -> the current process
    self.started_at: dict = {}  # task -> time.monotonic() of its start
    self._readers: list = []

  def say(self, message: str) -> None:
    self._relay.write("exercise", message)

  def start(self, task: str, command: list, env: dict) -> None:
    """Starts ``command`` as the pod of ``task`` (a new pod replaces the
    old one, which must have ended)."""
    process = subprocess.Popen(
        command, env={**self._env, **env}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
        # The kernel kills the pod if the exercise dies.
        preexec_fn=launch._die_with_parent)  # pylint: disable=protected-access
    self.processes[task] = process
    self.started_at[task] = time.monotonic()
    self._readers += relay.follow(
        process, lambda line: self._relay_line(task, line))
    threading.Thread(target=self._watch, args=(task, process),
                     daemon=True).start()

  def _relay_line(self, task: str, line: str) -> None:
    self._relay.write(task, line)
    resumed = _RESUMED.search(line)
    if resumed:
      self._events.put(("resumed", task, int(resumed.group(1))))

  def _watch(self, task: str, process: subprocess.Popen) -> None:
    self._events.put(("exit", task, process,
                      launch.exit_status(process.wait())))

  def is_current(self, task: str, process: subprocess.Popen) -> bool:
    return self.processes.get(task) is process

  def running(self, tasks=None) -> list:
    return [t for t, p in self.processes.items()
            if p.poll() is None and (tasks is None or t in tasks)]

  def kill(self, task: str) -> None:
    """SIGKILL to the pod's whole process group."""
    try:
      os.killpg(self.processes[task].pid, signal.SIGKILL)
    except ProcessLookupError:
      pass

  def stop(self, tasks, *, grace: float) -> None:
    """Deletes pods as Kubernetes does: SIGTERM, and SIGKILL after
    ``grace`` seconds; returns once they have exited. Their exits are
    forgotten (``processes`` no longer holds them)."""
    stopping = {t: self.processes.pop(t) for t in list(tasks)
                if t in self.processes}
    for process in stopping.values():
      try:
        os.killpg(process.pid, signal.SIGTERM)
      except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    for task, process in stopping.items():
      try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        self.say(f"pod of {task} ignored SIGTERM for {grace:.0f} s; "
                 "killing it")
        try:
          os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
          pass
        process.wait()

  def close(self) -> None:
    """Kills every pod left and waits for their output."""
    for task in self.running():
      self.kill(task)
    for process in self.processes.values():
      process.wait()
    for reader in self._readers:
      reader.join(timeout=5)


@dataclasses.dataclass(frozen=True)
class Kill:
  """``--kill=POD@SECONDS`` or ``--kill=POD@NUMBERsteps``: SIGKILL once;
  with ``:gone`` after it, every later pod of that name stays Pending (its
  node gone for good, no other fits it)."""
  pod: str
  seconds: Optional[float] = None
  steps: Optional[int] = None
  gone: bool = False

  @classmethod
  def parse(cls, value: str) -> "Kill":
    pod, _, when = value.rpartition("@")
    when, gone, rest = when.partition(":")
    steps = re.fullmatch(r"(\d+)steps", when)
    seconds = re.fullmatch(r"(\d+(\.\d*)?)s?", when)
    if not pod or not (steps or seconds) or (gone and rest != "gone"):
      raise ConfigError(f"--kill={value!r}: write POD@SECONDS or "
                        "POD@NUMBERsteps, then :gone if its replacement "
                        "never schedules, e.g. mnist-worker-1@8 or "
                        "mnist-worker-1@40steps:gone")
    if steps:
      return cls(pod, steps=int(steps.group(1)), gone=bool(gone))
    return cls(pod, seconds=float(seconds.group(1)), gone=bool(gone))

  def describe(self) -> str:
    if self.steps is not None:
      return f"a checkpoint of step {self.steps} or later is in its --model_dir"
    return f"{self.seconds:g} s after it started"


def checkpoint_steps(command: list) -> list:
  """Steps of the checkpoints in the --model_dir of a local command."""
  model_dirs = [a.split("=", 1)[1] for a in command
                if a.startswith("--model_dir=")]
  if not model_dirs:
    return []
  pattern = os.path.join(checkpoint.checkpoint_dir(model_dirs[-1]),
                         "ckpt-*.index")
  return sorted(int(re.search(r"ckpt-(\d+)\.index$", p).group(1))
                for p in glob.glob(pattern))


def without_nccl(command: list) -> list:
  """``command`` with --all_reduce=nccl as ring: no GPU here."""
  return ["--all_reduce=ring" if a == "--all_reduce=nccl" else a
          for a in command]


def has_gpu() -> bool:
  """Whether this machine has an NVIDIA GPU (its device files)."""
  return bool(glob.glob("/dev/nvidia[0-9]*"))
