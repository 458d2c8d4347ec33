"""The model as a training task trains it: built, compiled, its step chosen.

:func:`build` calls the model function inside the strategy's scope
(tfdist.model.contract), resolves what it trains with (tfdist.model.tasks: the
task's loss and metric, or the user's own, given or compiled), picks the
optimizer (:func:`choose_optimizer`), compiles, and decides the step: the fused
step (tfdist.training.fused_step) where the strategy all-reduces and it can
carry the loss and every metric, else Keras' own, said in one line.

Which optimizer trains, in order:

1. ``optimizer_fn(learning_rate)``, when the program gives one;
2. ``--optimizer`` (or ``optimizer=`` of tfdist.fit), when set;
3. the optimizer the model was compiled with, at its own learning rate
   (``--learning_rate``, ``--lr_scaling`` and ``--warmup_epochs`` are then
   a ConfigError: they would not apply);
4. SGD at ``--learning_rate`` (0.5 when unset).

When 1 or 2 replace a compiled optimizer, one line says so. Imports
tfdist.console, model.contract, errors, training.fused_step, model.models,
training.precision, training.runtime, training.schedules and model.tasks;
TensorFlow lazily.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from tfdist import console
from tfdist.errors import ConfigError
from tfdist.model import contract
from tfdist.model import models as models_lib
from tfdist.model import tasks
from tfdist.training import fused_step as fused_step_lib
from tfdist.training import precision as precision_lib
from tfdist.training import runtime as runtime_lib
from tfdist.training import schedules

DEFAULT_OPTIMIZER = "sgd"
DEFAULT_LEARNING_RATE = 0.5


def named_optimizer(name: str, learning_rate):
  """The Keras optimizer ``--optimizer=name`` means, at ``learning_rate``."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras = tf.keras
  if name in ("sgd", "momentum"):
    return keras.optimizers.SGD(
        learning_rate, momentum=0.9 if name == "momentum" else 0.0)
  return {"adam": keras.optimizers.Adam,
          "adagrad": keras.optimizers.Adagrad}[name](learning_rate)


def _learning_rate(runtime: runtime_lib.Runtime, steps_per_epoch: int):
  """tfdist's rate: --learning_rate after the large-batch recipe."""
  config = runtime.config
  # The recipe scales with the global batch of one optimizer step.
  return schedules.learning_rate(
      DEFAULT_LEARNING_RATE if config.learning_rate is None
      else config.learning_rate, lr_scaling=config.lr_scaling,
      base_batch_size=config.base_batch_size,
      warmup_epochs=config.warmup_epochs,
      global_batch_size=runtime.global_batch, steps_per_epoch=steps_per_epoch)


def check_keeps_its_rate(config, optimizer) -> None:
  """A compiled optimizer keeps its own rate: tfdist's rate settings would
  not apply, so giving them is an error."""
  given = [flag for flag, unset in (("learning_rate", None),
                                    ("lr_scaling", "none"),
                                    ("warmup_epochs", 0.0))
           if getattr(config, flag) != unset]
  if given:
    raise ConfigError(
        f"--{given[0]}: the model is compiled with its own optimizer "
        f"({type(optimizer).__name__}), which tfdist keeps at its own "
        "learning rate; set the rate in compile, or give --optimizer (or "
        "optimizer_fn) to train with tfdist's")


