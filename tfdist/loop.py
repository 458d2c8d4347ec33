"""The training loop every trainer shares: build, fit, result.

``run`` takes plain arguments (a frozen :class:`~tfdist.config.TrainConfig`,
a model function, a data source of tfdist.data.sources, this process's task)
and returns the result dict that the trainers print as their final JSON
line. Whatever differs between the strategies it asks of a
:class:`tfdist.runtime.Runtime`. TensorFlow is imported only once a task is
known to train, after every input was checked. Imports tfdist.checkpoint,
cluster, config, console, data.sources, evaluation, export, models,
precision, ps_save, runtime, runtimes, schedules and sharding
(tfdist.monitor once TensorFlow is loaded).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Callable, Optional

import numpy as np

from tfdist import checkpoint as checkpoint_lib
from tfdist import cluster as cluster_lib
from tfdist import console
from tfdist import contract
from tfdist import export as export_lib
from tfdist import models as models_lib
from tfdist import precision as precision_lib
from tfdist import ps_save
from tfdist import runtime as runtime_lib
from tfdist import runtimes
from tfdist import schedules
from tfdist import sharding
from tfdist.data import sources
from tfdist.config import TrainConfig, keras_verbosity
from tfdist.errors import ConfigError
from tfdist.evaluation import accuracy, optimizer_digest, weights_digest


def run(config: TrainConfig, *, model_fn: Callable,
        dataset: sources.Source, task: Optional[cluster_lib.Task],
        model_name: str = "", optimizer_fn: Optional[Callable] = None,
        runtime: Optional[runtime_lib.Runtime] = None) -> dict:
  """Trains ``model_fn``'s model on ``dataset`` under ``config.strategy``.

  Call only for a task whose role (strategy.plan_role) is TRAIN. The model
  function follows tfdist.contract; ``optimizer_fn(learning_rate)`` returns
  the optimizer (default: ``config.optimizer``'s); ``runtime``: the caller's.

  Returns:
    The result: strategy, replicas, batch, timings, test accuracy, the
    weights digest and where the variables live.
  """
  runtime = runtime or runtimes.create(config, task)
  signature = checkpoint_lib.model_signature(
      model_name=model_name, features=dataset.features,
      num_classes=dataset.num_classes)
  _check_before_tensorflow(runtime, signature, dataset.features)

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  runtime.start()
  tf.keras.utils.set_random_seed(config.seed)
  steps_per_epoch = _steps_per_epoch(runtime, dataset.train_examples)
  with runtime.setting_up():
    model, dtype_policy = build_model(runtime, model_fn=model_fn,
                                      dataset=dataset,
                                      steps_per_epoch=steps_per_epoch,
                                      name=model_name,
                                      optimizer_fn=optimizer_fn)
  name = model_name or model.name
  if runtime.is_chief:
    _announce(runtime, model, name=name, dtype_policy=dtype_policy,
              steps_per_epoch=steps_per_epoch)
  train_data = runtime.training_data(dataset)

  with runtime.write_dir() as out_dir:
    with runtime.setting_up():
      checkpointing = (_checkpointing(runtime, model, out_dir, signature,
                                      steps_per_epoch)
                       if out_dir is not None else None)
      start_step = checkpointing.restore() if checkpointing else 0
      epoch_monitor, callbacks = training_callbacks(
          runtime, model, dataset, out_dir=out_dir,
          checkpointing=checkpointing, steps_per_epoch=steps_per_epoch)
      # No task's train_seconds includes waiting for a peer that started
      # late.
      runtime.wait_for_peers("start")
    start = time.perf_counter()
    first_step = runtime.first_step()
    watches = runtime.progress_watches(
        saved_step=lambda: checkpointing.saved_step if checkpointing else -1,
        target_step=steps_per_epoch * config.epochs)
    with runtime.fitting(), first_step.around_fit(), dataset.reading():
      history = model.fit(
          train_data, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
          callbacks=[first_step.callback(), *watches,
                     *callbacks, *runtime.signal_watches()],
          verbose=_verbosity(runtime))
    train_seconds = time.perf_counter() - start
    if out_dir is not None:
      # Every worker saves (collectives may run); only the chief's survives.
      with runtime.save_deadline(model), ps_save.op_by_op(model):
        tf.train.Checkpoint(model=model).write(
            os.path.join(out_dir, "final", "ckpt"))

    result = result_fields(
        runtime, model, history.history, name=name, dataset=dataset,
        dtype_policy=dtype_policy, steps=steps_per_epoch * config.epochs,
        start_step=start_step, train_seconds=train_seconds,
        checkpointing=checkpointing, epoch_monitor=epoch_monitor)
    if runtime.is_chief:
      _write_outputs(runtime, model, result, model_fn=model_fn,
                     dataset=dataset, out_dir=out_dir)
  # Nothing made here may be freed once the others are told (freeing runs
  # ops, which under ps reach every task).
  runtime.keep(dict(locals()))
  runtime.finish()
  return result


def _check_writable(directory: str, flag: str) -> None:
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory):
      pass
  except OSError as e:
    raise ConfigError(f"--{flag}={directory} is not writable "
                      f"({e.strerror}); pick a directory you can write")


def _check_before_tensorflow(runtime: runtime_lib.Runtime,
                             signature: dict, features) -> None:
  """Every check that needs no TensorFlow, so it fails in one line first."""
  config = runtime.config
  if runtime.is_chief:
    for flag in ("model_dir", "export_dir"):
      if getattr(config, flag):
        _check_writable(getattr(config, flag), flag)
  # What a checkpoint must match to be resumed.
  if config.model_dir:
    checkpoint_lib.check_model_dir(config.model_dir, signature=signature)
  if config.strategy == "ps":
    sharding.check_cluster(variable_partitioner=config.variable_partitioner,
                           variable_shards=config.variable_shards,
                           ps_tasks=sharding.num_ps(runtime.task))
  if config.tflite or config.tflite_quantize:
    lists = [f.name for f in features.values() if f.ragged]
    if lists:
      raise ConfigError(f"--tflite: TFLite models take fixed-size inputs, "
                        f"and {lists[0]!r} is a list of ids; drop --tflite "
                        "(the SavedModel serves it)")


def _steps_per_epoch(runtime: runtime_lib.Runtime, num_examples: int) -> int:
  config = runtime.config
  steps = config.steps_per_epoch or num_examples // runtime.global_batch
  if steps < 1:
    raise ConfigError(f"--batch_size={config.batch_size} x "
                      f"{runtime.num_replicas} replicas x "
                      f"--accumulate_steps={config.accumulate_steps} is more "
                      "than the "
                      f"{num_examples} training examples; use a smaller batch")
  return steps


def _verbosity(runtime: runtime_lib.Runtime) -> int:
  # The entry point resolved -1 (auto) with the terminal in mind; a direct
  # caller's -1 gets one line per epoch.
  return keras_verbosity(runtime.config.verbose, is_chief=runtime.is_chief,
                         on_terminal=False)


def make_optimizer(runtime: runtime_lib.Runtime, learning_rate,
                   optimizer_fn: Optional[Callable] = None):
  """The optimizer of config.optimizer (or ``optimizer_fn``'s), at
  ``learning_rate`` (a float or a schedule), as the runtime applies it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras = tf.keras
  if optimizer_fn is not None:
    optimizer = optimizer_fn(learning_rate)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
      raise ConfigError(f"optimizer_fn returned a {type(optimizer).__name__}, "
                        "not a tf.keras optimizer; return e.g. "
                        "tf.keras.optimizers.Adam(learning_rate)")
    # The runtime's subclass only changes how gradients are all-reduced.
    optimizer.__class__ = runtime.optimizer_class(type(optimizer))
    return optimizer
  name = runtime.config.optimizer
  if name in ("sgd", "momentum"):
    return runtime.optimizer_class(keras.optimizers.SGD)(
        learning_rate, momentum=0.9 if name == "momentum" else 0.0)
  base = {"adam": keras.optimizers.Adam,
          "adagrad": keras.optimizers.Adagrad}[name]
  return runtime.optimizer_class(base)(learning_rate)


def build_model(runtime: runtime_lib.Runtime, *, model_fn: Callable,
                dataset: sources.Source, steps_per_epoch: int, name: str = "",
                optimizer_fn: Optional[Callable] = None):
  """The compiled model, in the strategy's scope; returns (model, policy)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config = runtime.config
  # The large-batch recipe scales with the global batch of one optimizer step.
  learning_rate = schedules.learning_rate(
      config.learning_rate, lr_scaling=config.lr_scaling,
      base_batch_size=config.base_batch_size,
      warmup_epochs=config.warmup_epochs,
      global_batch_size=runtime.global_batch, steps_per_epoch=steps_per_epoch)
  dtype_policy = precision_lib.policy_name(
      enabled=config.mixed_precision, dtype=config.mixed_precision_dtype,
      has_gpu=bool(tf.config.list_physical_devices("GPU")),
      strategy=config.strategy)
  with runtime.strategy.scope(), precision_lib.policy(dtype_policy):
    model = contract.build(model_fn, dataset.features, dataset.num_classes,
                           name=name or getattr(model_fn, "__name__", ""))
    if config.sync_batch_norm:
      model = models_lib.with_sync_batch_norm(model)
    sample, _ = next(iter(dataset.test_batches(8)))
    probabilities = contract.returns_probabilities(model, sample)
    model.compile(
        optimizer=precision_lib.loss_scaled(
            make_optimizer(runtime, learning_rate, optimizer_fn),
            dtype_policy),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(
            from_logits=not probabilities),
        metrics=["accuracy"],
        steps_per_execution=config.steps_per_execution)
  runtime.configure_compiled(model)
  return model, dtype_policy


def _model_size(model) -> dict:
  return {"num_params": int(sum(np.prod(v.shape)
                                for v in model.trainable_variables)),
          "flops_per_example": models_lib.flops_per_example(model)}


def _announce(runtime: runtime_lib.Runtime, model, *, name: str,
              dtype_policy: str, steps_per_epoch: int) -> None:
  config = runtime.config
  size = _model_size(model)
  console.info(f"{name}: {size['num_params']:,} parameters, "
               f"{size['flops_per_example'] / 1e6:,.1f} MFLOPs per example "
               f"({dtype_policy}"
               f"{', sync batch norm' if config.sync_batch_norm else ''}); "
               f"{config.strategy} with {runtime.num_replicas} replicas, "
               f"global batch {runtime.global_batch}, {steps_per_epoch} "
               f"steps x {config.epochs} epochs")


def _checkpointing(runtime: runtime_lib.Runtime, model, out_dir: str,
                   signature: dict, steps_per_epoch: int):
  config = runtime.config
  return checkpoint_lib.Checkpointing(
      model=model, strategy=runtime.strategy, model_dir=config.model_dir,
      write_dir=out_dir, options=config.checkpoint_options(),
      steps_per_epoch=steps_per_epoch, signature=signature,
      workers_agree=runtime.workers_agree,
      peer_preempted=runtime.peer_preemption(),
      save_deadline=runtime.save_deadline)


def training_callbacks(runtime: runtime_lib.Runtime, model,
                       dataset: sources.Source, *, out_dir: Optional[str],
                       checkpointing, steps_per_epoch: int):
  """Returns (the epoch monitor, every callback of ``fit`` in order)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfdist import monitor  # pylint: disable=g-import-not-at-top
  config = runtime.config
  # Epoch times (examples/s after warm-up), and with eval_every_epoch the
  # chief's accuracy against training time. First: its epoch time must not
  # include other callbacks' epoch-end work; before TensorBoard: it adds
  # examples_per_sec and learning_rate to the logs TensorBoard writes.
  epoch_monitor = monitor.EpochMonitor(
      examples_per_epoch=steps_per_epoch * runtime.global_batch,
      evaluate=(lambda: accuracy(model, dataset.test_batches(
          config.eval_batch_size)))
      if config.eval_every_epoch and runtime.is_chief else None)
  callbacks = [epoch_monitor]
  if checkpointing is not None:
    callbacks.append(checkpointing.callback())
  if out_dir is not None:
    # Summaries go where this task writes: model_dir/logs on the chief
    # (tensorboard --logdir MODEL_DIR), a removed temp dir elsewhere.
    callbacks.append(tf.keras.callbacks.TensorBoard(
        os.path.join(out_dir, "logs"), write_graph=False, profile_batch=0))
  return epoch_monitor, callbacks


def _rounded(values, digits: int) -> list:
  return [round(float(x), digits) for x in values]


def result_fields(runtime: runtime_lib.Runtime, model, history: dict, *,
                  name: str, dataset: sources.Source, dtype_policy: str,
                  steps: int, start_step: int, train_seconds: float,
                  checkpointing, epoch_monitor) -> dict:
  """The result of a finished ``fit`` (evaluates the test split).

  ``epoch_monitor`` adds its fields (monitor.EpochMonitor.summary).
  """
  config = runtime.config
  # Every test example exactly once, whatever the source.
  test_accuracy = accuracy(model,
                           dataset.test_batches(config.eval_batch_size))
  return {
      "model": name,
      "strategy": config.strategy,
      "task": runtime.task_name,
      "num_replicas": runtime.num_replicas,
      "global_batch_size": runtime.global_batch,
      "steps": steps,
      "train_seconds": round(train_seconds, 3),
      "examples_per_sec": round(
          (steps - start_step) * runtime.global_batch / train_seconds, 1),
      # No loss when a relaunch found the training already complete.
      "final_loss": (round(float(history["loss"][-1]), 5)
                     if history.get("loss") else None),
      "test_accuracy": round(test_accuracy, 5),
      **_model_size(model),
      "model_outputs": contract.outputs_kind(model),
      "dtype_policy": dtype_policy,
      "sync_batch_norm": config.sync_batch_norm,
      # Mean training loss of each epoch run here (the chief's view).
      "loss_history": _rounded(history.get("loss", []), 5),
      # The rate at the end of each epoch run here: after a resume it
      # continues the schedule (a function of the restored global step).
      "learning_rate_history": _rounded(history.get("learning_rate", []), 6),
      "weights_digest": weights_digest(model),
      "optimizer_digest": optimizer_digest(model),
      "variable_devices": sorted({v.device for v in model.variables}),
      # Under ps: the sharded variables and the bytes each ps task holds.
      **sharding.result_fields(model),
      "start_step": start_step,
      "global_step": int(model.optimizer.iterations.numpy()),
      "checkpoint_seconds": round(checkpointing.save_seconds, 3)
                            if checkpointing else 0.0,
      "checkpoints_saved": checkpointing.saves if checkpointing else 0,
      **epoch_monitor.summary(),
      # all_reduce_bytes, collectives_per_step, fused_step, accumulate_steps.
      **runtime.communication_fields(model),
  }


def _write_outputs(runtime: runtime_lib.Runtime, model, result: dict, *,
                   model_fn: Callable, dataset: sources.Source,
                   out_dir: Optional[str]) -> None:
  """The chief's export (into ``result``) and result.json."""
  config = runtime.config
  if config.export_dir:
    # Only the chief exports, from a plain copy of the weights: no
    # collective runs, so the other tasks need not take part. Under ps this
    # runs before the runtime's finish, while the ps tasks still hold the
    # variables.
    result["export"] = export_lib.export(
        model, model_fn=model_fn, features=dataset.features,
        num_classes=dataset.num_classes, export_dir=config.export_dir,
        probabilities=result["model_outputs"] == "probabilities",
        tflite=config.tflite, tflite_quantize=config.tflite_quantize,
        digest_fn=weights_digest)
  if out_dir is not None:
    with open(os.path.join(out_dir, "result.json"), "w") as f:
      json.dump(result, f, indent=1)
