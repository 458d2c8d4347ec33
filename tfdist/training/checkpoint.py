"""Checkpoints, resume and preemption: lose at most the work since a save.

The chief saves the whole training state (model weights, optimizer slots and
``optimizer.iterations``, the global step) with a ``tf.train.CheckpointManager``
under ``model_dir/checkpoints``, every N steps and/or every N epochs, keeping
a bounded number. A relaunch with the same ``model_dir`` restores the latest
one and ``fit`` continues at the saved step, inside an epoch if need be, so
the step counter and any learning-rate schedule (a function of the step)
continue where they stopped.

Per strategy:

* ``mirrored``: the one process saves and restores.
* ``multiworker``: every worker saves at the same steps (a save may run
  collectives), the chief into ``model_dir``, the others into a temporary
  directory that is removed; every worker restores from ``model_dir``, so on
  several machines it must be shared storage (the same rule as tf-keras'
  ``BackupAndRestore``). After restoring, the workers compare their steps and
  fail in one line if they differ.
* ``ps``: only the chief saves and restores; the variables it writes live on
  the ps tasks. Before a save it waits for the scheduled steps
  (``ClusterCoordinator.join``), so the saved step counter is exact; the
  save runs op by op on the ps tasks (tfdist.training.ps_save), and a variable
  sharded over several of them (tfdist.training.sharding) is saved as one, in
  slices, so it restores whole (the evaluator, the export) or in shards.

Preemption: SIGTERM (what Kubernetes sends before evicting a pod) sets a flag;
at the next step boundary the workers agree (one tiny all-reduce under
multiworker) to save, and every one raises :class:`Preempted`, which the
entry point turns into exit status 143, the status Kubernetes retries. Under
ps, a worker or ps task that gets SIGTERM asks the chief instead (see
tfdist.training.hosting.host_until_done); a thread of the chief looks for such
requests about once a second (``peer_preempted``), and at the next step
boundary the chief saves and stops every task with 143. Under multiworker
the same thread looks for a SIGTERM that TensorFlow's own handler took
(tfdist.liveness.coordination.sigterm_taken), which the next agreement acts on.

A save interrupted half-way is never picked up: TensorFlow writes the data
files, then the index, and only then renames the ``checkpoint`` state file
that names the latest checkpoint; :func:`latest` reads that file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from typing import Callable, Optional

from tfdist import console
from tfdist.data import features as features_lib
from tfdist.errors import ConfigError, Preempted
from tfdist.liveness import coordination
from tfdist.liveness import peer_watch
from tfdist.liveness import watchdog
from tfdist.training import ps_save

CHECKPOINT_SUBDIR = "checkpoints"
# Written beside the checkpoints: lets a relaunch with the wrong model say so
# in one line before TensorFlow is even imported.
META_FILE = "tfdist_model.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointOptions:
  """When to save and how many checkpoints to keep.

  Attributes:
    every_steps: save every N global steps; 0 = not by steps.
    every_epochs: save every N epochs; 0 = not by epochs.
    keep: how many checkpoints to keep (older ones are deleted).
    preemption_check_steps: under multiworker, how often (in steps) the
      workers all-reduce their SIGTERM flags; each check is one small
      collective, so checking every step would slow small models.
  """
  every_steps: int = 0
  every_epochs: int = 1
  keep: int = 3
  preemption_check_steps: int = 10

  def __post_init__(self):
    for name in ("every_steps", "every_epochs"):
      if getattr(self, name) < 0:
        raise ConfigError(f"--checkpoint_{name}={getattr(self, name)}: must "
                          "be 0 (off) or more")
    if self.keep < 1:
      raise ConfigError(f"--keep_checkpoints={self.keep}: must be at least 1")
    if self.preemption_check_steps < 1:
      raise ConfigError("--preemption_check_steps="
                        f"{self.preemption_check_steps}: must be at least 1")


def checkpoint_dir(model_dir: str) -> str:
  """Where the managed checkpoints of ``model_dir`` live."""
  return os.path.join(model_dir, CHECKPOINT_SUBDIR)


def latest(model_dir: str) -> Optional[str]:
  """The newest complete checkpoint's prefix in ``model_dir``, or None.

  Complete: named by the ``checkpoint`` state file, which TensorFlow renames
  into place only after the checkpoint's data and index are written.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.train.latest_checkpoint(checkpoint_dir(model_dir))


