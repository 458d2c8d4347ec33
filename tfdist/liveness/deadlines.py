"""The deadline of every phase in which a training task waits for its peers.

Owns: which blocking phase of a training task gets which deadline, all derived
from ``--peer_timeout`` (and ``--heartbeat_timeout``), and how each is guarded:
TensorFlow's own knobs where they exist (the coordination service's registration
barrier and heartbeats, see tfdist.liveness.coordination), otherwise a
tfdist.liveness.watchdog phase (the ps chief's stall watch,
tfdist.liveness.stall_watch, watches its steps, a save's wait for them
included). Imports tfdist.cluster.specs, liveness.coordination,
cluster.preflight and liveness.watchdog; TensorFlow only inside functions.

| phase | deadline | guarded by |
|---|---|---|
| preflight (a peer, this task's own port) | `--peer_timeout` | tfdist.cluster.preflight |
| multiworker strategy creation | `--peer_timeout` (+10 s) | TensorFlow's registration barrier; the watchdog (its sentinel) behind it |
| ps cluster creation (chief) | `--peer_timeout` | watchdog |
| set-up (variables, restore) | 2 x `--peer_timeout` | watchdog (ps: and the sentinel) |
| first step (per-worker datasets, tracing included) | 2 x `--peer_timeout` | watchdog (ps: and the sentinel) |
| ps: no step completes (a stalled worker or ps), a save's wait for the steps in flight included | `--stall_timeout`, or 50 x the step time (at least 10 s) | tfdist.liveness.stall_watch (goes on without a stalled worker) |
| a checkpoint write (never a stall) | 2 x `--peer_timeout` + 1 s per 16 MiB written | watchdog (ps: and the sentinel) |
| multiworker start/end barrier | `--peer_timeout` (+10 s) | the barrier's own timeout; watchdog |
| a multiworker peer silent mid-training | `--heartbeat_timeout` | TensorFlow's heartbeats |
| ps worker or ps: the chief silent | `--peer_timeout` | tfdist.training.hosting |

Every expiry is one line naming the phase and the peers not heard from,
and PeerLost's exit status, or SIGALRM's (tfdist.errors) when
TensorFlow held the main thread (under ps it registers each new function
with every task, holding the GIL, and waits for a stopped one; the
tfdist.liveness.sentinel process says the line then).
"""

from __future__ import annotations

import contextlib
import time
from typing import Optional

from tfdist.cluster import preflight
from tfdist.cluster import specs as cluster_lib
from tfdist.liveness import coordination
from tfdist.liveness import watchdog

# After TensorFlow's own deadline (+5 s, the margin it gives the leader's
# verdict to reach the other tasks): the watchdog acts only if it did not.
_BACKSTOP_S = 10.0
# The slowest write a checkpoint's deadline allows for (a network volume
# at its worst), beyond 2 x --peer_timeout: a save of any size has time.
WRITE_BYTES_PER_S = 16 << 20


def peers(task: Optional[cluster_lib.Task]) -> dict:
  """The peers of ``task`` (name -> address); none without a cluster."""
  return preflight.peers_of(task) if task is not None else {}


