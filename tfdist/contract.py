"""The model-function contract: what tfdist asks of a model, and the checks.

A model function is ``model_fn(features, num_classes)``:

* it receives ``features``, ``{name: tfdist.features.Feature}`` in the
  records' order (each with its kind, shape and dtype: see
  tfdist.features), and ``num_classes``, the number of classes;
* it returns an uncompiled Keras model (tf-keras, ``tf.keras`` under
  tfdist: functional, Sequential or subclassed) whose output is one score
  per class, ``[batch, num_classes]``: logits, or probabilities (an output
  that ends in a softmax). Which one is found out, not declared: the
  untrained model's outputs on a few test examples are probabilities when
  every row is non-negative and sums to 1 (:func:`returns_probabilities`);
* the model is called with the one feature's tensor when there is one
  feature, else with a dict by feature name (a functional model may take
  a subset of them: it gets those).

tfdist owns the rest: the optimizer (``--optimizer``, or a user's factory),
the loss (sparse categorical cross-entropy), the accuracy metric and the
training step. :func:`build` calls the function and checks the model; every
task builds through it (training, the evaluator, the export), so all build
the same model. A broken function is one ConfigError line (a peer lost
while it runs is not: see tfdist.coordination.peer_loss_errors). Imports
tfdist.coordination, errors and features; TensorFlow lazily.
"""

from __future__ import annotations

import traceback
from typing import Callable

import numpy as np

from tfdist import coordination
from tfdist import features as features_lib
from tfdist.errors import ConfigError


def _where(error: BaseException) -> str:
  """``file:line`` of the innermost frame of ``error``'s traceback."""
  frames = traceback.extract_tb(error.__traceback__)
  if not frames:
    return ""
  frame = frames[-1]
  return f" at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"


def _lost_a_peer(error: Exception) -> bool:
  """Not the function's fault: a peer died while the variables were created
  and broadcast under a distribution strategy. The caller's
  tfdist.runtime.lost_peers makes it 200 (retried); a ConfigError's 2
  would fail a Kubernetes job for good."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return (isinstance(error, coordination.peer_loss_errors())
          and tf.distribute.has_strategy())


def _call(model_fn: Callable, features, num_classes: int, name: str):
  try:
    return model_fn(dict(features), num_classes)
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if _lost_a_peer(e):
      raise
    message = (str(e).splitlines() or [""])[0][:200]
    raise ConfigError(f"the model function {name} raised {type(e).__name__}"
                      f"{_where(e)}: {message}; it is called as "
                      "model_fn(features, num_classes), features a dict of "
                      "tfdist.features.Feature") from None


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


def _selected_inputs(model, inputs, features, name: str):
  """What ``model`` is called with: the one tensor, the dict, or the part
  of the dict a functional model takes (ConfigError for a missing one)."""
  wanted = _input_names(model)
  if len(features) == 1 and len(wanted) == 1 and wanted[0] not in features:
    # One input named otherwise (a Sequential's): it gets the tensor, and
    # the model built around it the dict the data gives.
    return next(iter(inputs.values()))
  if len(features) == 1 or not wanted or set(wanted) == set(features):
    return inputs
  missing = [n for n in wanted if n not in features]
  if missing and len(wanted) > 1:
    raise ConfigError(f"the model of {name} takes input {missing[0]!r}, which "
                      f"the records lack (they have features: "
                      f"{', '.join(features)}); name the model's inputs after "
                      "the features (tfdist.features.keras_inputs does)")
  if len(wanted) == 1:
    if missing:
      raise ConfigError(f"the model of {name} takes one input, "
                        f"{wanted[0]!r}, but the records have "
                        f"{len(features)} features ({', '.join(features)}); "
                        "give the model an input per feature it uses, named "
                        "after it")
    return inputs[wanted[0]]
  return {n: inputs[n] for n in wanted}


def _check_outputs(outputs, num_classes: int, name: str) -> None:
  shape = list(getattr(outputs, "shape", []))
  if len(shape) != 2 or shape[-1] != num_classes:
    raise ConfigError(f"the model of {name} outputs shape {shape}, but the "
                      f"data has {num_classes} classes: end it with one score "
                      f"per class, e.g. tf.keras.layers.Dense({num_classes})")


def build(model_fn: Callable, features: features_lib.Features,
          num_classes: int, *, name: str = "the model function"):
  """The model ``model_fn`` builds for ``features``, checked, with float32
  outputs (a cast added where mixed precision left them 16-bit).

  Call inside ``strategy.scope()`` to train it, outside for a plain copy.

  Raises:
    ConfigError: the function raised, returned no tf-keras model, takes an
      input the records lack, or outputs another number of classes.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = _call(model_fn, features, num_classes, name)
  _check_is_keras(tf, model, name)
  inputs = features_lib.keras_inputs(features)
  selected = _selected_inputs(model, inputs, features, name)
  try:
    outputs = model(selected)  # builds a subclassed model's weights
  except (ValueError, TypeError, tf.errors.OpError) as e:
    described = ", ".join(f.describe() for f in features.values())
    raise ConfigError(f"the model of {name} cannot take the records' "
                      f"features ({described}): {type(e).__name__}: "
                      f"{(str(e).splitlines() or [''])[0][:200]}") from None
  _check_outputs(outputs, num_classes, name)
  if selected is not inputs:
    # The model takes a part of the features: called with all of them.
    model = tf.keras.Model(inputs, outputs, name=model.name)
  if outputs.dtype == tf.float32:
    return model
  # The loss's softmax runs in float32 (the mixed-precision guide's rule):
  # a cast after a functional model's own output keeps its layers flat.
  functional = bool(_input_names(model))
  source_inputs = model.inputs if functional else inputs
  last = model.output if functional else model(inputs)
  cast = tf.keras.layers.Activation("linear", dtype="float32",
                                    name="float32_outputs")(last)
  return tf.keras.Model(source_inputs, cast, name=model.name)


def returns_probabilities(model, inputs) -> bool:
  """Whether ``model``'s outputs on a batch of ``inputs`` are
  probabilities (each row non-negative, summing to 1) rather than logits."""
  scores = np.asarray(model(inputs, training=False), dtype=np.float64)
  return bool(scores.size and np.all(scores >= 0)
              and np.allclose(scores.sum(axis=-1), 1.0, atol=1e-3))


def outputs_kind(model) -> str:
  """``logits`` or ``probabilities``: what the compiled ``model``'s loss
  takes its outputs for (see :func:`returns_probabilities`)."""
  from_logits = model.loss.get_config().get("from_logits", True)
  return "logits" if from_logits else "probabilities"
