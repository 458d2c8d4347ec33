r"""Runs every task of a cluster spec as a local process.

    python -m tfdist.launch --workers=2 -- python -m trainers.mnist \
        --strategy=multiworker
    python -m tfdist.launch --cluster_spec=cluster_specs/chief_two_workers_ps.json \
        -- python -m trainers.mnist --strategy=ps

``--workers=N`` (and ``--ps=M``: a chief, N workers and M ps tasks) needs
no spec file: every task on this machine, on free ports.

Each task gets its own TF_CONFIG; port 0 in the spec (or every port, with
``--free_ports``) becomes a free loopback port. When the chief (worker 0 if
there is no chief) exits 0, the other tasks get ``--grace`` seconds to finish
and are then stopped. When any task fails, all are stopped and the launcher
exits with that task's status, naming it (``--max_restarts N`` restarts it,
or the whole job when training is synchronous, up to N times, when its
status is one the rendered Kubernetes manifests retry: tfdist.errors.retried;
1-127, the program's own verdict, fails the job at once there and here).
With ``--min_workers=K`` in the command (tfdist.training.elastic), a worker lost
with such a status is neither restarted nor the end of the job while K
others run: they regroup without it.
Ctrl-C or SIGTERM stops everything and exits 130 or 143: the signal handler
only records the signal in a queue the main loop reads, so a signal can
never interrupt the launcher inside a lock or a half-done start or stop. No
child outlives the launcher: each gets SIGKILL from the kernel if the
launcher dies.

Every line a task writes, on its stdout or its stderr, goes to the launcher's
stdout whole, prefixed with its task (``[worker-1] ...``), among the launcher's
own ``[launch] ...`` lines: one log of the job, as ``kubectl logs`` shows a
pod's, and the one stream the tests and tfdist.bench read. A task's two streams
are read as two pipes (tfdist.cluster.relay), so a partial line on its stderr
can never cut its JSON result line; a task's result is its line that starts with
``{`` after the prefix (``grep '^\[chief-0\] {'``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import ipaddress
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Optional, Sequence

from tfdist import cli
from tfdist import errors
from tfdist.cluster import relay
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError

# Start order: servers first, so the chief finds them up.
_ORDER = ("ps", "worker", "chief", "evaluator")
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
  # Runs in the child between fork and exec: if the launcher is killed
  # (even with SIGKILL), the kernel kills the task too, so nothing lingers.
  ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclasses.dataclass
class _Child:
  name: str
  process: subprocess.Popen
  readers: list  # the threads relaying its stdout and stderr


def exit_status(returncode: int) -> int:
  """A shell-style status: 128 + N for a process killed by signal N."""
  return 128 - returncode if returncode < 0 else returncode


def is_this_machine(host: str) -> bool:
  """Whether ``host`` (of a spec's address) is this machine, decided with no
  traffic: a loopback name or address, this machine's hostname, or an
  address one of its interfaces holds (a socket can bind it). Other names
  are not resolved: a multi-machine spec's hostnames are refused as they
  are."""
  host = host.strip("[]")
  if host.lower() in ("localhost", socket.gethostname().lower()):
    return True
  try:
    ip = ipaddress.ip_address(host)
  except ValueError:
    return False
  if ip.is_loopback:
    return True
  family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
  with socket.socket(family, socket.SOCK_STREAM) as s:
    try:
      s.bind((host, 0))  # only an address of this machine binds
      return True
    except OSError:
      return False


def check_local(cluster) -> None:
  """Fails in one line when the spec puts a task on another machine.

  The launcher starts every task here; the tasks of a multi-machine spec
  would wait for hosts it never started (until --peer_timeout).
  """
  away = [f"{name} at {address}" for name, address in (
      (f"{job}-{index}", address)
      for job, addresses in cluster.items()
      for index, address in enumerate(addresses))
          if not is_this_machine(
              cluster_lib.split_address(address, where=name)[0])]
  if away:
    more = f" and {len(away) - 2} more" if len(away) > 2 else ""
    raise ConfigError(
        f"the spec puts {', '.join(away[:2])}{more} on other machines, but "
        "python -m tfdist.launch starts every task on this one; on each "
        "machine start its task with TF_CONFIG=$(python -m tfdist.tfconfig "
        "SPEC TYPE INDEX), or launch a spec of loopback addresses (127.0.0.1)")


def primary_task(cluster) -> str:
  """The task whose exit status is the job's: chief-0, else worker-0."""
  return "chief-0" if "chief" in cluster else "worker-0"


def min_workers_of(command: Sequence[str]) -> int:
  """``--min_workers`` of a training command line (0 when absent): how the
  launcher knows that the job goes on without a lost worker."""
  value = 0
  for i, word in enumerate(command):
    if word.startswith("--min_workers="):
      text = word.split("=", 1)[1]
    elif word == "--min_workers" and i + 1 < len(command):
      text = command[i + 1]
    else:
      continue
    try:
      value = int(text)
    except ValueError:
      value = 0  # the trainer says what is wrong with it
  return value


class Launcher:
  """Starts, watches and stops the local processes of one job."""

  def __init__(self, *, cluster: dict, command: Sequence[str],
               grace: float = 30.0, stop_timeout: float = 10.0,
               env: Optional[dict] = None, out=None, max_restarts: int = 0):
    if not command:
      raise ConfigError("no command to launch; put it after --, e.g. -- "
                        "python -m trainers.mnist --strategy=multiworker")
    if grace < 0:
      raise ConfigError(f"--grace={grace}: must be >= 0")
    if max_restarts < 0:
      raise ConfigError(f"--max_restarts={max_restarts}: must be >= 0")
    # --min_workers in the command: the job goes on without a lost worker.
    self._min_workers = min_workers_of(command)
    self._restarts_left = max_restarts
    self._max_restarts = max_restarts
    self._cluster = cluster
    self._command = list(command)
    self._grace = grace
    self._stop_timeout = stop_timeout
    self._env = dict(os.environ if env is None else env)
    self._relay = relay.Relay(out or sys.stdout)
    self._children: list[_Child] = []
    # What the main loop acts on: ("exit", name, process, returncode) from
    # the watcher threads, ("signal", signum) from the signal handler.
    # SimpleQueue.put is reentrant: safe to call from a signal handler.
    self._events: queue.SimpleQueue = queue.SimpleQueue()
    self._signal: Optional[int] = None  # the first one received
    self._pending: list = []  # exits taken off the queue to look for signals

  def say(self, message: str) -> None:
    self._relay.write("launch", message)

  def start(self) -> None:
    """Starts one process per task of the cluster; stops early once a
    signal has arrived (the main loop then stops what was started)."""
    for task_type in _ORDER:
      for index in range(len(self._cluster.get(task_type, ()))):
        if self._interrupted():
          return
        self._start_task(task_type, index)

  def record_signal(self, signum: int) -> None:
    """The signal handler: only records the signal (no lock, no raise)."""
    self._events.put(("signal", signum))

  def _interrupted(self) -> bool:
    """Reads the events queued so far (exits stay pending, in order); True
    once a signal arrived."""
    while self._signal is None:
      try:
        event = self._events.get_nowait()
      except queue.Empty:
        break
      if event[0] == "signal":
        self._signal = event[1]
      else:
        self._pending.append(event)
    return self._signal is not None

  def _start_task(self, task_type: str, index: int) -> None:
    """Starts (or restarts) one task, with its own TF_CONFIG."""
    name = f"{task_type}-{index}"
    env = dict(self._env)
    env["TF_CONFIG"] = cluster_lib.make_tf_config(self._cluster, task_type,
                                                  index)
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the prefixer at once
    process = subprocess.Popen(
        self._command, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # Own process group: a stop reaches the task's children too, and
        # the terminal's Ctrl-C reaches only the launcher, which then
        # stops every task in order.
        start_new_session=True, preexec_fn=_die_with_parent)
    # The pid lets an operator (or a test) signal one task.
    self.say(f"starting {name} at {self._cluster[task_type][index]} "
             f"(pid {process.pid})")
    readers = relay.follow(
        process, lambda text: self._relay.write(name, text))
    # A restarted task replaces its predecessor.
    self._children = [c for c in self._children if c.name != name]
    self._children.append(_Child(name, process, readers))
    threading.Thread(target=self._watch, args=(name, process),
                     daemon=True).start()

  def _watch(self, name: str, process: subprocess.Popen) -> None:
    self._events.put(("exit", name, process, process.wait()))

  def _running(self) -> list:
    return [c for c in self._children if c.process.poll() is None]

  def stop(self) -> None:
    """SIGTERM to every running task, SIGKILL to those still up after
    ``stop_timeout`` seconds; returns when all have exited."""
    for child in self._running():
      try:
        os.killpg(child.process.pid, signal.SIGTERM)
      except ProcessLookupError:
        pass
    deadline = time.monotonic() + self._stop_timeout
    for child in self._children:
      try:
        child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        self.say(f"{child.name} ignored SIGTERM for {self._stop_timeout:.0f} "
                 "s; killing it")
        try:
          os.killpg(child.process.pid, signal.SIGKILL)
        except ProcessLookupError:
          pass
        child.process.wait()
    self._join_readers()

  def _join_readers(self, timeout: float = 5.0) -> None:
    """Waits until every task's output is relayed (its last lines too),
    for at most ``timeout`` seconds in all: a process a task left behind may
    hold its pipes open."""
    deadline = time.monotonic() + timeout
    for child in self._children:
      for reader in child.readers:
        reader.join(timeout=max(0.0, deadline - time.monotonic()))

  def wait(self) -> int:
    """Waits for the job to end; returns the launcher's exit status."""
    primary = primary_task(self._cluster)
    finished: dict = {}
    grace_deadline = None
    while len(finished) < len(self._children):
      if self._interrupted():
        return 128 + self._signal  # run() stops the tasks
      timeout = None
      if grace_deadline is not None:
        timeout = grace_deadline - time.monotonic()
        if timeout <= 0:
          running = ", ".join(c.name for c in self._running())
          self.say(f"{primary} is done; stopping {running}")
          self.stop()
          return 0
      try:
        event = (self._pending.pop(0) if self._pending
                 else self._events.get(timeout=timeout))
      except queue.Empty:
        continue
      if event[0] == "signal":
        self._signal = event[1]
        continue
      _, name, process, code = event
      if not any(c.process is process for c in self._children):
        continue  # a task stopped for a restart; its successor runs
      finished[name] = code
      if code != 0 and self._goes_on_without(name, exit_status(code)):
        if self._restarts_left > 0:  # as a Job recreates a lost pod
          del finished[name]
          self._restart_alone(name, f"{name} joins the others at their "
                              "next agreement once it runs")
        continue
      if (code != 0 and self._restarts_left > 0 and grace_deadline is None
          and errors.retried(exit_status(code))):
        if self._restart(name, exit_status(code)):
          finished = {}
        else:
          del finished[name]
        continue
      if code != 0:
        status = exit_status(code)
        verdict = ("" if errors.retried(status) or not self._max_restarts
                   else " (the program's verdict: not restarted, as "
                   "Kubernetes would not)")
        self.say(f"{name} failed with exit status {status}{verdict}; "
                 "stopping the other tasks")
        self.stop()
        self.say(f"job failed: {name} exited with status {status}")
        return status
      if name == primary:
        grace_deadline = time.monotonic() + self._grace
    self._join_readers()
    return 0

  def _goes_on_without(self, name: str, status: int) -> bool:
    """With --min_workers=K in the command, a training task lost with a
    status Kubernetes retries is not restarted, nor the job stopped, while
    at least K others run: they regroup without it (tfdist.training.elastic)."""
    training = [c for c in self._running()
                if c.name.rsplit("-", 1)[0] in ("chief", "worker")]
    if (not self._min_workers or not errors.retried(status)
        or len(training) < self._min_workers):
      return False
    self.say(f"{name} exited with status {status}; --min_workers="
             f"{self._min_workers}: the other {len(training)} workers go on "
             "without it")
    return True

  def _restart_alone(self, name: str, why: str) -> None:
    """Restarts one task (--max_restarts permitting), saying ``why``."""
    self._restarts_left -= 1
    self.say(f"{why}; restarting it (restart "
             f"{self._max_restarts - self._restarts_left}/"
             f"{self._max_restarts})")
    task_type, index = name.rsplit("-", 1)
    self._start_task(task_type, int(index))

  def _restart(self, name: str, status: int) -> bool:
    """Restarts a failed task, or the whole job; True for the whole job.

    As Kubernetes would (only a status it retries comes here): under ps
    (asynchronous) the job survives one
    task's loss, so only that task restarts and rejoins; synchronous
    training (multiworker) cannot step without every worker, so every task
    restarts and resumes from the chief's last checkpoint. An evaluator
    never holds the others up: it restarts alone.
    """
    self._restarts_left -= 1
    count = f"restart {self._max_restarts - self._restarts_left}/" \
            f"{self._max_restarts}"
    task_type, index = name.rsplit("-", 1)
    if "ps" in self._cluster or task_type == "evaluator":
      self.say(f"{name} failed with exit status {status}; restarting it "
               f"({count})")
      self._start_task(task_type, int(index))
      return False
    self.say(f"{name} failed with exit status {status}; synchronous training "
             f"cannot go on without it: restarting every task ({count})")
    self.stop()
    self.start()
    return True

  def run(self) -> int:
    """start() and wait(), from the main thread: SIGINT (Ctrl-C) or SIGTERM
    stop every task and return 128 + the signal's number."""
    previous = {signum: signal.signal(signum, lambda n, _: self.record_signal(n))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
      self.start()
      status = self.wait()
      # Also a signal that came while the job was ending decides the status.
      if self._interrupted():
        self.say(f"interrupted ({signal.Signals(self._signal).name}); "
                 "stopping every task")
        self.stop()
        return 128 + self._signal
      return status
    finally:
      for signum, handler in previous.items():
        signal.signal(signum, handler)


def main(argv=None) -> int:
  own, command = cli.split_command(sys.argv[1:] if argv is None else argv)
  parser = cli.OneLineParser(
      prog="python -m tfdist.launch",
      usage="python -m tfdist.launch (--cluster_spec SPEC | --workers N "
            "[--ps M]) [options] -- COMMAND [ARGS...]",
      description="Run every task of a cluster spec as a local process.")
  where = parser.add_mutually_exclusive_group(required=True)
  where.add_argument("--cluster_spec",
                     help="cluster spec JSON, e.g. cluster_specs/two_workers.json")
  where.add_argument("--workers", type=int,
                     help="N workers on this machine, free ports, no spec "
                          "file (with --ps: a chief, N workers, M ps)")
  parser.add_argument("--ps", type=int, default=0,
                      help="with --workers: M parameter-server tasks and a "
                           "chief, for --strategy=ps")
  parser.add_argument("--free_ports", action="store_true",
                      help="replace every port of the spec with a free one")
  parser.add_argument("--max_restarts", type=int, default=0,
                      help="restart a failed task (or, without ps tasks, "
                           "the whole job) up to N times, as Kubernetes "
                           "would: only a status of 128 or more (a signal, "
                           "a lost peer); with --model_dir training "
                           "resumes")
  parser.add_argument("--grace", type=float, default=30.0,
                      help="seconds the other tasks get to finish after the "
                           "chief is done, before they are stopped")
  args = parser.parse_args(own)
  try:
    if args.cluster_spec is None:
      spec = cluster_lib.loopback_cluster(args.workers, args.ps)
    elif args.ps:
      raise ConfigError("--ps=%d: only with --workers; a spec file lists "
                        "its own ps tasks" % args.ps)
    else:
      spec = cluster_lib.load_spec(args.cluster_spec)
    check_local(spec)
    import portpicker  # pylint: disable=g-import-not-at-top
    spec = cluster_lib.assign_ports(spec, portpicker.pick_unused_port,
                                    all_ports=args.free_ports)
    launcher = Launcher(cluster=spec, command=command, grace=args.grace,
                        max_restarts=args.max_restarts)
  except ConfigError as e:
    return cli.report(e)
  return launcher.run()


if __name__ == "__main__":
  sys.exit(main())