@contextlib.contextmanager
def multiworker_creation(task: cluster_lib.Task, *, peer_timeout: float,
                         heartbeat_timeout: float):
  """Around MultiWorkerMirroredStrategy's constructor (after preflight).

  The constructor holds the GIL while it waits for the peers to register:
  TensorFlow's registration barrier is the deadline, SIGINT/SIGTERM keep
  their default action (tfdist.liveness.watchdog, ``holds_gil``).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  peers_named = peers(task)
  coordination.configure(cluster_lib.training_cluster(task),
                         register_timeout_s=peer_timeout,
                         heartbeat_timeout_s=heartbeat_timeout)
  with watchdog.phase("strategy creation",
                      deadline_s=peer_timeout + _BACKSTOP_S,
                      peers=peers_named, holds_gil=True):
    try:
      yield
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError,
            tf.errors.AbortedError, tf.errors.InternalError) as e:
      raise coordination.peer_lost(e, "strategy creation",
                                   peers_named) from None


def ps_creation(task: cluster_lib.Task, *, peer_timeout: float):
  """Around ParameterServerStrategy's constructor on the chief, which
  connects to every worker and ps with retries for minutes (GIL free)."""
  return watchdog.phase("cluster creation", deadline_s=peer_timeout,
                        peers=peers(task))


def set_up(task: Optional[cluster_lib.Task], *, peer_timeout: float,
           may_hold_gil: bool):
  """Around the set-up between the strategy and ``fit`` (variables
  created and broadcast, a checkpoint restored).
  ``may_hold_gil``: under ps (see the module docstring)."""
  if task is None:
    return contextlib.nullcontext()
  return watchdog.phase("set-up", deadline_s=2 * peer_timeout,
                        peers=peers(task), may_hold_gil=may_hold_gil)


def barrier(point: str, task: cluster_lib.Task, *, peer_timeout: float):
  """Around a multiworker barrier, whose own timeout is ``peer_timeout``."""
  return watchdog.phase(f"the {point!r} barrier",
                        deadline_s=peer_timeout + _BACKSTOP_S,
                        peers=peers(task), holds_gil=True)


def write_deadline_s(*, peer_timeout: float, nbytes: int) -> float:
  """The deadline of a checkpoint write of ``nbytes`` bytes: 2 x
  ``peer_timeout``, plus a second per WRITE_BYTES_PER_S (16 MiB)."""
  return 2 * peer_timeout + nbytes / WRITE_BYTES_PER_S


def checkpoint_write(task: Optional[cluster_lib.Task], *,
                     peer_timeout: float, nbytes: int,
                     may_hold_gil: bool = False):
  """Around one checkpoint write of ``nbytes`` bytes (variables and
  optimizer slots; under multiworker it may run collectives, under ps it
  writes on the ps tasks). Its deadline grows with the bytes
  (:func:`write_deadline_s`): a write is never a stall. Under ps
  (``may_hold_gil``) TensorFlow may register a new op with every task,
  the stopped one too, while holding the GIL: the sentinel acts then
  (tfdist.liveness.watchdog)."""
  if task is None:
    return contextlib.nullcontext()
  return watchdog.phase(
      "checkpoint save",
      deadline_s=write_deadline_s(peer_timeout=peer_timeout, nbytes=nbytes),
      peers=peers(task), may_hold_gil=may_hold_gil)


def keras_callback(**hooks):
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
            peers=peers(self._task), may_hold_gil=self._may_hold_gil))
      yield
    finally:
      self._phase.close()

  def callback(self):
    return keras_callback(
        on_train_batch_end=lambda callback: self._phase.close(),
        on_train_end=lambda callback: self._phase.close())


class TrainingSignals:
  """Under multiworker: SIGINT and SIGTERM end ``fit`` while TensorFlow
  blocks it.

  SIGTERM normally stops the job at a step boundary (tfdist.training.checkpoint
  records it, the workers agree, save and stop) and SIGINT raises
  KeyboardInterrupt; both need the main thread back in Python. A collective
  waiting for a stopped peer keeps it in C++ until TensorFlow's heartbeat
  deadline. A watchdog phase around ``fit`` (the first step and the saves are
  phases of their own inside it) ends the task (the signal's status) with one
  line when the main thread's handler did not run within the grace
  (tfdist.liveness.watchdog.acknowledge): no checkpoint, as a save would wait
  for the same peer. The grace is ``grace_s``, or 3 x the measured step time if
  longer (a step ends before the handler can run). Use :meth:`around_fit` around
  ``fit`` and :meth:`callback` in its callbacks.
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
    with watchdog.phase("training", peers=peers(self._task),
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
    return keras_callback(
        on_train_batch_begin=lambda callback: setattr(
            self, "_step_began", time.monotonic()),
        on_train_batch_end=lambda callback: self._on_batch_end())
