"""The sentinel: a small process that ends a task TensorFlow froze.

Owns the out-of-process half of a tfdist.liveness.watchdog phase in which
TensorFlow may hold the GIL (registering a function with every remote
task, which waits for a stopped one): no thread of the task runs then, so
neither the watchdog's thread nor a Python signal handler can say anything.
The sentinel is another process: it prints the phase's one line and sends
the task SIGALRM, whose default action (set by the phase) ends it (its
status: tfdist.errors).
Imports tfdist.errors and tfdist.cluster.preflight (child side); no TensorFlow.

How it learns of signals: the phase makes the sentinel's stdin the task's
``signal.set_wakeup_fd``, to which CPython's C-level handler writes each
signal's number without the GIL. The sentinel hands every byte on to the
watchdog's own descriptor (which acts first when it can), and acts itself
``grace_s`` + 1 s later; at the deadline + ``grace_s`` it names the
peers that do not answer. The phase closes the pipe when it ends (so does
the task's death): the sentinel then exits without a word.

===========================================  =============================
what happened in the phase                   the sentinel
===========================================  =============================
deadline + grace passed                      ``error:`` line, SIGALRM
SIGINT / SIGTERM not acknowledged in grace   a line, SIGALRM
the phase ended (the pipe closed)            exits 0, silent
===========================================  =============================
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Mapping

ACKNOWLEDGED = b"K"  # the task's own handler ran for the last signal
HEARTBEAT = b"H"  # a thread of the task ran: the deadline starts again
_SIGNALS = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
_MARGIN_S = 1.0  # after the watchdog's own moment: it acts first if it can


class Sentinel:
  """The task's side: one sentinel process for one phase."""

  def __init__(self, *, name: str, deadline_s: float, grace_s: float,
               peers: Mapping[str, str], forward_fd: int = -1):
    """Starts the sentinel; forwards signal numbers to ``forward_fd`` (if
    not -1: a sentinel that only watches heartbeats, see :meth:`beat`)."""
    read, self.wakeup_fd = os.pipe()
    os.set_blocking(self.wakeup_fd, False)  # the C handler must never block
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(
        __file__)))
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    try:
      self._process = subprocess.Popen(  # pylint: disable=consider-using-with
          [sys.executable, "-m", "tfdist.liveness.sentinel", str(os.getpid()),
           str(deadline_s), str(grace_s), str(forward_fd), name,
           json.dumps(dict(peers))],
          stdin=read, pass_fds=(forward_fd,) if forward_fd >= 0 else (),
          env=environ)
    finally:
      os.close(read)

  def acknowledge(self) -> None:
    """The task's own handler ran for the last signal (a thread of the
    task says so, never the handler)."""
    try:
      os.write(self.wakeup_fd, ACKNOWLEDGED)
    except OSError:
      pass  # a full pipe: the sentinel is slow to read

  def beat(self) -> None:
    """A thread of the task runs: the deadline counts from now."""
    try:
      os.write(self.wakeup_fd, HEARTBEAT)
    except OSError:
      pass  # a full pipe (the sentinel is slow to read) or a closed one

  def stop(self) -> None:
    """Ends the sentinel: the phase is over. Does not wait for it (a save
    may be shorter than its start-up): it exits on its own, reaped by the
    subprocess module later."""
    os.close(self.wakeup_fd)
    self._process.poll()


def _act(parent: int, line: str) -> None:
  """Says ``line`` in the task's name and ends the task by SIGALRM."""
  if os.getppid() != parent:
    return  # the task is gone
  if select.select([0], [], [], 0)[0] and not os.read(0, 64):
    return  # the phase just ended
  print(line, file=sys.stderr, flush=True)
  os.kill(parent, signal.SIGALRM)


def _expired(name: str, deadline_s: float, peers: dict,
             beating: bool) -> str:
  from tfdist import errors  # pylint: disable=g-import-not-at-top
  from tfdist.cluster import preflight  # pylint: disable=g-import-not-at-top
  lost = errors.PeerLost(
      f"{name}: no thread of the task ran for {deadline_s:.0f} s "
      "(TensorFlow holds its GIL)" if beating else
      f"{name} did not finish within {deadline_s:.0f} s (TensorFlow holds "
      "the task's main thread)",
      preflight.not_heard_from(peers))
  return f"error: {lost}"


def _signalled(name: str, signum: int, grace_s: float) -> str:
  return (f"tfdist: {_SIGNALS[signum]} during {name}, which TensorFlow "
          f"still blocks after {grace_s:.0f} s (holding the task's main "
          "thread); exiting by SIGALRM (142)")


def _watch(deadline_s: float, grace_s: float, forward_fd: int):
  """Hands the task's signal numbers on until the phase ends (None) or the
  sentinel must act: returns the unacknowledged signal, 0 at the deadline,
  or -1 at the deadline after heartbeats."""
  expires_at = time.monotonic() + deadline_s + grace_s
  signum, signalled_at, beating = None, 0.0, False
  while True:
    acts_at = expires_at if signum is None else min(
        expires_at, signalled_at + grace_s + _MARGIN_S)
    if not select.select([0], [], [],
                         max(0.0, acts_at - time.monotonic()))[0]:
      if signum is not None and time.monotonic() < expires_at:
        return signum
      return -1 if beating else 0
    data = os.read(0, 64)
    if not data:
      return None  # the phase ended, or the task is gone
    for number in data:
      if number in _SIGNALS and signum is None:
        signum, signalled_at = number, time.monotonic()
      elif number == ACKNOWLEDGED[0]:
        signum = None
      elif number == HEARTBEAT[0]:
        beating = True
        expires_at = time.monotonic() + deadline_s + grace_s
    if forward_fd < 0:
      continue
    try:
      os.write(forward_fd,
               data.replace(ACKNOWLEDGED, b"").replace(HEARTBEAT, b""))
    except OSError:
      pass  # the watchdog's descriptor is closed: the phase is ending


def main(argv) -> int:
  parent, deadline_s, grace_s = int(argv[1]), float(argv[2]), float(argv[3])
  forward_fd, name, peers = int(argv[4]), argv[5], json.loads(argv[6])
  signum = _watch(deadline_s, grace_s, forward_fd)
  if signum is not None and signum > 0:
    _act(parent, _signalled(name, signum, grace_s))
  elif signum is not None:
    _act(parent, _expired(name, deadline_s, peers, beating=signum < 0))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
