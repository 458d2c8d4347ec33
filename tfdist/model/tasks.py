"""What a model is trained for: its task, loss, metrics and output kind.

Owns the three tasks and what each trains with when the user gives nothing:

==================  ==============================  =====================
task                loss                            training metric
==================  ==============================  =====================
``classification``  SparseCategoricalCrossentropy   ``accuracy``
``regression``      MeanSquaredError                ``mae``
``multilabel``      BinaryCrossentropy              ``binary_accuracy``
==================  ==============================  =====================

The output kind is *declared*, never guessed from an untrained model's
outputs (:func:`declared_outputs`): regression outputs ``values``; a
classifier or multi-label model outputs ``logits`` unless its last layer
ends in a softmax (classification) or a sigmoid (multilabel), or its loss
says ``from_logits=False``: then ``probabilities``. A declaration that
contradicts the model (a softmax head with a loss that takes logits, a
sigmoid over competing classes) is one ConfigError line.

The user's own loss and metrics join tfdist's (:func:`resolve`): a loss
given to tfdist.main/fit or compiled into the returned model replaces the
task's default (both at once is a ConfigError: neither is dropped
silently); a user's metrics, given or compiled, come beside the task's
metric. What a model function compiled is read by :func:`compiled`.
Imports tfdist.errors; TensorFlow lazily.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Optional

from tfdist.errors import ConfigError

TASKS = ("classification", "regression", "multilabel")
LOGITS, PROBABILITIES, VALUES = "logits", "probabilities", "values"
# The head that makes a task's outputs probabilities, and the one that
# cannot (a sigmoid's classes do not compete; a softmax's labels do).
_PROBABILITY_HEAD = {"classification": "softmax", "multilabel": "sigmoid"}
_WRONG_HEAD = {"classification": "sigmoid", "multilabel": "softmax"}
# The name of the metric each task trains with (its test metrics are
# tfdist.training.measurement's).
TRAINING_METRIC = {"classification": "accuracy", "regression": "mae",
                   "multilabel": "binary_accuracy"}


def check_task(task: str) -> str:
  """``task`` when it is one of TASKS; else ConfigError."""
  if task not in TASKS:
    raise ConfigError(f"task {task!r}: use one of {', '.join(TASKS)}")
  return task


@dataclasses.dataclass(frozen=True)
class Compiled:
  """What a model function's ``model.compile(...)`` said (Keras' own record
  of the call): ``optimizer`` is the optimizer object compile made."""
  optimizer: object
  loss: object
  metrics: tuple
  weighted_metrics: tuple
  loss_weights: object
  run_eagerly: Optional[bool]
  jit_compile: Optional[bool]


def compiled(model) -> Optional[Compiled]:
  """What ``model`` was compiled with, or None if it is not compiled."""
  config = getattr(getattr(model, "_compile_config", None), "config", None)
  if not getattr(model, "_is_compiled", False) or config is None:
    return None
  optimizer = model.optimizer
  # compile wraps an optimizer for loss scaling under mixed_float16; tfdist
  # wraps it again as its policy says (tfdist.training.precision).
  optimizer = getattr(optimizer, "inner_optimizer", optimizer)
  return Compiled(optimizer=optimizer, loss=config.get("loss"),
                  metrics=_as_tuple(config.get("metrics")),
                  weighted_metrics=_as_tuple(config.get("weighted_metrics")),
                  loss_weights=config.get("loss_weights"),
                  run_eagerly=config.get("run_eagerly"),
                  jit_compile=config.get("jit_compile"))


def _as_tuple(value) -> tuple:
  if value is None:
    return ()
  if isinstance(value, (list, tuple)):
    return tuple(value)
  raise ConfigError(f"metrics {value!r}: give a list (one output: tfdist "
                    "models have one)")


def _loss_takes_logits(loss) -> Optional[bool]:
  """What ``loss`` says of the outputs: True logits, False probabilities,
  None nothing (no from_logits setting, as for mean squared error)."""
  if loss is None:
    return None
  get_config = getattr(loss, "get_config", None)
  if callable(get_config) and not inspect.isclass(loss):
    try:
      setting = get_config().get("from_logits")
    except (NotImplementedError, TypeError, ValueError):
      setting = None
    if setting is not None:
      return bool(setting)
  function = _loss_function(loss)
  try:
    parameter = inspect.signature(function).parameters.get("from_logits")
  except (TypeError, ValueError):
    return None
  if parameter is None or parameter.default is inspect.Parameter.empty:
    return None
  return bool(parameter.default)


def _loss_function(loss):
  """The function a loss name or a LossFunctionWrapper computes."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if isinstance(loss, str):
    try:
      return tf.keras.losses.get(loss)
    except ValueError:
      raise ConfigError(f"loss {loss!r}: no such Keras loss") from None
  return getattr(loss, "fn", loss)