def choose_optimizer(runtime: runtime_lib.Runtime, *, steps_per_epoch: int,
                     compiled=None,
                     optimizer_fn: Optional[Callable] = None):
  """The optimizer that trains (see the module docstring); ``compiled``:
  the model's own, or None. Returns (optimizer, where it comes from)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config = runtime.config
  if optimizer_fn is None and config.optimizer is None and compiled:
    check_keeps_its_rate(config, compiled)
    return compiled, "compiled"
  rate = _learning_rate(runtime, steps_per_epoch)
  if optimizer_fn is not None:
    optimizer, source = optimizer_fn(rate), "optimizer_fn"
    if not isinstance(optimizer, tf.keras.optimizers.Optimizer):
      raise ConfigError(f"optimizer_fn returned a {type(optimizer).__name__}, "
                        "not a tf.keras optimizer; return e.g. "
                        "tf.keras.optimizers.Adam(learning_rate)")
  else:
    name = config.optimizer or DEFAULT_OPTIMIZER
    optimizer, source = named_optimizer(name, rate), f"--optimizer={name}"
  if compiled is not None and runtime.is_chief:
    console.info(f"{source}'s {type(optimizer).__name__} replaces the "
                 f"{type(compiled).__name__} the model was compiled with")
  return optimizer, source


def _decide_step(runtime: runtime_lib.Runtime, model) -> None:
  """Keeps the fused step when it can carry the model's loss and metrics;
  else Keras' step runs, said in one line (a ConfigError when a setting
  needs the fused step)."""
  config = runtime.config
  if not config.fuses_step():
    return
  reason = fused_step_lib.cannot_fuse(model)
  if reason is None:
    return
  needs = [f"--{flag}={getattr(config, flag)}" for flag, plain in
           (("fused_step", "auto"), ("accumulate_steps", 1))
           if getattr(config, flag) != plain]
  if needs:
    raise ConfigError(f"{needs[0]} needs the fused step, which cannot carry "
                      f"this model: {reason}; drop {needs[0].split('=')[0]}")
  if runtime.is_chief:
    console.info(f"Keras' own training step runs (the fused step cannot "
                 f"carry the model: {reason})")
  runtime.config = dataclasses.replace(config, fused_step="off")


def _compile(model, objective: tasks.Objective, optimizer, *, own,
             dtype_policy: str, steps_per_execution: int) -> None:
  model.compile(
      optimizer=precision_lib.loss_scaled(optimizer, dtype_policy),
      loss=objective.loss, metrics=list(objective.metrics),
      weighted_metrics=list(objective.weighted_metrics) or None,
      loss_weights=objective.loss_weights,
      steps_per_execution=steps_per_execution,
      run_eagerly=own.run_eagerly if own else None,
      jit_compile=own.jit_compile if own else None)


def _make_slots(tf, model) -> None:
  """The optimizer's slot variables, made before the first step (Keras
  makes them in it, which has ``tf.function`` trace the training step a
  second time: 2.8 of the 11 s of mini-Inception's first epoch)."""
  if (isinstance(model.optimizer, tf.keras.optimizers.Optimizer)
      and model.trainable_variables):
    model.optimizer.build(model.trainable_variables)


@dataclasses.dataclass(frozen=True)
class Trainable:
  """What :func:`build` made: the compiled model and how it trains."""
  model: object
  dtype_policy: str
  objective: tasks.Objective
  optimizer_from: str


def build(runtime: runtime_lib.Runtime, *, user: contract.UserModel,
          source, steps_per_epoch: int) -> Trainable:
  """The compiled model, in the strategy's scope, on its step."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config = runtime.config
  dtype_policy = precision_lib.policy_name(
      enabled=config.mixed_precision, dtype=config.mixed_precision_dtype,
      has_gpu=bool(tf.config.list_physical_devices("GPU")),
      strategy=config.strategy)
  with runtime.strategy.scope(), precision_lib.policy(dtype_policy):
    model = contract.build(user.model_fn, source.features, source.num_outputs,
                           name=user.label)
    own = tasks.compiled(model)
    objective = tasks.resolve(model, task=source.task, loss=user.loss,
                              metrics=user.metrics,
                              name=f"the model of {user.label}")
    if config.sync_batch_norm:
      model = models_lib.with_sync_batch_norm(model)
    optimizer, optimizer_from = choose_optimizer(
        runtime, steps_per_epoch=steps_per_epoch,
        compiled=own.optimizer if own else None,
        optimizer_fn=user.optimizer_fn)
    _compile(model, objective, optimizer, own=own, dtype_policy=dtype_policy,
             steps_per_execution=config.steps_per_execution)
    tasks.build_metrics(model, task=source.task,
                        num_outputs=source.num_outputs)
    _decide_step(runtime, model)
    # The runtime's subclass only changes how gradients are all-reduced.
    optimizer.__class__ = runtime.optimizer_class(type(optimizer))
    _make_slots(tf, model)
  runtime.configure_compiled(model)
  return Trainable(model=model, dtype_policy=dtype_policy,
                   objective=objective, optimizer_from=optimizer_from)


def describe(trainable: Trainable) -> str:
  """One line: the task, output kind, loss, metrics and optimizer."""
  objective, model = trainable.objective, trainable.model
  optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
  trackers = {id(m) for m in model.compiled_loss.metrics}
  metrics = [m.name for m in fused_step_lib.carried_metrics(model)
             if id(m) not in trackers]
  return (f"{objective.task}: {objective.outputs} outputs, loss "
          f"{tasks.loss_name(objective.loss)} ({objective.loss_from}), "
          f"metrics {', '.join(metrics) or 'none'}, optimizer "
          f"{type(optimizer).__name__} ({trainable.optimizer_from})")
