"""The deadline of every phase in which a training task waits for its peers.

Owns: which blocking phase of a training task gets which deadline, all
derived from ``--peer_timeout`` (and ``--heartbeat_timeout``), and how each
is guarded: TensorFlow's own knobs where they exist (the coordination
service's registration barrier and heartbeats, see tfdist.coordination),
otherwise a tfdist.watchdog phase. Imports tfdist.cli, cluster, console,
coordination, errors, preflight and watchdog; TensorFlow only inside
functions.

================================  =====================  ==================
phase                             deadline               guarded by
================================  =====================  ==================
multiworker strategy creation     peer_timeout (+10 s)   registration
                                                         barrier; watchdog
                                                         backstop
ps cluster creation (chief)       peer_timeout           watchdog
set-up (variables, restore)       2 x peer_timeout       watchdog (ps: and
                                                         the sentinel)
ps: no step completes             --stall_timeout, or    StallWatch
                                  50 x step time (10 s+)
first step (per-worker datasets,  2 x peer_timeout       watchdog (ps: and
  tracing included)                                      the sentinel)
checkpoint save                   peer_timeout (ps: +    watchdog (ps: the
                                  the stall deadline)    StallWatch first)
multiworker start/end barrier     peer_timeout (+10 s)   the barrier's own
                                                         timeout; watchdog
a peer silent mid-training        heartbeat_timeout      heartbeats
================================  =====================  ==================

Every expiry is one line naming the phase and the peers not heard from,
and PeerLost's exit status, or SIGALRM's (tfdist.errors) when
TensorFlow held the main thread (under ps it registers each new function
with every task, holding the GIL, and waits for a stopped one; the
tfdist.sentinel process says the line then).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Optional

from tfdist import cli
from tfdist import cluster as cluster_lib
from tfdist import console
from tfdist import coordination
from tfdist import errors
from tfdist import preflight
from tfdist import sentinel as sentinel_lib
from tfdist import watchdog

# After TensorFlow's own deadline (+5 s, the margin it gives the leader's
# verdict to reach the other tasks): the watchdog acts only if it did not.
_BACKSTOP_S = 10.0


def _peers(task: Optional[cluster_lib.Task]) -> dict:
  return preflight.peers_of(task) if task is not None else {}


@contextlib.contextmanager
def multiworker_creation(task: cluster_lib.Task, *, peer_timeout: float,
                         heartbeat_timeout: float):
  """Around MultiWorkerMirroredStrategy's constructor (after preflight).

  The constructor holds the GIL while it waits for the peers to register:
  TensorFlow's registration barrier is the deadline, SIGINT/SIGTERM keep
  their default action (tfdist.watchdog, ``holds_gil``).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  peers = _peers(task)
  coordination.configure(cluster_lib.training_cluster(task),
                         register_timeout_s=peer_timeout,
                         heartbeat_timeout_s=heartbeat_timeout)
  with watchdog.phase("strategy creation",
                      deadline_s=peer_timeout + _BACKSTOP_S, peers=peers,
                      holds_gil=True):
    try:
      yield
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError,
            tf.errors.AbortedError, tf.errors.InternalError) as e:
      raise coordination.peer_lost(e, "strategy creation", peers) from None


def ps_creation(task: cluster_lib.Task, *, peer_timeout: float):
  """Around ParameterServerStrategy's constructor on the chief, which
  connects to every worker and ps with retries for minutes (GIL free)."""
  return watchdog.phase("cluster creation", deadline_s=peer_timeout,
                        peers=_peers(task))


def set_up(task: Optional[cluster_lib.Task], *, peer_timeout: float,
           may_hold_gil: bool):
  """Around the set-up between the strategy and ``fit`` (variables
  created and broadcast, a checkpoint restored).
  ``may_hold_gil``: under ps (see the module docstring)."""
  if task is None:
    return contextlib.nullcontext()
  return watchdog.phase("set-up", deadline_s=2 * peer_timeout,
                        peers=_peers(task), may_hold_gil=may_hold_gil)


def barrier(point: str, task: cluster_lib.Task, *, peer_timeout: float):
  """Around a multiworker barrier, whose own timeout is ``peer_timeout``."""
  return watchdog.phase(f"the {point!r} barrier",
                        deadline_s=peer_timeout + _BACKSTOP_S,
                        peers=_peers(task), holds_gil=True)


