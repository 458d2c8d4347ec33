"""The model-function contract: what tfdist asks of a model, and the checks.

A model function is ``model_fn(features, num_outputs)``:

* it receives ``features``, ``{name: tfdist.Feature}`` in the records'
  order (each with its kind, shape and dtype: see tfdist.data.features), and
  ``num_outputs``: the number of classes (classification), or of label
  columns (regression, multilabel);
* it returns a tf-keras model (``tf.keras`` under tfdist: functional,
  Sequential or subclassed) whose output is ``[batch, num_outputs]``;
* the model is called with the dict of inputs by feature name, always
  (also for one feature); a functional model may take a subset of them
  (named after the features): it gets those; a model of one input named
  otherwise (a Sequential's ``input_1``, or none yet) over one feature
  gets its tensor;
* its output kind is declared, never guessed (tfdist.model.tasks): logits,
  unless the last layer ends in a softmax (classification) or a sigmoid
  (multilabel), or the model is compiled with a loss that says
  ``from_logits=False``; regression outputs values;
* it may be returned **compiled**: it keeps its loss, metrics and
  optimizer (see tfdist.training.loop.choose_optimizer for the flags that
  replace the optimizer).

tfdist owns the rest: the loss and metric of the task when the model brings none
(tfdist.model.tasks), the optimizer when it brings none (``--optimizer``), and
the training step. :func:`build` calls the function and checks the model; every
task builds through it (training, the evaluator, the export), so all build the
same model. A broken function is one ConfigError line naming the cause and the
line of the user's file where it was raised (a peer lost while it runs is not:
see tfdist.liveness.coordination.peer_loss_errors). Imports
tfdist.liveness.coordination, errors and data.features; TensorFlow lazily.
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from typing import Callable, Optional

from tfdist.data import features as features_lib
from tfdist.errors import ConfigError
from tfdist.liveness import coordination

# A Keras layer's error: its first line names the layer, the cause follows.
_KERAS_WRAPPER = "Exception encountered when calling layer"
CONTRACT = ("model_fn(features, num_outputs): features a dict of "
            "tfdist.Feature by name, num_outputs the classes (or label "
            "columns); it returns a tf.keras model called with the dict of "
            "inputs by name, outputting [batch, num_outputs]")


@dataclasses.dataclass(frozen=True)
class UserModel:
  """What a program gives tfdist: its model function and, optionally, its
  own loss, metrics, callbacks and optimizer (tfdist.main and tfdist.fit
  take them as arguments of the same names).

  Attributes:
    model_fn: ``model_fn(features, num_outputs)`` (see the module
      docstring).
    name: the model's name in the result and the checkpoints ("" = the
      function's ``__name__``).
    loss: a tf.keras loss (object, name or function of ``(y_true,
      y_pred)``), instead of the task's; None: the task's, or the model's
      compiled one.
    metrics: tf.keras metrics (objects, names or functions) beside the
      task's.
    callbacks: tf.keras callbacks, run after tfdist's own in ``fit``.
    optimizer_fn: ``optimizer_fn(learning_rate)`` returns the optimizer.
  """
  model_fn: Callable
  name: str = ""
  loss: object = None
  metrics: tuple = ()
  callbacks: tuple = ()
  optimizer_fn: Optional[Callable] = None

  @property
  def label(self) -> str:
    """The name messages give the model function."""
    return self.name or getattr(self.model_fn, "__name__", "model")


def _library_dirs() -> tuple:
  """Where TensorFlow's, Keras' and tfdist's own files are."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  modules = [tf, features_lib]
  for name in ("tf_keras", "keras"):
    try:
      modules.append(__import__(name))
    except ImportError:
      pass
  return tuple(os.path.dirname(os.path.dirname(m.__file__))
               if m is features_lib else os.path.dirname(m.__file__)
               for m in modules)


def _where(error: BaseException) -> str:
  """`` at file:line`` of the innermost frame of ``error``'s traceback in
  the user's own code (not TensorFlow's, Keras' or tfdist's)."""
  frames = traceback.extract_tb(error.__traceback__)
  libraries = _library_dirs()
  own = [f for f in frames if not f.filename.startswith(libraries)]
  frame = (own or frames or [None])[-1]
  if frame is None:
    return ""
  return f" at {os.path.basename(frame.filename)}:{frame.lineno}"


def _cause(error: BaseException) -> str:
  """``Type: first line`` of what went wrong: under a Keras layer's
  wrapper message (``Exception encountered when calling layer ...``), the
  error the layer raised."""
  text = str(error)
  if text.startswith(_KERAS_WRAPPER):
    inner = error.__context__ or error.__cause__
    parts = text.split("\n\n")
    if inner is not None:
      error, text = inner, str(inner)
    elif len(parts) > 1:
      text = parts[1]
  first = (text.strip().splitlines() or [""])[0][:200]
  return f"{type(error).__name__}: {first}"


