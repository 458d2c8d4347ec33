"""Deadlines and working signals for phases in which the main thread blocks.

Owns: :func:`phase`, a guard around one blocking phase (strategy creation, the
first step, a barrier, a checkpoint save) that ends the process when the phase
outlives its deadline or ignores SIGINT/SIGTERM. Imports tfdist.errors, cli,
console, cluster.preflight and liveness.sentinel; no TensorFlow.

Why a thread and a wakeup file descriptor: Python runs signal handlers only
on the main thread, between bytecodes, and a main thread blocked inside
TensorFlow's C++ never gets there. CPython's C-level handler still writes
the signal's number to the descriptor given to ``signal.set_wakeup_fd``, so
a daemon thread reading it learns of the signal at once. The main thread
keeps its own handlers and acts when it can (a KeyboardInterrupt leaves the
phase); the thread acts only when it cannot, after ``grace_s``.

The thread needs the GIL. TensorFlow releases it while ops run (steps,
collectives, saves, the ClusterCoordinator's waits) but holds it in
``TFE_EnableCollectiveOps`` (inside MultiWorkerMirroredStrategy's constructor),
where no Python thread runs. For such a phase pass ``holds_gil=True``: SIGINT
and SIGTERM then keep their default action (the kernel ends the process, with
the signal's status: tfdist.errors). In such a phase (and one that
``may_hold_gil``) with a deadline, a tfdist.liveness.sentinel process, which
needs no GIL, says the phase's line at deadline + grace and ends the task by
SIGALRM (SIGALRM's status): the backstop behind TensorFlow's own deadline
(tfdist.liveness.coordination) and the watchdog's thread. A signal handler of
the task only records (:func:`acknowledge`); the watchdog's thread tells the
sentinel.

=========================================  ================================
what happened in the phase                 the process
=========================================  ================================
deadline passed                            one line, PeerLost's status
SIGINT / SIGTERM, phase not left in grace  one line, the signal's status
either, and TensorFlow holds the GIL       the sentinel's line, SIGALRM's
=========================================  ================================

Exit statuses: tfdist.errors.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import sys
import threading
import time
from typing import Iterable, Mapping, Union

from tfdist import cli
from tfdist import console
from tfdist import errors
from tfdist.cluster import preflight
from tfdist.liveness import sentinel as sentinel_lib

_STATUS = {signal.SIGINT: errors.EXIT_INTERRUPTED,
           signal.SIGTERM: errors.EXIT_PREEMPTED}
_stack = []  # the guards of the phases entered, innermost last
# How often the thread looks for an acknowledgement while a signal is
# pending: the sentinel acts 1 s after the grace (tfdist.liveness.sentinel).
_ACK_POLL_S = 0.1


def _names(peers: Union[Mapping[str, str], Iterable[str]]) -> list:
  """The peers not heard from: of a name -> address mapping, those that do
  not answer now (all of them if every one answers)."""
  if isinstance(peers, Mapping):
    return preflight.not_heard_from(peers)
  return list(peers)


class _Guard:
  """The watching thread of one phase; :func:`phase` yields it.

  While a phase nested in it runs, it is suspended (the inner one
  watches); a signal the inner one saw is handed on when it ends.
  """

  def __init__(self, name: str, deadline_s: float,
               peers: Union[Mapping[str, str], Iterable[str]],
               grace_s: float):
    self._name = name
    self._deadline_s = deadline_s
    self._peers = peers
    self.grace_s = grace_s
    self._expires_at = time.monotonic() + deadline_s
    self._signum, self._signalled_at = None, 0.0
    self._seen = self._handled = 0  # signals read, and handled by Python
    self._told = 0  # acknowledgements handed to the sentinel
    self._suspended = False
    self._read, self._write = os.pipe()
    os.set_blocking(self._write, False)  # the C handler must never block
    self._done = threading.Event()
    self._exiting = threading.Lock()
    self._thread = threading.Thread(target=self._watch, daemon=True,
                                    name=f"watchdog: {name}")
    self._sentinel = None

  def start_sentinel(self) -> None:
    """Hands the signals to a tfdist.liveness.sentinel first (after
    :meth:`start`), which acts when this thread cannot."""
    peers = self._peers if isinstance(self._peers, Mapping) else {}
    try:
      self._sentinel = sentinel_lib.Sentinel(
          name=self._name, deadline_s=self._deadline_s,
          grace_s=self.grace_s, peers=peers, forward_fd=self._write)
    except OSError as e:  # no process to spare
      console.info(f"{self._name}: no sentinel ({e}); a task TensorFlow "
                   "freezes here is not ended")
      return
    signal.set_wakeup_fd(self._sentinel.wakeup_fd, warn_on_full_buffer=False)

  def start(self) -> int:
    """Starts watching; returns the wakeup descriptor it replaced."""
    previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
    self._thread.start()
    return previous

  def stop(self, previous_fd: int) -> None:
    with self._exiting:  # not while the thread is ending the process
      self._done.set()
    signal.set_wakeup_fd(previous_fd)
    os.write(self._write, b"\0")  # wakes the thread's select
    self._thread.join()  # then nothing writes to the sentinel any more
    if self._sentinel is not None:
      self._sentinel.stop()
    os.close(self._read)
    os.close(self._write)

  def acknowledge(self) -> None:
    """The main thread's own handler ran for a signal (it was not blocked):
    it acts on that signal, not the guard. Only counts (a signal handler
    calls it); the thread tells the sentinel."""
    self._handled += 1

  def _tell_sentinel(self) -> None:
    if self._sentinel is not None and self._told < self._handled:
      self._told = self._handled
      self._sentinel.acknowledge()

  def _pending(self) -> bool:
    return self._seen > self._handled

  def _notify(self, signum: signal.Signals, count: int = 1) -> None:
    was_pending = self._pending()
    self._seen += count
    if self._pending() and not was_pending:
      self._signum, self._signalled_at = signum, time.monotonic()

  def _suspend(self) -> None:
    self._suspended = True

  def _resume(self, inner: "_Guard") -> None:
    """Watches again, once the phase nested in it ended; a signal that came
    meanwhile gets a new grace (the main thread left that phase)."""
    if inner._seen:  # pylint: disable=protected-access
      self._notify(inner._signum, inner._seen)  # pylint: disable=protected-access
    self._suspended = False
    os.write(self._write, b"\0")  # wakes the thread's select

  def _acts_at(self) -> float:
    if not self._pending():
      return self._expires_at
    return min(self._expires_at, self._signalled_at + self.grace_s)

  def _watch(self) -> None:
    while True:
      self._tell_sentinel()
      until = math.inf if self._suspended else self._acts_at()
      if self._pending():
        until = min(until, time.monotonic() + _ACK_POLL_S)
      timeout = (None if until == math.inf
                 else max(0.0, until - time.monotonic()))
      ready, _, _ = select.select([self._read], [], [], timeout)
      if self._done.is_set():
        return
      if ready:
        for number in os.read(self._read, 64):
          if number in _STATUS:
            self._notify(signal.Signals(number))
      now = time.monotonic()
      if self._suspended or now < self._acts_at():
        continue
      if self._pending() and now >= self._signalled_at + self.grace_s:
        self._end_signalled(self._signum)
      else:
        self._end_expired()

  def _end(self, status: int, say) -> None:
    with self._exiting:
      if self._done.is_set():
        return  # the phase ended meanwhile: the main thread acts
      say()
      exit_now(status)

  def _end_expired(self) -> None:
    lost = errors.PeerLost(
        f"{self._name} did not finish within {self._deadline_s:.0f} s",
        _names(self._peers))
    self._end(errors.EXIT_PEER_LOST, lambda: cli.report(lost))

  def _end_signalled(self, signum: signal.Signals) -> None:
    self._end(_STATUS[signum], lambda: console.info(
        f"{signum.name} during {self._name}, which TensorFlow still blocks "
        f"after {self.grace_s:.0f} s; exiting ({_STATUS[signum]})"))


def acknowledge() -> None:
  """Says that the main thread's own SIGINT/SIGTERM handler ran, to every
  active guard (a save or first-step phase nested in training too): the
  main thread acts on the signal (saves, then stops), none of them. Call
  it from that handler; the one acknowledgement for every guard."""
  for guard in list(_stack):
    guard.acknowledge()


def exit_now(status: int) -> None:
  """Ends the process at once, without TensorFlow's teardown.

  For a task that lost a peer: TensorFlow's exit would first wait (seconds,
  or its shutdown-barrier deadline) for the very peer that is gone.
  """
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access


@contextlib.contextmanager
def _default_signals(signals: tuple):
  """``signals`` end the process by their default action (SIGALRM: the
  sentinel's; SIGINT/SIGTERM: at once)."""
  kept = {s: signal.signal(s, signal.SIG_DFL) for s in signals}
  try:
    yield
  finally:
    for number, handler in kept.items():
      signal.signal(number, handler)


@contextlib.contextmanager
def phase(name: str, *, deadline_s: float = math.inf,
          peers: Union[Mapping[str, str], Iterable[str]] = (),
          grace_s: float = 3.0, holds_gil: bool = False,
          may_hold_gil: bool = False):
  """Guards one blocking phase of the main thread; yields its guard.

  Args:
    name: what the phase does, for the line ("strategy creation").
    deadline_s: seconds after which the process ends (PeerLost; none by
      default: only signals are watched).
    peers: the peers the phase waits for (names, or name -> address),
      named in the line when the deadline passes (of a mapping, those
      that do not answer then).
    grace_s: how long after SIGINT/SIGTERM the main thread may take to
      leave the phase (a KeyboardInterrupt, or finishing a save) before
      the process ends with the signal's status (unless
      :func:`acknowledge` said the main thread's own handler ran).
    holds_gil: the phase blocks in C++ that holds the GIL (see the module
      docstring): SIGINT and SIGTERM keep their default actions; a
      sentinel acts at the deadline.
    may_hold_gil: it may (under ps, registering a function with every
      task, which waits for a stopped one: a save, the first step): the
      watchdog's thread acts when it can, the sentinel when it cannot
      (by SIGALRM).

  Must be entered from the main thread (``signal.set_wakeup_fd``). A phase
  entered inside another one watches alone until it ends.
  """
  if threading.current_thread() is not threading.main_thread():
    raise RuntimeError(f"watchdog phase {name!r} outside the main thread")
  outer = _stack[-1] if _stack else None
  guard = _Guard(name, deadline_s, peers, grace_s)
  if outer is not None:
    outer._suspend()  # pylint: disable=protected-access
  previous_fd = guard.start()
  _stack.append(guard)
  try:
    if (holds_gil or may_hold_gil) and deadline_s != math.inf:
      guard.start_sentinel()
    if holds_gil or may_hold_gil:
      with _default_signals((signal.SIGINT, signal.SIGTERM, signal.SIGALRM)
                            if holds_gil else (signal.SIGALRM,)):
        yield guard
    else:
      yield guard
  finally:
    _stack.pop()
    guard.stop(previous_fd)
    if outer is not None:
      outer._resume(guard)  # pylint: disable=protected-access
