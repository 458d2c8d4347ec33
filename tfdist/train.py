"""The training loop every trainer shares: one ``run`` for all strategies.

``run`` takes plain arguments (a frozen :class:`TrainConfig`, a model
function, loaded data, this process's task) and returns the result dict that
the trainers print as their final JSON line. TensorFlow is imported only once
a task is known to train, after every input was checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import tempfile
import time
from typing import Callable, Optional

import numpy as np

from tfdist import barrier
from tfdist import checkpoint as checkpoint_lib
from tfdist import cluster as cluster_lib
from tfdist import communication
from tfdist import console
from tfdist import data as data_lib
from tfdist.evaluation import evaluate, weights_digest
from tfdist import schedules
from tfdist import export as export_lib
from tfdist import models as models_lib
from tfdist import precision as precision_lib
from tfdist import strategy as strategy_lib
from tfdist.errors import ConfigError

OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
  """What to train and how; every field has a flag of the same name.

  Attributes:
    strategy: ``mirrored``, ``multiworker`` or ``ps``.
    batch_size: examples per replica per step (the global batch is this
      times the number of replicas in sync; under ps, one worker's step).
    epochs: passes of ``steps_per_epoch`` steps.
    steps_per_epoch: 0 means one pass over the training split.
    learning_rate: the optimizer's learning rate.
    optimizer: ``sgd``, ``momentum`` (0.9) or ``adam``.
    model_dir: where the chief writes checkpoints and its result; None
      writes nothing.
    num_cpu_devices: logical CPU replicas for ``mirrored`` without GPUs.
    all_reduce: ``auto``, ``ring`` or ``nccl`` (multiworker).
    steps_per_execution: steps per ``tf.function`` call (fewer round trips,
      which matters most under ps, where each call is an RPC).
    local_ps_workers: workers of the in-process cluster for ``ps`` without
      TF_CONFIG.
    peer_timeout: seconds to wait for peers before failing.
    eval_batch_size: batch size of the final test-set evaluation.
    seed: seeds the shuffle and the weights.
    verbose: Keras verbosity on the chief (0 silent, 1 bar, 2 line/epoch).
    export_dir: where the chief exports the trained model for serving (a
      new SavedModel version each run, see tfdist.export); None exports
      nothing.
    tflite: also export ``model.tflite`` (float) to ``export_dir``.
    tflite_quantize: also export ``model_quant.tflite`` (dynamic-range
      quantised weights) to ``export_dir``.
  """
  strategy: str = "mirrored"
  batch_size: int = 100
  epochs: int = 5
  steps_per_epoch: int = 0
  learning_rate: float = 0.5
  optimizer: str = "sgd"
  model_dir: Optional[str] = None
  num_cpu_devices: int = 2
  all_reduce: str = "auto"
  steps_per_execution: int = 1
  local_ps_workers: int = 2
  peer_timeout: float = 120.0
  eval_batch_size: int = 1000
  seed: int = 0
  verbose: int = 2
  export_dir: Optional[str] = None
  tflite: bool = False
  tflite_quantize: bool = False
  # Fault tolerance (tfdist.checkpoint): with model_dir set, the chief saves
  # every N steps and/or epochs, keeps the newest ``keep_checkpoints``, and a
  # relaunch resumes from the latest.
  checkpoint_every_steps: int = 0
  checkpoint_every_epochs: int = 1
  keep_checkpoints: int = 3
  preemption_check_steps: int = 10
  # Synchronised batch norm (mirrored, multiworker): statistics over the
  # global batch, not each replica's. Mixed precision: 16-bit compute,
  # float32 variables; tfdist.precision says which 16-bit type and why.
  sync_batch_norm: bool = False
  mixed_precision: bool = False
  mixed_precision_dtype: str = "auto"
  # The large-batch recipe (tfdist.schedules): lr_scaling="linear" multiplies
  # learning_rate by the global batch / base_batch_size; warmup_epochs ramps
  # the rate up linearly over that many epochs.
  lr_scaling: str = "none"
  base_batch_size: int = 100
  warmup_epochs: float = 0.0
  # float16 halves the bytes of the gradient all-reduce (tfdist.communication).
  all_reduce_dtype: str = "float32"
  # Test accuracy after every epoch, outside the timed span: the result's
  # accuracy_curve (accuracy against training time).
  eval_every_epoch: bool = False

  def __post_init__(self):
    if self.strategy not in strategy_lib.STRATEGIES:
      raise ConfigError(f"--strategy={self.strategy!r}: use one of "
                        f"{', '.join(strategy_lib.STRATEGIES)}")
    if self.optimizer not in OPTIMIZERS:
      raise ConfigError(f"--optimizer={self.optimizer!r}: use one of "
                        f"{', '.join(OPTIMIZERS)}")
    if self.all_reduce not in strategy_lib.ALL_REDUCE:
      raise ConfigError(f"--all_reduce={self.all_reduce!r}: use one of "
                        f"{', '.join(strategy_lib.ALL_REDUCE)}")
    for name in ("batch_size", "epochs", "num_cpu_devices",
                 "steps_per_execution", "local_ps_workers", "eval_batch_size"):
      if getattr(self, name) < 1:
        raise ConfigError(f"--{name}={getattr(self, name)}: must be at least 1")
    if self.steps_per_epoch < 0:
      raise ConfigError(f"--steps_per_epoch={self.steps_per_epoch}: must be 0 "
                        "(one pass over the data) or more")
    if not self.learning_rate > 0:
      raise ConfigError(f"--learning_rate={self.learning_rate}: must be > 0")
    if not self.peer_timeout > 0:
      raise ConfigError(f"--peer_timeout={self.peer_timeout}: must be > 0")
    for name in ("tflite", "tflite_quantize"):
      if getattr(self, name) and not self.export_dir:
        raise ConfigError(f"--{name} writes into the export: add "
                          "--export_dir=DIR")
    self.checkpoint_options()  # validates the checkpoint fields
    if self.sync_batch_norm and self.strategy == "ps":
      raise ConfigError("--sync_batch_norm: ps workers train asynchronously, "
                        "each on its own batch, so there is no global batch "
                        "to synchronise over; use --strategy=multiworker or "
                        "mirrored, or drop the flag")
    # Checks the dtype, and float16 under ps, before the TF import.
    precision_lib.policy_name(enabled=self.mixed_precision,
                              dtype=self.mixed_precision_dtype,
                              has_gpu=False, strategy=self.strategy)
    schedules.check(lr_scaling=self.lr_scaling,
                    base_batch_size=self.base_batch_size,
                    warmup_epochs=self.warmup_epochs)
    communication.check(all_reduce_dtype=self.all_reduce_dtype,
                        strategy=self.strategy)

  def checkpoint_options(self) -> checkpoint_lib.CheckpointOptions:
    """The checkpoint schedule these fields describe."""
    return checkpoint_lib.CheckpointOptions(
        every_steps=self.checkpoint_every_steps,
        every_epochs=self.checkpoint_every_epochs,
        keep=self.keep_checkpoints,
        preemption_check_steps=self.preemption_check_steps)


def _optimizer(tf, config: TrainConfig, learning_rate=None):
  """The optimizer; ``learning_rate`` (a float or a schedule) defaults to
  config.learning_rate."""
  keras = tf.keras
  rate = config.learning_rate if learning_rate is None else learning_rate
  sgd, adam = keras.optimizers.SGD, keras.optimizers.Adam
  if config.strategy in communication.ALL_REDUCE_STRATEGIES:
    # Our aggregate_gradients: the all-reduce in config.all_reduce_dtype,
    # and the bytes it sends counted for the result.
    sgd, adam = (communication.optimizer_class(
        c, all_reduce_dtype=config.all_reduce_dtype) for c in (sgd, adam))
  if config.optimizer == "sgd":
    return sgd(rate)
  if config.optimizer == "momentum":
    return sgd(rate, momentum=0.9)
  return adam(rate)


@contextlib.contextmanager
def write_dir(model_dir: Optional[str], task: Optional[cluster_lib.Task]):
  """Yields where this task writes: model_dir on the chief, else a temp dir.

  Under multiworker every worker must take part in saving (a save can run
  collectives), but only the chief's files matter: the others write to a
  temporary directory that is removed afterwards (the TF tutorials' pattern).
  """
  if model_dir is None:
    yield None
  elif task is None or task.is_chief:
    os.makedirs(model_dir, exist_ok=True)
    yield model_dir
  else:
    temp = tempfile.mkdtemp(prefix=f"tfdist-{task.name}-")
    try:
      yield temp
    finally:
      shutil.rmtree(temp, ignore_errors=True)


def _check_writable(model_dir: str, flag: str = "model_dir") -> None:
  try:
    os.makedirs(model_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=model_dir):
      pass
  except OSError as e:
    raise ConfigError(f"--{flag}={model_dir} is not writable "
                      f"({e.strerror}); pick a directory you can write")


def run(config: TrainConfig, *, model_fn: Callable, dataset: data_lib.Dataset,
        task: Optional[cluster_lib.Task], model_name: str = "") -> dict:
  """Trains ``model_fn``'s model on ``dataset`` under ``config.strategy``.

  Call only for a task whose role (see strategy.plan_role) is TRAIN.

  Returns:
    The result: strategy, replicas, batch, timings, test accuracy, the
    weights digest and where the variables live.
  """
  if strategy_lib.plan_role(config.strategy, task) != strategy_lib.TRAIN:
    raise ValueError(f"task {task.name} does not train under "
                     f"{config.strategy}; call strategy.serve instead")
  is_chief = task is None or task.is_chief
  if config.model_dir and is_chief:
    _check_writable(config.model_dir)
  if config.export_dir and is_chief:
    _check_writable(config.export_dir, flag="export_dir")
  # What a checkpoint must match to be resumed: checked before the TF import.
  signature = {"model": model_name, "image_shape": list(dataset.image_shape),
               "num_classes": dataset.num_classes}
  if config.model_dir:
    checkpoint_lib.check_model_dir(config.model_dir, signature=signature)
  if task is not None:
    cluster_lib.check_port_free(task)

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  strategy = strategy_lib.create(
      config.strategy, task=task, num_cpu_devices=config.num_cpu_devices,
      all_reduce=config.all_reduce, local_ps_workers=config.local_ps_workers,
      peer_timeout=config.peer_timeout)
  tf.keras.utils.set_random_seed(config.seed)

  if config.strategy == "ps":
    # Under ps each step is one worker's batch: the coordinator dispatches
    # whole steps to whichever worker is free.
    num_replicas = len(task.cluster["worker"]) if task else config.local_ps_workers
    global_batch = config.batch_size
  else:
    num_replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * num_replicas
  steps_per_epoch = config.steps_per_epoch or len(dataset.train) // global_batch
  if steps_per_epoch < 1:
    raise ConfigError(f"--batch_size={config.batch_size} x {num_replicas} "
                      f"replicas is more than the {len(dataset.train)} "
                      "training examples; use a smaller batch")

  # The large-batch recipe scales with the global batch of one optimizer step.
  learning_rate = schedules.learning_rate(
      config.learning_rate, lr_scaling=config.lr_scaling,
      base_batch_size=config.base_batch_size,
      warmup_epochs=config.warmup_epochs, global_batch_size=global_batch,
      steps_per_epoch=steps_per_epoch)
  dtype_policy = precision_lib.policy_name(
      enabled=config.mixed_precision, dtype=config.mixed_precision_dtype,
      has_gpu=bool(tf.config.list_physical_devices("GPU")),
      strategy=config.strategy)
  with strategy.scope(), precision_lib.policy(dtype_policy):
    model = model_fn(dataset.image_shape, dataset.num_classes)
    if config.sync_batch_norm:
      model = models_lib.with_sync_batch_norm(model)
    model = precision_lib.float32_outputs(model)
    model.compile(
        optimizer=precision_lib.loss_scaled(
            _optimizer(tf, config, learning_rate), dtype_policy),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=config.steps_per_execution)
  if config.strategy == "multiworker":
    # Keras's default ("auto", i.e. "sum") all-reduces every log value across
    # workers after every step: 2 of the 7 collectives of a softmax step. The
    # metrics are global already, so the first replica's logs are the same
    # values (same loss history and weights): 14% more examples/s at 2
    # workers (tfdist.bench, weak scaling).
    model.distribute_reduction_method = "first"
  num_params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
  flops = models_lib.flops_per_example(model)
  if is_chief:
    console.info(f"{model_name or model.name}: {num_params:,} parameters, "
                 f"{flops / 1e6:,.1f} MFLOPs per example ({dtype_policy}"
                 f"{', sync batch norm' if config.sync_batch_norm else ''}); "
                 f"{config.strategy} with {num_replicas} replicas, global "
                 f"batch {global_batch}, {steps_per_epoch} steps x "
                 f"{config.epochs} epochs")

  dataset_fn = data_lib.make_dataset_fn(
      dataset.train, global_batch_size=global_batch,
      shuffle_seed=None if config.strategy == "ps" else config.seed)
  train_data = tf.keras.utils.experimental.DatasetCreator(dataset_fn)

  with write_dir(config.model_dir, task) as out_dir:
    callbacks, start_step, checkpointing = [], 0, None
    if out_dir is not None:
      checkpointing = checkpoint_lib.Checkpointing(
          model=model, strategy=strategy, model_dir=config.model_dir,
          write_dir=out_dir, options=config.checkpoint_options(),
          steps_per_epoch=steps_per_epoch, signature=signature,
          multiworker=config.strategy == "multiworker",
          # ps: a worker or ps task that gets SIGTERM asks the chief to save
          # and stop the job (they cannot save: the chief drives).
          peer_preempted=functools.partial(
              strategy_lib.preemption_requested, task)
          if config.strategy == "ps" and task is not None else None)
      start_step = checkpointing.restore()
      callbacks.append(checkpointing.callback())
    from tfdist import monitor  # pylint: disable=g-import-not-at-top
    # Epoch times (examples/s after warm-up), and with eval_every_epoch the
    # chief's accuracy against training time. Before TensorBoard: it adds
    # examples_per_sec and learning_rate to the logs TensorBoard writes.
    epoch_monitor = monitor.EpochMonitor(
        examples_per_epoch=steps_per_epoch * global_batch,
        evaluate=functools.partial(
            evaluate, model, dataset.test, batch_size=config.eval_batch_size)
        if config.eval_every_epoch and is_chief else None)
    # First: its epoch time must not include other callbacks' epoch-end work.
    callbacks.insert(0, epoch_monitor)
    if out_dir is not None:
      # Summaries go where this task writes: model_dir/logs on the chief
      # (tensorboard --logdir MODEL_DIR), a removed temp dir elsewhere.
      callbacks.append(tf.keras.callbacks.TensorBoard(
          os.path.join(out_dir, "logs"), write_graph=False, profile_batch=0))
    if config.strategy == "multiworker" and task is not None:  # see barrier
      barrier.wait_for_peers("tfdist/train", timeout=config.peer_timeout)
    start = time.perf_counter()
    # A lost peer becomes one line naming it, not a gRPC trace.
    hint = (f"relaunch the job with --model_dir={config.model_dir} to resume "
            "from its last checkpoint" if config.model_dir else
            "relaunch the job (with --model_dir it would resume)")
    try:
      with checkpoint_lib.peer_failures(own_task=task and task.name,
                                        resume_hint=hint):
        history = model.fit(train_data, epochs=config.epochs,
                            steps_per_epoch=steps_per_epoch,
                            callbacks=callbacks,
                            verbose=config.verbose if is_chief else 0)
    except checkpoint_lib.Preempted:
      if config.strategy == "ps":
        # The workers and ps exit 143 with the chief, not a minute later.
        strategy_lib.signal_done(task, preempted=True)
      raise
    train_seconds = time.perf_counter() - start
    if out_dir is not None:
      # Every worker saves (collectives may run); only the chief's survives.
      tf.train.Checkpoint(model=model).write(
          os.path.join(out_dir, "final", "ckpt"))

    test_accuracy = evaluate(model, dataset.test,
                             batch_size=config.eval_batch_size)
    steps = steps_per_epoch * config.epochs
    result = {
        "model": model_name or model.name,
        "strategy": config.strategy,
        "task": task.name if task else "local",
        "num_replicas": num_replicas,
        "global_batch_size": global_batch,
        "steps": steps,
        "train_seconds": round(train_seconds, 3),
        "examples_per_sec": round(
            (steps - start_step) * global_batch / train_seconds, 1),
        # No loss when a relaunch found the training already complete.
        "final_loss": (round(float(history.history["loss"][-1]), 5)
                       if history.history.get("loss") else None),
        "test_accuracy": round(test_accuracy, 5),
        "num_params": num_params,
        "flops_per_example": flops,
        "dtype_policy": dtype_policy,
        "sync_batch_norm": config.sync_batch_norm,
        # Mean training loss of each epoch run here (the chief's view).
        "loss_history": [round(float(x), 5)
                         for x in history.history.get("loss", [])],
        # The rate at the end of each epoch run here: after a resume it
        # continues the schedule (a function of the restored global step).
        "learning_rate_history": [
            round(float(x), 6)
            for x in history.history.get("learning_rate", [])],
        "weights_digest": weights_digest(model),
        "variable_devices": sorted({v.device for v in model.variables}),
        "start_step": start_step,
        "global_step": int(model.optimizer.iterations.numpy()),
        "checkpoint_seconds": round(checkpointing.save_seconds, 3)
                              if checkpointing else 0.0,
        "checkpoints_saved": checkpointing.saves if checkpointing else 0,
    }
    result.update(epoch_monitor.summary())
    # Bytes one replica hands to the gradient all-reduce per step (its dtype
    # decides them); None under ps, which all-reduces nothing.
    # (a LossScaleOptimizer delegates aggregation to the one it wraps).
    result["all_reduce_bytes"] = getattr(
        getattr(model.optimizer, "inner_optimizer", model.optimizer),
        "all_reduce_bytes", None)
    if config.export_dir and is_chief:
      # Only the chief exports, from a plain copy of the weights: no
      # collective runs, so the other tasks need not take part. Under ps this
      # runs before signal_done, while the ps tasks still hold the variables.
      result["export"] = export_lib.export(
          model, model_fn=model_fn, image_shape=dataset.image_shape,
          num_classes=dataset.num_classes, export_dir=config.export_dir,
          tflite=config.tflite, tflite_quantize=config.tflite_quantize,
          digest_fn=weights_digest)
    if out_dir is not None and is_chief:
      with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
  if config.strategy == "ps":
    strategy_lib.signal_done(task)
  if config.strategy == "multiworker" and task is not None:  # see barrier
    barrier.wait_for_peers("tfdist/done", timeout=config.peer_timeout)
  return result
