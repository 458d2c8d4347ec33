"""A model's first layers, built from its data's features: preprocessing
that travels with the model.

Records and serving inputs hold raw values (tfdist.data.features); these Keras
layers turn them into what a dense layer takes, with the statistics and
vocabularies of the training split that the manifest keeps (never adapted
at training time, so every worker, the export and ``predict`` apply the
same ones):

===========  ==========================================  ==================
kind         ``encoded``                                  ``ids``
===========  ==========================================  ==================
``numeric``  NaN filled with the mean (``fill: mean``),   (not an id)
             then ``Normalization(mean, variance)``
``category`` ``StringLookup`` one-hot, ``[batch, V+1]``   its index, 0 =
             (index 0: a value training never saw)        unknown
``text``     ``TextVectorization`` multi-hot of its       token ids
             tokens, ``[batch, T+1]`` (0: unknown token)  ``[batch, len]``,
                                                          0 = padding, 1 =
                                                          unknown
``image``    ``Flatten``                                  (not an id)
``id``       ``CategoryEncoding`` one-hot of num_ids      the id
``id_list``  ``CategoryEncoding`` multi-hot of num_ids    the ragged ids
===========  ==========================================  ==================

A numeric column whose training values were all equal (standard deviation
0) is centred, not scaled. Every encoded output is float32 whatever the
mixed-precision policy (the statistics need float32's precision).

:func:`encoded` applies them to a model's inputs (``tfdist.keras_inputs``)
and concatenates the results (consecutive numeric features through one
layer that computes what theirs would, column by column);
:func:`preprocessing_layer` gives one feature's layer, e.g. for an
``Embedding`` over a category's or a text's ids. Imports tfdist.errors
and tfdist.data.features; TensorFlow when a layer is built.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Mapping

from tfdist.data import features as features_lib
from tfdist.errors import ConfigError

OUTPUTS = ("encoded", "ids")
# Statistics below this are scaled up by a power of ten before Keras'
# Normalization, which divides by at least 1e-7 (its epsilon).
_SMALL_STD = 1e-3


def _scale(std) -> float:
  """The power of ten that lifts a feature's standard deviations to at
  least _SMALL_STD (1: none needed); a std of 0 counts as 1."""
  smallest = min(s if s > 0 else 1.0 for s in std)
  return (1.0 if smallest >= _SMALL_STD
          else 10.0 ** math.ceil(-math.log10(smallest)))


@functools.lru_cache(maxsize=None)
def _numeric_class():
  """The layer class of numeric features (made once TensorFlow loads)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.keras.utils.register_keras_serializable(package="tfdist")
  class NumericEncoding(tf.keras.layers.Layer):
    """Missing values (NaN) filled with the mean, then standardised.

    One numeric feature (``fill`` its fill), or several side by side:
    ``widths`` their column counts, ``fill`` a list of their fills, the
    input a list of their tensors, concatenated. Each column is computed
    as its feature's own layer would: its own fill, and scaled by its own
    feature's power of ten (a column scaled by 1 is left as it is).
    """

    def __init__(self, mean, std, fill="", widths=None, **kwargs):
      kwargs.setdefault("dtype", "float32")
      super().__init__(**kwargs)
      self.mean, self.std, self.fill = list(mean), list(std), fill
      self.widths = None if widths is None else list(widths)
      spans = [len(self.mean)] if widths is None else self.widths
      fills = [fill] if widths is None else list(fill)
      starts = [sum(spans[:i]) for i in range(len(spans))]
      self.scales = [_scale(self.std[start:start + n])
                     for start, n in zip(starts, spans) for _ in range(n)]
      self.filled = [f == "mean" for f, n in zip(fills, spans)
                     for _ in range(n)]
      spread = [s if s > 0 else 1.0 for s in self.std]
      self.normalization = tf.keras.layers.Normalization(
          mean=[m * k for m, k in zip(self.mean, self.scales)],
          variance=[(s * k) ** 2 for s, k in zip(spread, self.scales)],
          dtype="float32")

    def call(self, inputs):
      if self.widths is None:
        values = tf.cast(inputs, tf.float32)
      else:
        values = tf.concat([tf.cast(t, tf.float32) for t in inputs], -1)
      if any(self.filled):
        missing = tf.math.is_nan(values)
        if not all(self.filled):
          missing = tf.logical_and(missing, tf.constant(self.filled))
        values = tf.where(missing, tf.constant(self.mean, tf.float32),
                          values)
      if any(k != 1.0 for k in self.scales):
        values = values * tf.constant(self.scales, tf.float32)
      return self.normalization(values)

    def get_config(self):
      config = {**super().get_config(), "mean": self.mean, "std": self.std,
                "fill": self.fill}
      if self.widths is not None:
        config["widths"] = self.widths
      return config

  return NumericEncoding


