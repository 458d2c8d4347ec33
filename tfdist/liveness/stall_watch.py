"""The ps chief's stall watch: a stalled worker is gone on without.

Owns :class:`StallWatch` (a thread that ends the chief's wait when no step
completes) and how the chief goes on without stalled workers
(:func:`on_stalled_workers`, set by an entry point; :func:`go_on_without`).
Imports tfdist.cli, cluster.specs, console, liveness.deadlines, errors,
cluster.preflight, liveness.sentinel and liveness.watchdog; TensorFlow only
inside methods.
"""

from __future__ import annotations

import collections
import contextlib
import statistics
import threading
import time
from typing import Callable, Optional

from tfdist import cli
from tfdist import console
from tfdist import errors
from tfdist.cluster import preflight
from tfdist.cluster import specs as cluster_lib
from tfdist.liveness import sentinel as sentinel_lib
from tfdist.liveness import watchdog
from tfdist.liveness.deadlines import keras_callback, peers as _peers

_on_stalled_workers = None


def on_stalled_workers(handler: Optional[Callable[[list], None]]) -> None:
  """Sets how a ps chief goes on without stalled workers (None: no way,
  as when the run that set it has ended).

  ``handler(names)`` gets the stalled workers' names (``worker-1``) while
  some other worker still answers, and must not return: the trainers'
  entry point re-executes the chief with a cluster that leaves them out,
  which resumes from the last checkpoint (a library never re-executes a
  process). Without a handler, a stall ends the chief (PeerLost).
  """
  global _on_stalled_workers  # pylint: disable=global-statement
  _on_stalled_workers = handler


def go_on_without(workers: list) -> None:
  """Goes on without ``workers`` (names) as for stalled workers (see
  :func:`on_stalled_workers`): does not return when an entry point said
  how; returns when none did."""
  if _on_stalled_workers is not None and workers:
    _on_stalled_workers(sorted(workers))


