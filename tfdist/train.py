"""The training loop every trainer shares: one ``run`` for all strategies.

``run`` takes plain arguments (a frozen :class:`TrainConfig`, a model
function, loaded data, this process's task) and returns the result dict that
the trainers print as their final JSON line. TensorFlow is imported only once
a task is known to train, after every input was checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Callable, Optional

import numpy as np

from tfdist import cluster as cluster_lib
from tfdist import console
from tfdist import data as data_lib
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


def _optimizer(tf, config: TrainConfig):
  keras = tf.keras
  if config.optimizer == "sgd":
    return keras.optimizers.SGD(config.learning_rate)
  if config.optimizer == "momentum":
    return keras.optimizers.SGD(config.learning_rate, momentum=0.9)
  return keras.optimizers.Adam(config.learning_rate)


def evaluate(model, split: data_lib.Split, *, batch_size: int) -> float:
  """Top-1 accuracy of ``model`` on a split, computed in this process.

  A plain forward pass outside the strategy: the same code reads mirrored
  variables locally and ps variables over RPC, so all three strategies are
  measured identically, on every example exactly once.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  correct = 0
  for start in range(0, len(split), batch_size):
    images = tf.cast(split.images[start:start + batch_size], tf.float32) / 255.0
    logits = model(images, training=False)
    predicted = np.argmax(logits.numpy(), axis=-1)
    correct += int(np.sum(predicted == split.labels[start:start + batch_size]))
  return correct / len(split)


def weights_digest(model) -> str:
  """SHA-256 of all weights: equal digests mean bit-identical replicas."""
  digest = hashlib.sha256()
  for weight in model.get_weights():
    digest.update(np.ascontiguousarray(weight).tobytes())
  return digest.hexdigest()[:16]


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


def _check_writable(model_dir: str) -> None:
  try:
    os.makedirs(model_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=model_dir):
      pass
  except OSError as e:
    raise ConfigError(f"--model_dir={model_dir} is not writable "
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

  with strategy.scope():
    model = model_fn(dataset.image_shape, dataset.num_classes)
    model.compile(
        optimizer=_optimizer(tf, config),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=config.steps_per_execution)
  num_params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
  if is_chief:
    console.info(f"{model_name or model.name}: {num_params:,} parameters; "
                 f"{config.strategy} with {num_replicas} replicas, global "
                 f"batch {global_batch}, {steps_per_epoch} steps x "
                 f"{config.epochs} epochs")

  dataset_fn = data_lib.make_dataset_fn(
      dataset.train, global_batch_size=global_batch,
      shuffle_seed=None if config.strategy == "ps" else config.seed)
  train_data = tf.keras.utils.experimental.DatasetCreator(dataset_fn)

  with write_dir(config.model_dir, task) as out_dir:
    start = time.perf_counter()
    history = model.fit(train_data, epochs=config.epochs,
                        steps_per_epoch=steps_per_epoch,
                        verbose=config.verbose if is_chief else 0)
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
        "examples_per_sec": round(steps * global_batch / train_seconds, 1),
        "final_loss": round(float(history.history["loss"][-1]), 5),
        "test_accuracy": round(test_accuracy, 5),
        "num_params": num_params,
        "weights_digest": weights_digest(model),
        "variable_devices": sorted({v.device for v in model.variables}),
    }
    if out_dir is not None and is_chief:
      with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
  if config.strategy == "ps":
    strategy_lib.signal_done(task)
  return result
