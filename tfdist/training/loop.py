"""The training loop every trainer shares: build, fit, result.

``run`` takes plain arguments (a frozen
:class:`~tfdist.training.config.TrainConfig`, the user's model
(tfdist.model.contract.UserModel), a data source of tfdist.data.sources, this
process's task) and returns the result dict that the trainers print as their
final JSON line. Whatever differs between the strategies it asks of a
:class:`tfdist.training.runtime.Runtime` (tfdist.training.choose_runtime makes
it); the model it trains is tfdist.training.trainable's. TensorFlow is imported
only once a task is known to train, after every input was checked. The test
metrics (tfdist.training.measurement) are measured on a plain copy of the
trained model (tfdist.training.sharding.plain_copy), outside the strategy; the
export is written from another. Imports tfdist.cluster.specs, console, errors,
data.sources, model (contract, models, tasks), serving (export, signatures) and
of tfdist.training: checkpoint, choose_runtime, config, elastic, measurement,
ps_save, runtime, sharding and trainable (tfdist.training.monitor once
TensorFlow is loaded).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from typing import Callable, Optional

import numpy as np

from tfdist import console
from tfdist.cluster import specs as cluster_lib
from tfdist.data import sources
from tfdist.errors import ConfigError
from tfdist.model import contract
from tfdist.model import models as models_lib
from tfdist.model import tasks
from tfdist.serving import export as export_lib
from tfdist.serving import signatures
from tfdist.training import checkpoint as checkpoint_lib
from tfdist.training import choose_runtime
from tfdist.training import elastic
from tfdist.training import measurement
from tfdist.training import ps_save
from tfdist.training import runtime as runtime_lib
from tfdist.training import sharding
from tfdist.training import trainable as trainable_lib
from tfdist.training.config import TrainConfig, keras_verbosity
from tfdist.training.measurement import optimizer_digest, weights_digest


def run(config: TrainConfig, *, user: contract.UserModel,
        dataset: sources.Source, task: Optional[cluster_lib.Task],
        runtime: Optional[runtime_lib.Runtime] = None) -> dict:
  """Trains ``user``'s model on ``dataset`` under ``config.strategy``.

  Call only for a task whose role (strategy.plan_role) is TRAIN;
  ``runtime``: the caller's (default: a new one).

  Returns:
    The result: strategy, replicas, batch, timings, the task and its test
    metrics, the weights digest and where the variables live.
  """
  runtime = runtime or choose_runtime.create(config, task)
  signature = checkpoint_lib.model_signature(
      model_name=user.name, features=dataset.features,
      num_classes=dataset.num_outputs)
  _check_before_tensorflow(runtime, signature, dataset)

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  _start(runtime)
  tf.keras.utils.set_random_seed(config.seed)
  steps_per_epoch = _steps_per_epoch(runtime, dataset.train_examples)
  with runtime.setting_up():
    trainable = trainable_lib.build(runtime, user=user, source=dataset,
                                    steps_per_epoch=steps_per_epoch)
  model = trainable.model
  config = runtime.config  # capped batch; Keras' step if the fused cannot
  name = user.name or model.name
  if runtime.is_chief:
    _announce(runtime, trainable, name=name, steps_per_epoch=steps_per_epoch)
  with runtime.write_dir() as out_dir:
    (train_data, measure, checkpointing, start_step, epoch_monitor,
     callbacks) = _prepare(runtime, trainable, user=user, dataset=dataset,
                           out_dir=out_dir, signature=signature,
                           steps_per_epoch=steps_per_epoch)
    start = time.perf_counter()
    first_step = runtime.first_step()
    watches = runtime.progress_watches(
        saved_step=lambda: checkpointing.saved_step if checkpointing else -1,
        target_step=steps_per_epoch * config.epochs)
    with runtime.fitting(), first_step.around_fit(), dataset.reading():
      history = model.fit(
          train_data, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
          callbacks=[first_step.callback(), *watches, *callbacks,
                     *[tasks.made(c, tf.keras.callbacks.Callback, "callback")
                       for c in user.callbacks],
                     *runtime.signal_watches()],
          verbose=_verbosity(runtime))
    train_seconds = time.perf_counter() - start
    if out_dir is not None:
      # Every worker saves (collectives may run); only the chief's survives.
      with runtime.save_deadline(model), ps_save.op_by_op(model):
        tf.train.Checkpoint(model=model).write(
            os.path.join(out_dir, "final", "ckpt"))

    result = result_fields(
        runtime, trainable, history.history, name=name,
        test_metrics=measure(), steps=steps_per_epoch * config.epochs,
        start_step=start_step, train_seconds=train_seconds,
        checkpointing=checkpointing, epoch_monitor=epoch_monitor)
    if config.min_workers:  # every membership change (tfdist.training.elastic)
      result.update(elastic.result_fields(config.model_dir))
    if runtime.is_chief:
      _write_outputs(runtime, model, result, model_fn=user.model_fn,
                     dataset=dataset, out_dir=out_dir)
  # Nothing made here may be freed once the others are told (freeing runs
  # ops, which under ps reach every task).
  runtime.keep(dict(locals()))
  runtime.finish()
  return result


def _prepare(runtime: runtime_lib.Runtime, trainable, *,
             user: contract.UserModel, dataset: sources.Source,
             out_dir: Optional[str], signature: dict,
             steps_per_epoch: int) -> tuple:
  """What fit needs once the model is built, under the set-up phase's
  deadline (each step here may wait for a peer): (the training data, the
  test measurement, the checkpointing or None, the step restored, the epoch
  monitor, the callbacks), every peer there."""
  model = trainable.model
  with runtime.setting_up():
    train_data = runtime.training_data(dataset)
    measure = test_measurement(model, user=user, source=dataset,
                               objective=trainable.objective,
                               batch_size=runtime.config.eval_batch_size)
    checkpointing = (_checkpointing(runtime, model, out_dir, signature,
                                    steps_per_epoch)
                     if out_dir is not None else None)
    start_step = checkpointing.restore() if checkpointing else 0
    epoch_monitor, callbacks = training_callbacks(
        runtime, model, measure, out_dir=out_dir,
        checkpointing=checkpointing, steps_per_epoch=steps_per_epoch)
    # No task's train_seconds includes waiting for a peer that started
    # late.
    runtime.wait_for_peers("start")
  return (train_data, measure, checkpointing, start_step, epoch_monitor,
          callbacks)


def _check_writable(directory: str, flag: str) -> None:
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory):
      pass
  except OSError as e:
    raise ConfigError(f"--{flag}={directory} is not writable "
                      f"({e.strerror}); pick a directory you can write")


def _check_before_tensorflow(runtime: runtime_lib.Runtime,
                             signature: dict, dataset) -> None:
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
    signatures.check_tflite(dataset.features)
  if config.eval_every_epoch and dataset.task == "regression":
    raise ConfigError("--eval_every_epoch records test accuracy after each "
                      "epoch, which a regression has not; drop the flag (the "
                      "result has the test metrics)")


def _start(runtime: runtime_lib.Runtime) -> None:
  """Creates the strategy; TensorFlow started before it is one line."""
  try:
    runtime.start()
  except RuntimeError as e:
    if "after being initialized" not in str(e):
      raise
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    found = len(tf.config.list_logical_devices("CPU"))
    raise ConfigError(
        "TensorFlow was started before tfdist could set up --num_cpu_devices="
        f"{runtime.config.num_cpu_devices} replicas (a tf.keras metric or "
        "layer made before tfdist.main/fit starts it, e.g. metrics=[tf.keras."
        "metrics.AUC()]): pass the class or a function making it (metrics="
        "[tf.keras.metrics.AUC] or [lambda: tf.keras.metrics.AUC(...)]), or "
        f"train on the {found} CPU device{'s' if found > 1 else ''} it has "
        f"(--num_cpu_devices={found})") from None


def _cap_batch(runtime: runtime_lib.Runtime, num_examples: int) -> None:
  """A batch larger than the training split is capped to it (one step per
  epoch), said in one line; fewer examples than replicas is an error."""
  config = runtime.config
  if config.steps_per_epoch or num_examples >= runtime.global_batch:
    return
  shares = runtime.global_batch // config.batch_size  # replicas x K
  times = (f" x {runtime.num_replicas} replicas" if shares > 1 else "") + (
      f" x {config.accumulate_steps} micro-batches"
      if config.accumulate_steps > 1 else "")
  capped = num_examples // shares
  if capped < 1:
    raise ConfigError(f"{num_examples} training examples cannot give each "
                      f"of{times[2:]} one; use fewer (--num_cpu_devices, "
                      "--accumulate_steps) or more data")
  if runtime.is_chief:
    console.info(f"--batch_size={config.batch_size}{times} is more than the "
                 f"{num_examples} training examples: batch {capped} instead "
                 "(one step per epoch)")
  runtime.config = dataclasses.replace(config, batch_size=capped)


def _steps_per_epoch(runtime: runtime_lib.Runtime, num_examples: int) -> int:
  """--steps_per_epoch, or one pass over the examples (the batch capped to
  them first)."""
  _cap_batch(runtime, num_examples)
  config = runtime.config
  return config.steps_per_epoch or num_examples // runtime.global_batch


def _verbosity(runtime: runtime_lib.Runtime) -> int:
  # The entry point resolved -1 (auto) with the terminal in mind; a direct
  # caller's -1 gets one line per epoch.
  return keras_verbosity(runtime.config.verbose, is_chief=runtime.is_chief,
                         on_terminal=False)


def test_measurement(model, *, user: contract.UserModel, source,
                     objective: tasks.Objective,
                     batch_size: int) -> Callable[[], dict]:
  """A function measuring the test metrics of ``model`` as it is then:
  on a plain copy (built now, outside the strategy; each measurement
  copies the current weights into it), with fresh copies of its metrics."""
  plain = sharding.plain_copy(model, model_fn=user.model_fn,
                              features=source.features,
                              num_classes=source.num_outputs)
  copies = tasks.test_copies(model)

  def measure() -> dict:
    plain.set_weights(sharding.whole_weights(model))
    # Every test example exactly once, whatever the source.
    return measurement.test_metrics(
        plain, source.test_batches(batch_size), task=objective.task,
        outputs=objective.outputs, metrics=copies)

  return measure


def _model_size(model) -> dict:
  return {"num_params": int(sum(np.prod(v.shape)
                                for v in model.trainable_variables)),
          "flops_per_example": models_lib.flops_per_example(model)}


def _announce(runtime: runtime_lib.Runtime, trainable, *, name: str,
              steps_per_epoch: int) -> None:
  config = runtime.config
  size = _model_size(trainable.model)
  console.info(f"{name}: {size['num_params']:,} parameters, "
               f"{size['flops_per_example'] / 1e6:,.1f} MFLOPs per example "
               f"({trainable.dtype_policy}"
               f"{', sync batch norm' if config.sync_batch_norm else ''}); "
               f"{config.strategy} with {runtime.num_replicas} replicas, "
               f"global batch {runtime.global_batch}, {steps_per_epoch} "
               f"steps x {config.epochs} epochs")
  console.info(trainable_lib.describe(trainable))


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
                       measure: Callable[[], dict], *,
                       out_dir: Optional[str], checkpointing,
                       steps_per_epoch: int):
  """Returns (the epoch monitor, tfdist's callbacks of ``fit`` in order)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfdist.training import monitor  # pylint: disable=g-import-not-at-top
  config = runtime.config

  def test_accuracy() -> float:
    metrics = measure()
    return metrics.get("accuracy", metrics.get("binary_accuracy"))

  # Epoch times (examples/s after warm-up), and with eval_every_epoch the
  # chief's accuracy against training time. First: its epoch time must not
  # include other callbacks' epoch-end work; before TensorBoard: it adds
  # examples_per_sec and learning_rate to the logs TensorBoard writes.
  epoch_monitor = monitor.EpochMonitor(
      examples_per_epoch=steps_per_epoch * runtime.global_batch,
      evaluate=test_accuracy
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


# What tfdist adds to the logs of fit: not the model's training metrics.
_OWN_LOGS = ("loss", "learning_rate", "examples_per_sec", "test_accuracy")


def _task_fields(trainable, history: dict, test_metrics: dict) -> dict:
  """The task, what trained it, and its training and test metrics."""
  objective = trainable.objective
  optimizer = trainable.model.optimizer
  fields = {"ml_task": objective.task,
            "model_outputs": objective.outputs,
            "loss": tasks.loss_name(objective.loss),
            "optimizer": type(getattr(optimizer, "inner_optimizer",
                                      optimizer)).__name__,
            "train_metrics": {k: round(float(v[-1]), 5)
                              for k, v in history.items()
                              if k not in _OWN_LOGS and v},
            "test_metrics": measurement.rounded(test_metrics)}
  if objective.task == "classification":
    fields["test_accuracy"] = fields["test_metrics"]["accuracy"]
  return fields


def result_fields(runtime: runtime_lib.Runtime, trainable, history: dict, *,
                  name: str, test_metrics: dict, steps: int, start_step: int,
                  train_seconds: float, checkpointing, epoch_monitor) -> dict:
  """The result of a finished ``fit``.

  ``epoch_monitor`` adds its fields (monitor.EpochMonitor.summary).
  """
  config, model = runtime.config, trainable.model
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
      **_task_fields(trainable, history, test_metrics),
      **_model_size(model),
      "dtype_policy": trainable.dtype_policy,
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
    plain = sharding.plain_copy(model, model_fn=model_fn,
                                features=dataset.features,
                                num_classes=dataset.num_outputs)
    result["export"] = export_lib.export(
        plain, source=dataset,
        export_dir=config.export_dir,
        probabilities=result["model_outputs"] == "probabilities",
        tflite=config.tflite, tflite_quantize=config.tflite_quantize,
        digest_fn=weights_digest)
  if out_dir is not None:
    with open(os.path.join(out_dir, "result.json"), "w") as f:
      json.dump(result, f, indent=1)
