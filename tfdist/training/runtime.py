"""The strategy runtime: what one training task's strategy means for the loop.

``train.run`` asks a :class:`Runtime`, created once per task by
:func:`create`, instead of branching on the strategy's name: how many
replicas and how large the global batch, how the data is fed and shuffled,
how the optimizer all-reduces, what to set after ``compile`` (the
synchronous runtimes install tfdist.training.fused_step there), what the step
communicates (result fields), where this task writes, how the workers agree
on preemption, and what happens when the job is preempted or done. The three implementations:

* :class:`MirroredRuntime`: one process, replicas on its devices;
* :class:`MultiWorkerRuntime`: every worker trains in sync (all-reduce);
* tfdist.training.ps_runtime's ``ParameterServerRuntime``: the chief
  coordinates, the workers and ps tasks host (tfdist.training.hosting).

tfdist.training.choose_runtime creates the one a task needs. Also here:
:func:`lost_peers`, which turns TensorFlow's errors about a vanished peer into
one-line :class:`~tfdist.errors.PeerLost`, around every phase that meets them
(set-up with the restore, ``fit``, and what follows it: the final save, the
test accuracy, the digests, the export). Imports tfdist.cluster.specs, console,
errors, liveness (barrier, coordination, deadlines, watchdog) and of
tfdist.training: collectives, communication, config, elastic, fused_step,
ps_save and strategy; TensorFlow only inside methods.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import os
import re
import shutil
import signal
import tempfile
import time
from typing import Callable, Optional

from tfdist import console
from tfdist import errors
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import PeerLost, Preempted
from tfdist.liveness import barrier
from tfdist.liveness import coordination
from tfdist.liveness import deadlines
from tfdist.liveness import watchdog
from tfdist.training import collectives
from tfdist.training import communication
from tfdist.training import elastic
from tfdist.training import fused_step as fused_step_lib
from tfdist.training import ps_save
from tfdist.training import strategy as strategy_lib
from tfdist.training.config import TrainConfig

# TensorFlow records a SIGTERM its own handler took within this long (its
# listener looks once a second).
_SIGTERM_RECORDED_S = 1.5
_PEER_RE = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")
_REASON_RE = re.compile(r"(connection|socket|reset|refused|unavailable|"
                        r"aborted|deadline|heartbeat)", re.IGNORECASE)


@contextlib.contextmanager
def lost_peers(*, own_task: Optional[str], resume_hint: str,
               phase: str = "training"):
  """Turns TensorFlow's errors about a lost peer into one-line PeerLost.

  A killed worker or ps shows up as UnavailableError (connection reset,
  socket closed), AbortedError or CancelledError from a collective or an
  RPC, with a long gRPC trace; the user needs to know which task it was and
  what to do.

  Args:
    own_task: this task's name (``chief-0``), never blamed; None locally.
    resume_hint: what to do next, appended to the message.
    phase: what the task was doing, for the message.
  """
  try:
    yield
  except coordination.peer_loss_errors() as e:
    text = str(e)
    peers = [f"{job}-{index}" for job, index in _PEER_RE.findall(text)]
    peers = [p for p in peers if p != own_task]
    who = peers[0] if peers else "a peer task"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = next((line for line in lines if _REASON_RE.search(line)),
                  lines[0] if lines else "")
    raise PeerLost(f"lost {who} during {phase} ({type(e).__name__}: "
                   f"{reason[:150]})", what_next=resume_hint) from None


class Runtime(abc.ABC):
  """One training task under one strategy: what ``train.run`` asks of it.

  Attributes:
    config: the run's settings.
    task: this process's task, or None for a single process.
    strategy: the tf.distribute strategy, once :meth:`start` built it.
    workers_agree: the workers step in sync and agree by all-reduce on
      preemption and on the restored step (tfdist.training.checkpoint).
  """
  workers_agree = False
  # TensorFlow may hold the GIL in set-up and the first step while it waits
  # for a peer (tfdist.liveness.deadlines).
  may_hold_gil = False

  def __init__(self, config: TrainConfig, task: Optional[cluster_lib.Task]):
    self.config = config
    self.task = task
    self.strategy = None
    # What tfdist.training.fused_step.install put on the model, if it runs.
    self.fused = None
    self._kept = None  # the run's objects (keep)
    self._fit_began = False

  @property
  def is_chief(self) -> bool:
    """Whether this task writes checkpoints, summaries and exports."""
    return self.task is None or self.task.is_chief

  @property
  def task_name(self) -> str:
    return self.task.name if self.task else "local"

  def start(self):
    """Builds the strategy (waits for the peers); returns it."""
    config = self.config
    self.strategy = strategy_lib.create(
        config.strategy, task=self.task,
        num_cpu_devices=config.num_cpu_devices, all_reduce=config.all_reduce,
        local_ps_workers=config.local_ps_workers,
        peer_timeout=config.peer_timeout,
        heartbeat_timeout=config.heartbeat_timeout,
        variable_partitioner=self.variable_partitioner())
    return self.strategy

  def variable_partitioner(self):
    """How the strategy splits variables (tfdist.training.sharding); None:
    whole."""
    return None

  @property
  def num_replicas(self) -> int:
    """Replicas that train; after :meth:`start`."""
    return self.strategy.num_replicas_in_sync

  @property
  def global_batch(self) -> int:
    """Examples per optimizer step (--accumulate_steps micro-batches per
    replica each); after :meth:`start`."""
    return fused_step_lib.examples_per_update(
        self.config.batch_size, num_replicas=self.num_replicas,
        accumulate_steps=self.config.accumulate_steps)

  @property
  def shuffle_seed(self) -> Optional[int]:
    """The input pipelines' base seed (see data.make_dataset_fn)."""
    return self.config.seed

  def training_data(self, source):
    """The training data of ``source`` (tfdist.data.sources) as Keras'
    ``fit`` takes it under this strategy."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.keras.utils.experimental.DatasetCreator(
        source.train_dataset_fn(self.global_batch, seed=self.shuffle_seed))

  def optimizer_class(self, base):
    """The Keras optimizer class ``base`` as this strategy applies it."""
    return base

  def configure_compiled(self, model) -> None:
    """Settings of a compiled model that depend on the strategy."""
    del model

  def communication_fields(self, model) -> dict:
    """What one training step communicates, for the result (after fit)."""
    config = self.config
    if self.fused is not None:
      payload = self.fused.all_reduce_bytes
    else:
      # Bytes one replica hands to the optimizer's all-reduce (its dtype
      # decides them); None under ps, which all-reduces nothing. (A
      # LossScaleOptimizer delegates aggregation to the one it wraps.)
      payload = getattr(getattr(model.optimizer, "inner_optimizer",
                                model.optimizer), "all_reduce_bytes", None)
    return {"all_reduce_bytes": payload,
            "collectives_per_step": self._collectives_per_step(model),
            "fused_step": self.fused is not None,
            "accumulate_steps": config.accumulate_steps}

  def _collectives_per_step(self, model) -> Optional[float]:
    """Collectives one replica launches per step, counted in the traced
    training function (None if fit traced none: nothing left to train)."""
    try:
      count = collectives.count_train_function(model)
    except ValueError:
      return None
    try:
      local = len(self.strategy.extended.worker_devices) or 1
    except RuntimeError:  # the default strategy (one device): one replica
      local = 1
    # steps_per_execution steps per traced call (a loop: counted once).
    return count.per_replica(local)

  def peer_preemption(self) -> Optional[Callable[[], Optional[str]]]:
    """A check for another task that asked to stop (SIGTERM), or None."""
    return None

  @contextlib.contextmanager
  def write_dir(self):
    """Yields where this task writes: model_dir on the chief, else a temp dir.

    Under multiworker every worker must take part in saving (a save can run
    collectives), but only the chief's files matter: the others write to a
    temporary directory that is removed afterwards (the TF tutorials'
    pattern).
    """
    model_dir = self.config.model_dir
    if model_dir is None:
      yield None
    elif self.is_chief:
      os.makedirs(model_dir, exist_ok=True)
      yield model_dir
    else:
      temp = tempfile.mkdtemp(prefix=f"tfdist-{self.task.name}-")
      try:
        yield temp
      finally:
        shutil.rmtree(temp, ignore_errors=True)

  def _lost_peers(self, phase: str):
    model_dir = self.config.model_dir
    hint = (f"relaunch the job with --model_dir={model_dir} to resume from "
            "its last checkpoint" if model_dir else
            "relaunch the job (with --model_dir it would resume)")
    return lost_peers(own_task=self.task and self.task.name,
                      resume_hint=hint, phase=phase)

  @contextlib.contextmanager
  def setting_up(self):
    """Around the set-up between the strategy and ``fit`` (variables
    created and broadcast, a checkpoint restored, the start barrier): a
    lost peer (TensorFlow's heartbeats end the collectives) is one line,
    and so is a peer silent past the deadline."""
    with deadlines.set_up(self.task, peer_timeout=self.config.peer_timeout,
                          may_hold_gil=self.may_hold_gil), \
        self._lost_peers("set-up"):
      yield

  @contextlib.contextmanager
  def fitting(self):
    """Around ``fit``: a lost peer is one line; preemption stops the job."""
    self._fit_began = True
    try:
      with self._lost_peers("training"):
        yield
    except Preempted:
      self.on_preempted()
      raise

  @contextlib.contextmanager
  def running(self):
    """Around the whole run (tfdist.lifecycle): a lost peer that no phase
    of its own met (the final save, the test accuracy, the digests, the
    export after ``fit``) is one line too, retried like any lost peer."""
    try:
      yield
    except coordination.peer_loss_errors():
      with self._lost_peers(
          "the end of training (the final save, the test accuracy or the "
          "export)" if self._fit_began else "start-up"):
        raise

  def save_deadline(self, model):
    """A context guarding one checkpoint write of ``model`` and its
    optimizer (tfdist.liveness.deadlines: its deadline grows with the bytes)."""
    return deadlines.checkpoint_write(
        self.task, peer_timeout=self.config.peer_timeout,
        nbytes=ps_save.state_bytes(model), may_hold_gil=self.may_hold_gil)

  def first_step(self) -> deadlines.FirstStep:
    """The guard of ``fit``'s first step (tfdist.liveness.deadlines)."""
    return deadlines.FirstStep(self.task,
                               peer_timeout=self.config.peer_timeout,
                               may_hold_gil=self.may_hold_gil)

  def progress_watches(self, *, saved_step: Callable[[], int],
                       target_step: int) -> list:
    """Callbacks of ``fit`` that end the task when training stalls, or
    when a peer was lost by its end (``saved_step()``: the last
    checkpoint's step then, -1 without one)."""
    del saved_step, target_step
    return []

  def signal_watches(self) -> list:
    """Callbacks of ``fit`` that go last (after the checkpoint's, which
    installs the SIGTERM handler)."""
    return []

  def wait_for_peers(self, point: str) -> None:
    """Returns once every training task has reached ``point`` (a barrier
    with a deadline where several tasks train in sync)."""

  def on_preempted(self) -> None:
    """What else must stop when this task was preempted."""

  def keep(self, objects) -> None:
    """Keeps ``objects`` (the run's model, data, callbacks) as long as this
    runtime: freeing a TensorFlow object runs ops, and under ps a new op
    kind is registered with every task of the cluster, an E-level line for
    each task told that the job is done and gone. The entry point holds
    the runtime until the process exits (tfdist.lifecycle)."""
    self._kept = objects

  def finish(self) -> None:
    """What ends the job once this task's training and outputs are done."""


class _AllReduceRuntime(Runtime):
  """Synchronous training: each step all-reduces the replicas' gradients
  (with --fused_step, once: gradients and metric sums in one buffer)."""

  def optimizer_class(self, base):
    if self.config.fuses_step():
      # The fused step all-reduces; the optimizer applies as told.
      return base
    # Our aggregate_gradients: the all-reduce in config.all_reduce_dtype,
    # and the bytes it sends counted for the result.
    return communication.optimizer_class(
        base, all_reduce_dtype=self.config.all_reduce_dtype)

  def configure_compiled(self, model) -> None:
    # The fused step also reads the first replica's logs (no collective).
    if self.config.fuses_step():
      self.fused = fused_step_lib.install(
          model, all_reduce_dtype=self.config.all_reduce_dtype,
          accumulate_steps=self.config.accumulate_steps)


class MirroredRuntime(_AllReduceRuntime):
  """One process; its devices (or logical CPUs) are the replicas."""


class MultiWorkerRuntime(_AllReduceRuntime):
  """Every worker trains in sync; the chief (or worker 0) writes."""
  workers_agree = True
  _created_at = 0.0  # when the strategy was created (time.monotonic())

  def configure_compiled(self, model) -> None:
    # Keras's default ("auto", i.e. "sum") all-reduces every log value across
    # workers after every step: 2 of the 7 collectives of a softmax step. The
    # metrics are global already, so the first replica's logs are the same
    # values (same loss history and weights): 14% more examples/s at 2
    # workers (tfdist.bench, weak scaling).
    model.distribute_reduction_method = "first"
    super().configure_compiled(model)

  @functools.cached_property
  def _signals(self) -> Optional[deadlines.TrainingSignals]:
    # A collective waiting for a stopped peer blocks the main thread.
    return deadlines.TrainingSignals(self.task) if self.task else None

  @contextlib.contextmanager
  def fitting(self):
    with (self._signals.around_fit() if self._signals
          else contextlib.nullcontext()), super().fitting():
      yield

  def signal_watches(self) -> list:
    return [self._signals.callback()] if self._signals else []

  def wait_for_peers(self, point: str) -> None:
    # A TF_CONFIG cluster: see tfdist.liveness.barrier.
    if self.task is not None:
      with deadlines.barrier(point, self.task,
                             peer_timeout=self.config.peer_timeout):
        barrier.wait_for_peers(f"tfdist/{point}",
                               timeout=self.config.peer_timeout,
                               task_name=self.task.name)
      if point == "start":
        self._stop_if_sigterm_taken()

  def start(self):
    strategy = super().start()
    self._created_at = time.monotonic()
    # The constructor set up TensorFlow's own SIGTERM handler, which would
    # swallow every later SIGTERM: the task's own again.
    handler = signal.getsignal(signal.SIGTERM)
    if handler is not None:
      signal.signal(signal.SIGTERM, handler)
    return strategy

  def _stop_if_sigterm_taken(self) -> None:
    """A SIGTERM that TensorFlow took in strategy creation (see
    tfdist.liveness.coordination.sigterm_taken, which records it within a second
    and a half) ends this worker before training: 143, nothing to save."""
    signalled = coordination.sigterm_taken(
        timeout_s=self._created_at + _SIGTERM_RECORDED_S - time.monotonic())
    if signalled:
      console.info(f"SIGTERM to {signalled} during strategy creation "
                   "(TensorFlow took it); nothing to save yet; exiting (143)")
      watchdog.exit_now(errors.EXIT_PREEMPTED)

  def peer_preemption(self):
    # A SIGTERM TensorFlow's handler took in strategy creation and recorded
    # after the start barrier looked (under load it can take seconds):
    # read again during fit, and acted on at the next agreement.
    # With --min_workers, a task that asks to join stops the members the
    # same way (tfdist.training.elastic), and they regroup with it.
    if self.task is None:
      return None
    joins = self.config.model_dir if self.config.min_workers else None
    return lambda: (coordination.sigterm_taken(timeout_s=0)
                    or (joins and elastic.join_request(joins)) or None)

  def finish(self) -> None:
    # The coordination service's leader (worker 0) must not exit while
    # another task still runs: that task would lose its heartbeat target.
    self.wait_for_peers("done")