def model_signature(*, model_name: str, features, num_classes: int) -> dict:
  """What a checkpoint must match to be resumed or evaluated: the model's
  name, its inputs (tfdist.data.features.signature) and classes."""
  return {"model": model_name, "inputs": features_lib.signature(features),
          "num_classes": num_classes}


def check_model_dir(model_dir: str, *, signature: dict) -> None:
  """Fails in one line when ``model_dir`` holds another model's checkpoints.

  Runs before TensorFlow is imported. ``signature`` describes the model
  (name, input shape, classes); it is compared with the one saved beside
  the checkpoints.
  """
  path = os.path.join(checkpoint_dir(model_dir), META_FILE)
  try:
    with open(path) as f:
      saved = json.load(f)
  except FileNotFoundError:
    return
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError(f"--model_dir={model_dir}: {path} is unreadable ({e}); "
                      "remove it, or use a new --model_dir")
  for key, value in signature.items():
    if key in saved and saved[key] != value:
      raise ConfigError(
          f"--model_dir={model_dir} holds checkpoints of a different model "
          f"({key} {saved[key]!r}, this run has {value!r}); use a new "
          "--model_dir, or the same model to resume")


def _write_meta(directory: str, signature: dict) -> None:
  path = os.path.join(directory, META_FILE)
  if not os.path.exists(path):
    temp = path + ".tmp"
    with open(temp, "w") as f:
      json.dump(signature, f)
    os.replace(temp, path)  # atomic: never a half-written file


def _unreadable(path: str) -> Optional[Exception]:
  """What reading every tensor of the checkpoint ``path`` here raises
  (a truncated or garbled file, a missing shard), or None: its files are
  whole."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    reader = tf.train.load_checkpoint(path)
    for key in reader.get_variable_to_shape_map():
      reader.get_tensor(key)
  except (tf.errors.OpError, ValueError, IndexError) as e:
    return e
  return None


def _cannot_restore(model_dir: str, path: str,
                    error: Exception) -> Exception:
  """The one line for a restore that failed with ``error`` (no peer
  lost): "corrupt, remove it" only when the files prove it, "another
  model" for a mismatch of variables or shapes; any other error as it
  is."""
  def line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160]}"

  broken = _unreadable(path)
  if broken is not None:
    return ConfigError(
        f"--model_dir={model_dir}: cannot restore {path}: it is corrupt "
        f"({line(broken)}); remove it (older checkpoints are then used) or "
        "use a new --model_dir")
  if isinstance(error, (ValueError, AssertionError, KeyError)):
    return ConfigError(
        f"--model_dir={model_dir}: cannot restore {path} ({line(error)}); "
        "it is from another model: use a new --model_dir, or the same "
        "model to resume")
  return error


def _replica_sum_fn(strategy):
  """A tf.function: all-reduce (SUM) of one int64 over every replica.

  Compiled once per strategy: run eagerly, each collective under
  multiworker costs ~20 ms; as a function, about a millisecond.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.function
  def replica_sum(value):
    per_replica = strategy.run(lambda: tf.identity(value))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

  return replica_sum


class _InitialCounters:
  # tf-keras' fit asks ``model._training_state`` where to start (epoch and
  # step inside it): the hook BackupAndRestore uses. Answering it resumes
  # in the middle of an epoch, so a relaunch ends at exactly the target step.

  def __init__(self, start_step: int):
    self.start_step = start_step

  def maybe_load_initial_counters_from_ckpt(self, steps_per_epoch,
                                            initial_epoch, mode):
    del initial_epoch, mode
    return divmod(self.start_step, steps_per_epoch)