def _numeric_encoding(numerics: list):
  """One layer standardising the numeric features ``numerics`` side by
  side (called on the list of their tensors), as each one's own
  :func:`preprocessing_layer` would: one layer instead of one per feature
  (a table of 30 numeric columns builds, and its model starts, faster)."""
  return _numeric_class()(
      [m for f in numerics for m in f.mean],
      [s for f in numerics for s in f.std], [f.fill for f in numerics],
      widths=[len(f.mean) for f in numerics])


def _one_hot_of_one(tf, layer):
  """``layer`` (one-hot of one value per example) on a ``[batch]`` input,
  as ``[batch, 1]``: Keras' lookup layers encode a ``[1]`` batch as one
  vector, not a row."""
  return tf.keras.Sequential([tf.keras.layers.Reshape((1,)), layer])


def preprocessing_layer(feature: features_lib.Feature, *,
                        output: str = "encoded"):
  """The Keras layer that makes ``feature``'s raw input ready for a model.

  Args:
    feature: one of the features a model function receives.
    output: ``encoded``, float32 ``[batch, d]`` for a dense layer (see the
      module docstring); ``ids``, integer ids for an ``Embedding``: a
      category's index (0 = unknown), a text's token ids, an id or id list
      as they are.

  Raises:
    ConfigError: an unknown output, or ``ids`` of a numeric or image
      feature.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras = tf.keras
  if output not in OUTPUTS:
    raise ConfigError(f"preprocessing_layer(output={output!r}): use one of "
                      f"{', '.join(OUTPUTS)}")
  kind = feature.kind
  if output == "ids":
    if kind in ("numeric", "image"):
      raise ConfigError(f"feature {feature.name!r} is {kind}: it has no ids; "
                        "use output='encoded'")
    if kind == "category":
      return keras.layers.StringLookup(vocabulary=list(feature.vocabulary))
    if kind == "text":
      return keras.layers.TextVectorization(
          vocabulary=list(feature.vocabulary), output_mode="int")
    return keras.layers.Identity()
  if kind == "numeric":
    return _numeric_class()(feature.mean, feature.std, feature.fill)
  if kind == "category":
    return _one_hot_of_one(tf, keras.layers.StringLookup(
        vocabulary=list(feature.vocabulary), output_mode="one_hot",
        dtype="float32"))
  if kind == "text":
    # Its dtype is its input's (string); multi_hot outputs float32.
    return keras.layers.TextVectorization(
        vocabulary=list(feature.vocabulary), output_mode="multi_hot")
  if kind == "image":
    return keras.layers.Flatten(dtype="float32")
  if kind == "id":
    return _one_hot_of_one(tf, keras.layers.CategoryEncoding(
        num_tokens=feature.num_ids, output_mode="one_hot", dtype="float32"))
  return keras.layers.CategoryEncoding(num_tokens=feature.num_ids,
                                       output_mode="multi_hot",
                                       dtype="float32")


def encoded(inputs: Mapping, features: features_lib.Features, *,
            combine: bool = True):
  """Every input made ready for a dense layer (:func:`preprocessing_layer`).

  Args:
    inputs: ``{feature name: tensor}``, e.g. ``tfdist.keras_inputs(
      features)`` or a part of it.
    features: the features the model function received.
    combine: True: one float32 ``[batch, d]`` tensor, the features
      concatenated in their order; False: a dict of them by name.

  Raises:
    ConfigError: an input that is no feature, or no input at all.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  unknown = [name for name in inputs if name not in features]
  if unknown or not inputs:
    raise ConfigError(f"tfdist.encoded: input {unknown[0]!r} is no feature "
                      f"(the features: {', '.join(features)})" if unknown
                      else "tfdist.encoded: no input to encode")
  used = [(name, f) for name, f in features.items() if name in inputs]
  if not combine:
    return {name: preprocessing_layer(f)(inputs[name]) for name, f in used}
  parts = []
  for numbers, run in itertools.groupby(
      used, lambda named: named[1].kind == "numeric" and bool(named[1].mean)):
    run = list(run)
    if numbers and len(run) > 1:
      # Consecutive numeric features: one layer, the same columns in order.
      parts.append(_numeric_encoding([f for _, f in run])(
          [inputs[name] for name, _ in run]))
    else:
      parts += [preprocessing_layer(f)(inputs[name]) for name, f in run]
  if len(parts) == 1:
    return parts[0]
  return tf.keras.layers.Concatenate(dtype="float32")(parts)