class StallWatch:
  """Under ps: ends the chief when its training stops making progress.

  A stalled worker (SIGSTOP, a hung driver, a partition) never fails its step,
  so no TensorFlow error comes: the epoch's end waits forever for the step it
  holds, and a remote call to it (a preemption check) never returns. A thread
  watches the progress: the ClusterCoordinator's pending steps (queued and in
  flight) changing, or ``fit`` calling its batch hooks; when there is none for
  the deadline, it names the peers that no longer answer
  (tfdist.cluster.preflight.probe_all, all at once: a stopped process accepts
  connections but says nothing). When only some workers stalled and an entry
  point said how (:func:`on_stalled_workers`), the chief goes on without them;
  otherwise the process ends (PeerLost). In the first step (tracing; its own
  deadline) and at an epoch's end (evaluation, summaries: slow, but they may
  also wait for a stopped worker's step) it acts only on a stopped peer (one
  that accepts connections and says nothing); a save's wait for the steps in
  flight is watched fully (:meth:`watching`), its write not at all
  (:meth:`writing`: the write has a deadline of its own, by its bytes,
  tfdist.liveness.deadlines). After ``fit`` (the final save, the test
  accuracy) it acts only on a stopped peer too: the chief still needs every
  worker there, since TensorFlow registers and removes each of the chief's
  functions with every task and waits for a stopped one; :meth:`disarm`
  stops every action once the job is told that it is done. A
  ClusterCoordinator whose private attributes it cannot read (another
  TensorFlow) turns the watch off with one line; it never ends a healthy task.

  The deadline: ``stall_timeout`` seconds, or with 0, ``_STEPS`` times the
  measured time between two signs of progress (about a step: the median
  of the last ``_STEPS`` intervals, so that one long wait, such as the
  workers still preparing their data while the first steps are queued,
  does not stretch it), at least ``_MIN_STALL_S``.

  TensorFlow may also hold the GIL (registering a new function with every
  task, a stopped worker too: with several ps tasks, each save's), where
  this thread cannot run either: it beats a tfdist.liveness.sentinel at each
  sample, which ends the chief with one line when no beat comes for
  ``_FROZEN_S`` (or twice the stall deadline).
  """
  _STEPS = 50
  _MIN_STALL_S = 10.0
  _SAMPLE_S = 0.2
  _FROZEN_S = 60.0

  def __init__(self, task: cluster_lib.Task, *, stall_timeout: float = 0.0):
    self._task = task
    self._stall_timeout = stall_timeout
    self._queue = None  # the coordinator's closure queue, once fit began
    self._step_s = 0.0  # measured seconds between signs of progress
    self._intervals = collections.deque(maxlen=self._STEPS)
    self._beats = 0  # batch hooks called
    self._watching = False  # between a first step and an epoch's end
    self._writing = 0  # checkpoint writes in progress: no stall
    # Turns of the watch (on, off, a save begun or ended): an interval
    # across one is no step's (the first step's tracing, an epoch's end,
    # a save), so it is not measured; the clock starts again (see _watch).
    self._turns = 0
    # Disarmed (or turned off): a stall ends in nothing any more.
    self._disarmed = False
    self._sentinel = None  # beaten by the thread: it ran
    self._thread = threading.Thread(target=self._watch, daemon=True,
                                    name="watchdog: stalled peers")

  def deadline_s(self) -> float:
    if self._stall_timeout > 0:
      return self._stall_timeout
    return max(self._MIN_STALL_S, self._STEPS * self._step_s)

  def _progress(self) -> Optional[tuple]:
    """(steps pending, batch hooks called), or None when the coordinator
    cannot be read (the watch turned itself off)."""
    queue = self._queue
    if queue is None:
      return None
    try:
      pending = queue._queue.qsize() + queue.inflight_closure_count  # pylint: disable=protected-access
    except Exception as e:  # pylint: disable=broad-except
      self._turn_off(f"{type(e).__name__}: {e}")
      return None
    return pending, self._beats

  def _turn_off(self, why: str) -> None:
    self._disarmed, self._queue = True, None
    if self._sentinel is not None:
      self._sentinel.stop()  # no beat comes any more: it must not act
    console.info(f"the stall watch is off: this TensorFlow's "
                 f"ClusterCoordinator cannot be read ({why[:150]}); a "
                 "stalled ps worker is not survived")

  def silent_peers(self, *, stopped_only: bool = False) -> dict:
    """The peers (name -> address) that do not answer as a TensorFlow
    server (with ``stopped_only``, only those that accept connections and
    say nothing: not the dead ones the coordinator handles)."""
    peers = _peers(self._task)
    silent = {}
    for name, answer in preflight.probe_all(peers).items():
      kind = (answer or ("gone",))[0]
      if kind == "silent" or (kind != "server" and not stopped_only):
        silent[name] = peers[name]
    return silent

  def _measure(self, seconds: float) -> None:
    # The median of the recent times between two changes of the progress.
    self._intervals.append(seconds)
    self._step_s = statistics.median(self._intervals)

  def _watch(self) -> None:
    seen, since, turns = (0, 0), time.monotonic(), 0
    while True:  # until the process ends (a daemon thread)
      time.sleep(self._SAMPLE_S)  # a sampling interval
      self._sentinel.beat()
      now, progress, watching = (time.monotonic(), self._progress(),
                                 self._watching)
      if progress is None:
        return
      if self._disarmed:
        continue  # beats only: TensorFlow may still hold the GIL
      if self._writing:  # never a stall; the clock starts after it
        seen, since, turns = progress, now, self._turns
        continue
      if progress != seen:
        # Only intervals between steps: one slow first step or save would
        # stretch the deadline many times.
        if watching and turns == self._turns:
          self._measure(now - since)
        seen, since, turns = progress, now, self._turns
        continue
      if turns != self._turns:
        # A turn (a save, an epoch's end) without a step meanwhile: the
        # clock starts again, so the next step's interval is measured (with
        # frequent saves, nearly every one would span a turn).
        since, turns = now, self._turns
        continue
      if now - since < self.deadline_s():
        continue
      silent = self.silent_peers(stopped_only=not watching)
      if self._progress() != seen or self._disarmed:
        continue  # a step completed meanwhile, or the job is done
      if silent or watching:
        self._stalled(silent, now - since)

  def _beat(self, watching: bool = True) -> None:
    self._beats += 1
    if watching != self._watching:
      self._turns += 1
    self._watching = watching

  def _stalled(self, silent: dict, seconds: float) -> None:
    """Goes on without stalled workers when it can, else ends the task."""
    workers = [n for n in _peers(self._task) if n.startswith("worker-")]
    if (_on_stalled_workers is not None and silent
        and all(name in workers for name in silent)
        and len(silent) < len(workers)):
      console.info(
          f"{', '.join(f'{n} at {a}' for n, a in silent.items())} completed "
          f"no step for {seconds:.0f} s (the stall deadline: "
          f"{self.deadline_s():.1f} s); chief-0 goes on without it from "
          "the last checkpoint")
      _on_stalled_workers(sorted(silent))
    watchdog.exit_now(cli.report(errors.PeerLost(
        f"training: no step completed for {seconds:.0f} s (a stalled worker "
        "or ps holds one)",
        [f"{name} at {address}" for name, address in silent.items()])))

  @contextlib.contextmanager
  def watching(self):
    """Watches a wait outside the steps too (a save's wait for the steps
    in flight, even at an epoch's end)."""
    before, self._watching = self._watching, True
    self._turns += 1
    try:
      yield
    finally:
      self._watching = before
      self._turns += 1

  @contextlib.contextmanager
  def writing(self):
    """A checkpoint write: never a stall, however long (its own deadline
    guards it); the deadline's clock starts again after it."""
    self._writing += 1
    self._turns += 1
    try:
      yield
    finally:
      self._writing -= 1
      self._turns += 1

  def disarm(self) -> None:
    """Stops every action: the chief tells the others that the job is
    done (a worker stopped meanwhile must not make it restart)."""
    self._disarmed = True

  def _start(self, model) -> None:
    coordinator = getattr(model, "_cluster_coordinator", None)
    cluster = getattr(coordinator, "_cluster", None)
    self._queue = getattr(cluster, "closure_queue", None)
    if self._queue is None:
      self._turn_off("no model._cluster_coordinator._cluster.closure_queue")
    else:
      # Ends with the process (its pipe closes, on exec too).
      self._sentinel = sentinel_lib.Sentinel(
          name="training", deadline_s=max(self._FROZEN_S,
                                          2 * self.deadline_s()),
          grace_s=3.0, peers=_peers(self._task))
      self._thread.start()

  def callback(self):
    return keras_callback(
        on_train_begin=lambda callback: self._start(callback.model),
        on_train_batch_begin=lambda callback: self._beat(self._watching),
        on_train_batch_end=lambda callback: self._beat(),
        on_epoch_end=lambda callback: self._beat(watching=False),
        # After fit: the final save and the test accuracy, which wait for
        # a stopped task (see the class docstring).
        on_train_end=lambda callback: self._beat(watching=False))