def _lost_a_peer(error: Exception) -> bool:
  """Not the function's fault: a peer died while the variables were created
  and broadcast under a distribution strategy. The caller's
  tfdist.training.runtime.lost_peers makes it 200 (retried); a ConfigError's 2
  would fail a Kubernetes job for good."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return (isinstance(error, coordination.peer_loss_errors())
          and tf.distribute.has_strategy())


def _call(model_fn: Callable, features, num_outputs: int, name: str):
  try:
    return model_fn(dict(features), num_outputs)
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if _lost_a_peer(e):
      raise
    raise ConfigError(f"the model function {name} raised{_where(e)}: "
                      f"{_cause(e)}; it is called as {CONTRACT}") from None


def _check_is_keras(tf, model, name: str) -> None:
  if isinstance(model, tf.keras.Model):
    return
  kind = type(model)
  if kind.__module__.startswith("keras"):
    raise ConfigError(f"the model function {name} returned a Keras 3 model "
                      f"({kind.__name__}); tfdist trains tf-keras models: "
                      "build it with tf.keras (tfdist sets "
                      "TF_USE_LEGACY_KERAS=1) or import tf_keras")
  raise ConfigError(f"the model function {name} returned a "
                    f"{kind.__module__}.{kind.__name__}, not a Keras model; "
                    "return a tf.keras.Model")


def _input_names(model) -> list:
  """The names of a functional model's inputs, or [] (subclassed)."""
  inputs = getattr(model, "inputs", None)
  if not inputs or not getattr(model, "_is_graph_network", False):
    return []
  return [getattr(t, "name", "").split(":")[0] for t in inputs]


def _selected_inputs(tf, model, inputs: dict, features, name: str) -> dict:
  """What ``model`` is called with: the dict of inputs, the part of it a
  functional model takes (ConfigError for a missing one), or for one
  feature the tensor that a model of one input named otherwise takes."""
  wanted = _input_names(model)
  if len(features) == 1 and (
      len(wanted) == 1 and wanted[0] not in features
      or not wanted and isinstance(model, tf.keras.Sequential)):
    # One input named otherwise, or not made yet (a Sequential's): it gets
    # the tensor, and the model built around it the dict the data gives.
    return next(iter(inputs.values()))
  if len(features) == 1 or not wanted or set(wanted) == set(features):
    return inputs
  missing = [n for n in wanted if n not in features]
  if missing and len(wanted) > 1:
    raise ConfigError(f"the model of {name} takes input {missing[0]!r}, which "
                      f"the records lack (they have features: "
                      f"{', '.join(features)}); name the model's inputs after "
                      "the features (tfdist.keras_inputs does)")
  if missing:
    raise ConfigError(f"the model of {name} takes one input, {wanted[0]!r}, "
                      f"but the records have {len(features)} features "
                      f"({', '.join(features)}); give the model an input per "
                      "feature it uses, named after it")
  return {n: inputs[n] for n in wanted}


def _check_outputs(outputs, num_outputs: int, name: str) -> None:
  shape = list(getattr(outputs, "shape", []))
  if len(shape) != 2 or shape[-1] != num_outputs:
    raise ConfigError(f"the model of {name} outputs shape {shape}, but the "
                      f"data has {num_outputs} outputs (classes, or label "
                      "columns): end it with one output each, e.g. "
                      f"tf.keras.layers.Dense({num_outputs})")


def _flat_inputs(model, features) -> Optional[dict]:
  """The inputs of a functional model by feature name, when it takes all
  the features (its one input standing for the one feature, whatever its
  name); None for a subclassed model or one that takes a subset."""
  wanted = _input_names(model)
  if wanted and set(wanted) == set(features):
    return dict(zip(wanted, model.inputs))
  if len(wanted) == 1 and len(features) == 1:
    return {next(iter(features)): model.inputs[0]}
  return None


def _called(tf, model, selected, features, name: str):
  """``model`` called on the Keras inputs (builds a subclassed model)."""
  try:
    return model(selected)
  except (ValueError, TypeError, KeyError, tf.errors.OpError) as e:
    described = ", ".join(f.describe() for f in features.values())
    raise ConfigError(f"the model of {name} cannot take the records' "
                      f"features ({described}){_where(e)}: "
                      f"{_cause(e)}") from None


def build(model_fn: Callable, features: features_lib.Features,
          num_outputs: int, *, name: str = "the model function"):
  """The model ``model_fn`` builds for ``features``, checked: it takes the
  features' dict by name and outputs float32 (a cast added where mixed
  precision left them 16-bit). A model returned compiled stays compiled
  with the same settings.

  Call inside ``strategy.scope()`` to train it, outside for a plain copy.

  Raises:
    ConfigError: the function raised, returned no tf-keras model, takes an
      input the records lack, or outputs another width than num_outputs.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = _call(model_fn, features, num_outputs, name)
  _check_is_keras(tf, model, name)
  inputs = {n: f.keras_input() for n, f in features.items()}
  selected = _selected_inputs(tf, model, inputs, features, name)
  outputs = _called(tf, model, selected, features, name)
  _check_outputs(outputs, num_outputs, name)
  flat = _flat_inputs(model, features)
  float32 = outputs.dtype == tf.float32
  if float32 and (not _input_names(model) or flat is not None
                  and set(flat) == set(_input_names(model))):
    return model  # takes the dict by name as it is
  # A functional model's own layers stay flat (tfdist.model.models.
  # with_sync_batch_norm's clone reaches them); else the model is a layer.
  source, last = ((flat, model.output) if flat is not None
                  else (inputs, outputs))
  if not float32:
    # The loss runs in float32 (the mixed-precision guide's rule).
    last = tf.keras.layers.Activation("linear", dtype="float32",
                                      name="float32_outputs")(last)
  wrapper = tf.keras.Model(source, last, name=model.name)
  config = getattr(model, "_compile_config", None)
  if getattr(model, "_is_compiled", False) and config is not None:
    wrapper.compile(**config.config)
  return wrapper