@contextlib.contextmanager
def checkpoint_save(task: Optional[cluster_lib.Task], *,
                    peer_timeout: float,
                    stall_watch: Optional[StallWatch] = None):
  """Around a checkpoint save (under multiworker it may run collectives).

  Under ps a save first waits for the steps in flight, one of which a
  stalled worker may hold: pass the chief's ``stall_watch``, which then
  watches the wait and comes first (it goes on without a stalled worker);
  the save's own deadline is ``peer_timeout`` after the stall deadline.
  Such a save may also hold the GIL (TensorFlow registers its function
  with every worker, the stopped one too), where no thread acts: SIGALRM
  ends the process at the deadline then (tfdist.watchdog).
  """
  if task is None:
    yield
    return
  deadline_s = peer_timeout
  watching = contextlib.nullcontext()
  if stall_watch is not None:
    deadline_s += stall_watch.deadline_s()
    watching = stall_watch.watching()
  with watching, watchdog.phase("checkpoint save", deadline_s=deadline_s,
                                peers=_peers(task),
                                may_hold_gil=stall_watch is not None):
    yield


def _keras_callback(**hooks):
  """A Keras callback whose hooks (``on_train_begin=f``...) call ``f`` with
  the callback. It reads no batch logs (RemoteValues under ps), so tf-keras
  may call its batch hooks under ParameterServerStrategy."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  callback = tf.keras.callbacks.Callback()
  callback._supports_tf_logs = True  # pylint: disable=protected-access
  for name, hook in hooks.items():
    setattr(callback, name,
            lambda *args, hook=hook, **kwargs: hook(callback))
  return callback


class FirstStep:
  """Guards ``fit`` from its start to the end of its first step.

  The first step traces the model and runs the first collectives (or, under
  ps, the first remote calls; before it, ``fit`` makes the per-worker
  datasets): where a peer that vanished after start-up is met first. Use
  :meth:`around_fit` around ``fit`` (the phase begins there, and ends
  there when ``fit`` raises before its first step ended) and
  :meth:`callback` first in ``fit``'s callbacks.
  """

  def __init__(self, task: Optional[cluster_lib.Task], *,
               peer_timeout: float, may_hold_gil: bool = False):
    self._task = task
    self._deadline_s = 2 * peer_timeout
    self._may_hold_gil = may_hold_gil
    self._phase = contextlib.ExitStack()

  @contextlib.contextmanager
  def around_fit(self):
    try:
      if self._task is not None:
        self._phase.enter_context(watchdog.phase(
            "first step", deadline_s=self._deadline_s,
            peers=_peers(self._task), may_hold_gil=self._may_hold_gil))
      yield
    finally:
      self._phase.close()

  def callback(self):
    return _keras_callback(
        on_train_batch_end=lambda callback: self._phase.close(),
        on_train_end=lambda callback: self._phase.close())


class TrainingSignals:
  """Under multiworker: SIGINT and SIGTERM end ``fit`` while TensorFlow
  blocks it.

  SIGTERM normally stops the job at a step boundary (tfdist.checkpoint
  records it, the workers agree, save and stop) and SIGINT raises
  KeyboardInterrupt; both need the main thread back in Python. A collective
  waiting for a stopped peer keeps it in C++ until TensorFlow's heartbeat
  deadline. A watchdog phase around ``fit`` (the first step and the saves
  are phases of their own inside it) ends the task (the signal's status)
  with one line when the main thread's handler did not run within the grace
  (tfdist.watchdog.acknowledge): no checkpoint, as a save would wait for
  the same peer. The grace is ``grace_s``, or 3 x the measured step time
  if longer (a step ends before the handler can run). Use
  :meth:`around_fit` around ``fit`` and :meth:`callback` in its callbacks.
  """
  _STEPS = 3

  def __init__(self, task: cluster_lib.Task, *, grace_s: float = 3.0):
    self._task = task
    self._grace_s = grace_s
    self._guard = None
    self._step_began = None
    self._step_s = 0.0

  @contextlib.contextmanager
  def around_fit(self):
    with watchdog.phase("training", peers=_peers(self._task),
                        grace_s=self._grace_s) as guard:
      self._guard = guard
      try:
        yield
      finally:
        self._guard = None

  def _on_batch_end(self) -> None:
    if self._step_began is None or self._guard is None:
      return
    step_s = time.monotonic() - self._step_began
    self._step_s = (step_s if not self._step_s
                    else 0.9 * self._step_s + 0.1 * step_s)
    self._guard.grace_s = max(self._grace_s, self._STEPS * self._step_s)

  def callback(self):
    return _keras_callback(
        on_train_batch_begin=lambda callback: setattr(
            self, "_step_began", time.monotonic()),
        on_train_batch_end=lambda callback: self._on_batch_end())


_on_stalled_workers = None


def on_stalled_workers(handler: Callable[[list], None]) -> None:
  """Sets how a ps chief goes on without stalled workers.

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

  A stalled worker (SIGSTOP, a hung driver, a partition) never fails its
  step, so no TensorFlow error comes: the epoch's end waits forever for the
  step it holds, and a remote call to it (a preemption check) never
  returns. A thread watches the progress: the ClusterCoordinator's pending
  steps (queued and in flight) changing, or ``fit`` calling its batch hooks;
  when there is none for the deadline, it names the peers that no longer
  answer (tfdist.preflight.probe_all, all at once: a stopped process
  accepts connections but says nothing). When only some workers stalled
  and an entry point said how (:func:`on_stalled_workers`), the chief goes
  on without them; otherwise the process ends (PeerLost). In the
  first step (tracing; its own deadline) and at an epoch's end
  (evaluation, summaries: slow, but they may also wait for a stopped
  worker's step) it acts only on a stopped peer
  (one that accepts connections and says nothing); a save is watched
  fully (see :func:`checkpoint_save`). After ``fit`` (the final save, the
  test accuracy) only a stopped ps ends the chief: it needs no worker any
  more, so it never goes on without one; :meth:`disarm` stops every action
  once the job is told that it is done. A ClusterCoordinator whose private
  attributes it cannot read (another TensorFlow) turns the watch off with
  one line; it never ends a healthy task.

  The deadline: ``stall_timeout`` seconds, or with 0, ``_STEPS`` times the
  measured time between two signs of progress (about a step), at least
  ``_MIN_STALL_S``.

  TensorFlow may also hold the GIL (registering a new function with every
  task, a stopped worker too: with several ps tasks, each save's), where
  this thread cannot run either: it beats a tfdist.sentinel at each
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
    self._beats = 0  # batch hooks called
    self._watching = False  # between a first step and an epoch's end
    # Turns of the watch (on, off, a save begun or ended): an interval
    # across one is no step's (the first step's tracing, an epoch's end,
    # a save), so it is not measured (see _watch).
    self._turns = 0
    # What a stall may end in: "workers" (go on without them, or end the
    # chief), "ps" (after fit: end the chief) or "nothing" (disarmed).
    self._acts_on = "workers"
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
    self._acts_on, self._queue = "nothing", None
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
    # A moving average of the time between two changes of the progress.
    self._step_s = seconds if not self._step_s else (
        0.9 * self._step_s + 0.1 * seconds)

  def _watch(self) -> None:
    seen, since, turns = (0, 0), time.monotonic(), 0
    while True:  # until the process ends (a daemon thread)
      time.sleep(self._SAMPLE_S)  # a sampling interval
      self._sentinel.beat()
      now, progress, watching = (time.monotonic(), self._progress(),
                                 self._watching)
      if progress is None:
        return
      if self._acts_on == "nothing":
        continue  # beats only: TensorFlow may still hold the GIL
      if progress != seen:
        # Only intervals between steps: one slow first step or save would
        # stretch the deadline many times.
        if watching and turns == self._turns:
          self._measure(now - since)
        seen, since, turns = progress, now, self._turns
        continue
      if now - since < self.deadline_s():
        continue
      silent = self.silent_peers(stopped_only=not watching)
      if self._progress() != seen or self._acts_on == "nothing":
        continue  # a step completed meanwhile, or the job is done
      if self._acts_on == "ps":
        if any(name.startswith("ps-") for name in silent):
          self._stalled(silent, now - since)
      elif silent or watching:
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
          f"no step for {seconds:.0f} s; chief-0 goes on without it from "
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

  def _fit_ended(self) -> None:
    self._beat(watching=False)
    if self._acts_on == "workers":
      self._acts_on = "ps"

  def disarm(self) -> None:
    """Stops every action: the chief tells the others that the job is
    done (a worker stopped meanwhile must not make it restart)."""
    self._acts_on = "nothing"

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
    return _keras_callback(
        on_train_begin=lambda callback: self._start(callback.model),
        on_train_batch_begin=lambda callback: self._beat(self._watching),
        on_train_batch_end=lambda callback: self._beat(),
        on_epoch_end=lambda callback: self._beat(watching=False),
        # After fit: the final save and the test accuracy read the
        # variables on the ps tasks.
        on_train_end=lambda callback: self._fit_ended())