def _head(model) -> Optional[str]:
  """The activation the model's output layer ends in: softmax, sigmoid,
  linear, another name, or None when it cannot be read (a subclassed
  model, a Lambda)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  layer = model
  while isinstance(layer, tf.keras.Model):
    outputs = getattr(layer, "outputs", None) if getattr(
        layer, "_is_graph_network", False) else None
    if not outputs or len(outputs) != 1:
      return None
    layer = outputs[0]._keras_history.layer  # pylint: disable=protected-access
    if layer.name == "float32_outputs":  # tfdist.model.contract's cast
      layer = layer.inbound_nodes[0].inbound_layers
  if isinstance(layer, tf.keras.layers.Softmax):
    return "softmax"
  activation = getattr(layer, "activation", None)
  return getattr(activation, "__name__", None) if activation else None


def declared_outputs(model, *, task: str, loss=None,
                     name: str = "the model") -> str:
  """``logits``, ``probabilities`` or ``values``: what ``model`` outputs, as
  its last layer and ``loss`` (the user's, if any) declare it.

  Raises:
    ConfigError: the declaration contradicts the model (see the module
      docstring).
  """
  check_task(task)
  if task == "regression":
    return VALUES
  head, says_logits = _head(model), _loss_takes_logits(loss)
  if head == _WRONG_HEAD[task]:
    fix = ("--task=multilabel for labels that do not exclude each other, "
           "or end in a softmax" if task == "classification"
           else "each label's own sigmoid (activation='sigmoid')")
    raise ConfigError(f"{name} ends in a {head}, which does not make "
                      f"{task} outputs: use {fix}")
  if says_logits is None:
    return PROBABILITIES if head == _PROBABILITY_HEAD[task] else LOGITS
  if says_logits and head == _PROBABILITY_HEAD[task]:
    raise ConfigError(f"{name} ends in a {head}, but its loss takes logits "
                      "(from_logits=True): drop the activation, or give the "
                      "loss from_logits=False")
  if not says_logits and head == "linear":
    raise ConfigError(f"{name} ends in a linear layer (logits), but its loss "
                      "takes probabilities (from_logits=False): give the "
                      f"loss from_logits=True, or end in a "
                      f"{_PROBABILITY_HEAD[task]}")
  return LOGITS if says_logits else PROBABILITIES


def default_loss(task: str, outputs: str):
  """The task's loss for outputs of kind ``outputs``."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  losses = tf.keras.losses
  if task == "regression":
    return losses.MeanSquaredError()
  from_logits = outputs == LOGITS
  if task == "classification":
    return losses.SparseCategoricalCrossentropy(from_logits=from_logits)
  return losses.BinaryCrossentropy(from_logits=from_logits)


def _task_metric(task: str, outputs: str):
  """The task's training metric (a logit of 0 is a probability of 0.5)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  metrics = tf.keras.metrics
  if task == "classification":
    return metrics.SparseCategoricalAccuracy(name="accuracy")
  if task == "regression":
    return metrics.MeanAbsoluteError(name="mae")
  return metrics.BinaryAccuracy(name="binary_accuracy",
                                threshold=0.0 if outputs == LOGITS else 0.5)


def _metric_name(metric) -> str:
  if isinstance(metric, str):
    return metric
  return getattr(metric, "name", None) or getattr(metric, "__name__", "")


def _no_arguments(value) -> bool:
  """A class, or a function that takes no argument (a loss or metric
  function takes the labels and the outputs)."""
  if inspect.isclass(value):
    return True
  try:
    parameters = inspect.signature(value).parameters.values()
  except (TypeError, ValueError):
    return False
  return not any(p.default is inspect.Parameter.empty and p.kind in (
      p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)


def _check_tf_keras(value, what: str) -> None:
  module = (value if inspect.isclass(value) else type(value)).__module__
  if module.split(".")[0] == "keras":
    raise ConfigError(
        f"{what} {value!r} is a Keras 3 object: tf.keras was Keras 3 when it "
        "was made, before tfdist set TF_USE_LEGACY_KERAS=1; give its name "
        "(e.g. 'auc'), or a function making it (lambda: tf.keras.metrics."
        "AUC()), which tfdist calls once tf.keras is tf-keras")


def made(value, base, what: str):
  """``value`` as compile takes it: a name, function or ``base`` object as
  it is; a class, or a function of no argument, called now (so in the
  current strategy's scope, once tf.keras is tf-keras).

  Raises:
    ConfigError: a Keras 3 object, or a maker that returns no ``base``.
  """
  if isinstance(value, str) or value is None:
    return value
  _check_tf_keras(value, what)
  if not isinstance(value, base) and callable(value) and _no_arguments(value):
    value = value()
    if not isinstance(value, base):
      raise ConfigError(f"{what}: the function given returned a "
                        f"{type(value).__name__}, not a {base.__name__}")
    return value
  return value


def _user_metric(metric, task: str, outputs: str):
  """A user's metric as Keras compiles it (see :func:`made`); ``accuracy``
  is the task's."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if isinstance(metric, str) and metric in ("accuracy", "acc"):
    if task == "regression":
      raise ConfigError(f"metric {metric!r}: accuracy counts classes, and "
                        "the task is regression; use e.g. 'mae' or 'mse'")
    return _task_metric(task, outputs)
  if isinstance(metric, tf.keras.metrics.Metric):
    # Made elsewhere: made again in this scope (Keras wants the model's).
    return copied(metric)
  return made(metric, tf.keras.metrics.Metric, "metric")


def copied(metric):
  """A new ``metric`` of the same class and config, made in the current
  scope (a strategy's scope makes its variables distributed).

  Raises:
    ConfigError: the metric cannot be made again from its config.
  """
  try:
    return type(metric).from_config(metric.get_config())
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(
        f"metric {metric.name!r} ({type(metric).__name__}) cannot be made "
        f"again from its get_config() ({type(e).__name__}: {e}), which "
        "training under a strategy and the test metrics need: give its "
        "class a get_config() that returns its __init__ arguments") from None


@dataclasses.dataclass(frozen=True)
class Objective:
  """What the model trains with and is measured by.

  Attributes:
    task: one of TASKS.
    outputs: ``logits``, ``probabilities`` or ``values``.
    loss: the loss compile gets.
    loss_from: ``default``, ``loss=`` (given to tfdist) or ``compiled``.
    metrics, weighted_metrics: what compile gets (the task's metric first).
    loss_weights: a compiled model's own, else None.
  """
  task: str
  outputs: str
  loss: object
  loss_from: str
  metrics: tuple
  weighted_metrics: tuple = ()
  loss_weights: object = None


def resolve(model, *, task: str, loss=None, metrics=(),
            name: str = "the model") -> Objective:
  """The objective of ``model`` for ``task``, with the user's ``loss`` and
  ``metrics`` (given to tfdist) and what the model was compiled with.

  Raises:
    ConfigError: a loss given twice, an output kind that contradicts the
      model, or a metric that cannot mean anything for the task.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  check_task(task)
  own = compiled(model)
  loss = made(loss, tf.keras.losses.Loss, "loss")
  if loss is not None and own is not None and own.loss is not None:
    raise ConfigError(f"{name} is compiled with a loss, and loss= is given "
                      "too: keep one (tfdist never replaces yours silently)")
  given = loss if loss is not None else (own.loss if own else None)
  if isinstance(given, (dict, list, tuple)):
    raise ConfigError(f"{name}: a loss per output ({type(given).__name__}); "
                      "tfdist models have one output: give one loss")
  outputs = declared_outputs(model, task=task, loss=given, name=name)
  user = [_user_metric(m, task, outputs)
          for m in (*(own.metrics if own else ()), *(metrics or ()))]
  taken = {_metric_name(m) for m in user}
  task_metric = ([] if TRAINING_METRIC[task] in taken
                 else [_task_metric(task, outputs)])
  return Objective(
      task=task, outputs=outputs,
      loss=given if given is not None else default_loss(task, outputs),
      loss_from=("default" if given is None else
                 "loss=" if loss is not None else "compiled"),
      metrics=(*task_metric, *user),
      weighted_metrics=tuple(_user_metric(m, task, outputs) for m in
                             (own.weighted_metrics if own else ())),
      loss_weights=own.loss_weights if own else None)


def loss_name(loss) -> str:
  """How the result names a loss: its Keras name, or its function's."""
  return (getattr(loss, "name", None) or getattr(loss, "__name__", None)
          or type(loss).__name__)


def build_metrics(model, *, task: str, num_outputs: int) -> None:
  """Creates the compiled model's metric objects now (Keras would on the first
  step), so that their variables exist before training: the fused step carries
  them (tfdist.training.fused_step). Call in the strategy's scope."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  outputs = tf.zeros([1, num_outputs])
  labels = (tf.zeros([1], tf.int64) if task == "classification"
            else tf.zeros([1, num_outputs]))
  model.compiled_loss.build(outputs)
  model.compiled_metrics.build(outputs, labels)


def test_copies(model) -> list:
  """Fresh copies of the compiled model's metrics (for the chief's test metrics:
  tfdist.training.measurement). Call after :func:`build_metrics`, outside any
  strategy's scope, so that the copies' variables are plain.

  Raises:
    ConfigError: a metric that cannot be made again from its config.
  """
  return [copied(metric) for metric in model.compiled_metrics.metrics]
