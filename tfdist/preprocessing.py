"""A model's first layers, built from its data's features: preprocessing
that travels with the model.

Records and serving inputs hold raw values (tfdist.features); these Keras
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
and concatenates the results; :func:`preprocessing_layer` gives one
feature's layer, e.g. for an ``Embedding`` over a category's or a text's
ids. Imports tfdist.errors and tfdist.features; TensorFlow when a layer is
built.
"""

from __future__ import annotations

import functools
import math
from typing import Mapping

from tfdist import features as features_lib
from tfdist.errors import ConfigError

OUTPUTS = ("encoded", "ids")
# Statistics below this are scaled up by a power of ten before Keras'
# Normalization, which divides by at least 1e-7 (its epsilon).
_SMALL_STD = 1e-3


@functools.lru_cache(maxsize=None)
def _numeric_class():
  """The layer class of a numeric feature (made once TensorFlow loads)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.keras.utils.register_keras_serializable(package="tfdist")
  class NumericEncoding(tf.keras.layers.Layer):
    """Missing values (NaN) filled with the mean, then standardised."""

    def __init__(self, mean, std, fill: str = "", **kwargs):
      kwargs.setdefault("dtype", "float32")
      super().__init__(**kwargs)
      self.mean, self.std, self.fill = list(mean), list(std), fill
      spread = [s if s > 0 else 1.0 for s in self.std]
      smallest = min(spread)
      self.scale = (1.0 if smallest >= _SMALL_STD
                    else 10.0 ** math.ceil(-math.log10(smallest)))
      self.normalization = tf.keras.layers.Normalization(
          mean=[m * self.scale for m in self.mean],
          variance=[(s * self.scale) ** 2 for s in spread], dtype="float32")

    def call(self, inputs):
      values = tf.cast(inputs, tf.float32)
      if self.fill == "mean":
        values = tf.where(tf.math.is_nan(values),
                          tf.constant(self.mean, tf.float32), values)
      if self.scale != 1.0:
        values = values * self.scale
      return self.normalization(values)

    def get_config(self):
      return {**super().get_config(), "mean": self.mean, "std": self.std,
              "fill": self.fill}

  return NumericEncoding


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
  parts = {name: preprocessing_layer(feature)(inputs[name])
           for name, feature in features.items() if name in inputs}
  if not combine:
    return parts
  if len(parts) == 1:
    return next(iter(parts.values()))
  return tf.keras.layers.Concatenate(dtype="float32")(list(parts.values()))