class Checkpointing:
  """Saves and restores the training state of one compiled Keras model.

  Use: ``start = c.restore()`` after ``compile``, then
  ``fit(..., callbacks=[c.callback()])``.
  """

  def __init__(self, *, model, strategy, model_dir: str, write_dir: str,
               options: CheckpointOptions, steps_per_epoch: int,
               signature: dict, workers_agree: bool,
               peer_preempted: Optional[Callable[[], Optional[str]]] = None,
               save_deadline: Callable = lambda model: (
                   contextlib.nullcontext())):
    """Args:
      model: the compiled Keras model (built, inside strategy.scope()).
      strategy: the tf.distribute strategy the model was built under.
      model_dir: the chief's directory; every worker restores from it.
      write_dir: where this task writes (model_dir on the chief, a
        temporary directory on other workers).
      options: when to save, how many to keep.
      steps_per_epoch: to turn the global step into (epoch, step).
      signature: model description saved beside the checkpoints.
      workers_agree: the workers step in sync (multiworker), so they agree
        by all-reduce on preemption and on the step they restored.
      peer_preempted: returns the name of another task that got SIGTERM, or None
        (ps: tfdist.training.hosting.preemption_requested; multiworker: a
        SIGTERM TensorFlow's own handler took, which then counts as this
        worker's at the next agreement); called about once a second during
        ``fit`` from a thread of its own (tfdist.liveness.peer_watch), as it
        costs remote calls.
      save_deadline: ``save_deadline(model)`` returns the context of one save
        (tfdist.training.runtime: under ps it first waits for the steps in
        flight; the write has a deadline by its bytes).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._model = model
    self._strategy = strategy
    self._model_dir = model_dir
    self._options = options
    self._steps_per_epoch = steps_per_epoch
    self._signature = signature
    self._workers_agree = workers_agree
    self._is_writer = os.path.abspath(write_dir) == os.path.abspath(model_dir)
    # The optimizer's slots exist already (tfdist.training.trainable builds
    # them before the first step), so restoring fills them too.
    self._checkpoint = tf.train.Checkpoint(model=model,
                                           optimizer=model.optimizer)
    self._manager = tf.train.CheckpointManager(
        self._checkpoint, directory=checkpoint_dir(write_dir),
        max_to_keep=options.keep)
    self._preempt_requested = False  # set by the SIGTERM handler only
    self._previous_handler = signal.SIG_DFL
    self._replica_sum = _replica_sum_fn(strategy) if workers_agree else None
    self._peer_preempted = peer_preempted
    self._peer_watch = None  # asks peer_preempted during fit
    self._save_deadline = save_deadline
    self.saved_step = -1
    self.save_seconds = 0.0
    self.saves = 0

  @property
  def step(self) -> int:
    """The global step: ``optimizer.iterations``."""
    return int(self._model.optimizer.iterations.numpy())

  def restore(self) -> int:
    """Restores the latest checkpoint of model_dir; returns the start step.

    Raises:
      ConfigError: the checkpoint is corrupt (its files cannot be read
        here) or belongs to another model, or (multiworker) the workers
        restored different steps. A lost peer's error passes through
        (tfdist.training.runtime.lost_peers: retried).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    path = latest(self._model_dir)
    if path is not None:
      try:
        status = self._checkpoint.read(path)
        # Every variable of this model must come from the checkpoint: a
        # partial match means another model's checkpoint.
        status.assert_existing_objects_matched()
      except coordination.peer_loss_errors():
        raise
      except (tf.errors.OpError, ValueError, AssertionError, IndexError,
              KeyError) as e:
        raise _cannot_restore(self._model_dir, path, e) from None
    start = self.step
    if self._workers_agree:
      total = int(self._replica_sum(tf.constant(start, tf.int64)))
      if total != start * self._strategy.num_replicas_in_sync:
        raise ConfigError(
            f"the workers restored different steps (this one: {start}); "
            f"--model_dir={self._model_dir} must be storage every worker "
            "can read (a shared volume), or empty on all of them")
    if path is not None:
      console.info(f"resumed from {path} at step {start}")
    # Resume inside the epoch (see _InitialCounters).
    self._model._training_state = _InitialCounters(start)  # pylint: disable=protected-access
    self.saved_step = start
    return start

  def save(self) -> Optional[str]:
    """Saves now (every worker must call it at the same step)."""
    start = time.perf_counter()
    # Under ps the guard first waits for the steps in flight, so the saved
    # variables and step counter agree; then the write has its deadline.
    with self._save_deadline(self._model):
      step = self.step
      # Under ps: op by op on the ps tasks (no function registered with
      # a worker, a stopped one too).
      with ps_save.op_by_op(self._model):
        path = self._manager.save(checkpoint_number=step)
    if self._is_writer:
      _write_meta(self._manager.directory, self._signature)
    self.saved_step = step
    self.save_seconds += time.perf_counter() - start
    self.saves += 1
    return path if self._is_writer else None

  def _on_sigterm(self, signum, frame) -> None:
    """The SIGTERM handler during ``fit``: the main thread runs and acts, at the
    next step boundary, whatever phase (a save, the first step) it is in; every
    watchdog guard learns it (tfdist.liveness.watchdog.acknowledge)."""
    del signum, frame
    self._preempt_requested = True
    watchdog.acknowledge()

  def _preemption_agreed(self) -> bool:
    local = self._preempt_requested
    if not self._workers_agree:
      return local
    # multiworker: a SIGTERM that TensorFlow's handler took (peer_preempted)
    # counts as this worker's own; the all-reduce makes every worker stop.
    local = local or self._peer_preemption() is not None
    # Synchronous training: all workers must stop at the same step, or the
    # ones still stepping wait in a collective for the one that left.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return int(self._replica_sum(tf.constant(int(local), tf.int64))) > 0

  def _peer_preemption(self) -> Optional[str]:
    """Another task that asked to stop, as the peer watch last found."""
    return None if self._peer_watch is None else self._peer_watch.found()

  def callback(self):
    """The Keras callback that saves on schedule and on SIGTERM."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    owner = self

    class _Callback(tf.keras.callbacks.Callback):

      def __init__(self):
        super().__init__()
        # Never reads the batch logs (RemoteValues under ps), so tf-keras
        # may call its batch hooks under ParameterServerStrategy.
        self._supports_tf_logs = True

      def on_train_begin(self, logs=None):
        del logs
        self.last_check = owner.saved_step
        # SIGTERM only sets a flag; the save happens at a step boundary,
        # where the state is consistent.
        owner._previous_handler = signal.signal(  # pylint: disable=protected-access
            signal.SIGTERM, owner._on_sigterm)  # pylint: disable=protected-access
        if owner._peer_preempted is not None:  # pylint: disable=protected-access
          owner._peer_watch = peer_watch.PeerWatch(owner._peer_preempted)  # pylint: disable=protected-access

      def on_epoch_begin(self, epoch, logs=None):
        del logs
        self.epoch = epoch

      def on_train_batch_end(self, batch, logs=None):
        del logs
        options = owner._options  # pylint: disable=protected-access
        # The step from Keras' counters, not optimizer.iterations: reading
        # a variable every step is an RPC under ps. Every worker computes
        # the same number, so every worker checks and saves at the same step.
        step = self.epoch * owner._steps_per_epoch + batch + 1  # pylint: disable=protected-access
        # Only multiworker needs a collective to agree; elsewhere the flag
        # is local and free to read every step.
        check = options.preemption_check_steps if owner._workers_agree else 1  # pylint: disable=protected-access
        here = (step // check > self.last_check // check
                and owner._preemption_agreed())  # pylint: disable=protected-access
        self.last_check = step
        # ps: a worker or ps task may have asked the chief to stop.
        # (multiworker: only through the agreement above, and named there)
        if owner._workers_agree:  # pylint: disable=protected-access
          peer = owner._peer_preemption() if here else None  # pylint: disable=protected-access
        else:
          peer = None if here else owner._peer_preemption()  # pylint: disable=protected-access
        if here or peer is not None:
          path = owner.save()
          self.on_train_end()
          raise Preempted(owner.saved_step, path, by=peer)
        every = options.every_steps
        if every and step // every > owner.saved_step // every:
          owner.save()

      def on_epoch_end(self, epoch, logs=None):
        del logs
        every = owner._options.every_epochs  # pylint: disable=protected-access
        step = (epoch + 1) * owner._steps_per_epoch  # pylint: disable=protected-access
        if every and (epoch + 1) % every == 0 and step != owner.saved_step:
          owner.save()

      def on_train_end(self, logs=None):
        del logs
        signal.signal(signal.SIGTERM, owner._previous_handler)  # pylint: disable=protected-access
        owner._model._training_state = None  # pylint: disable=protected-access
        if owner._peer_watch is not None:  # pylint: disable=protected-access
          owner._peer_watch.stop()  # pylint: disable=protected-access

    return _Callback()
