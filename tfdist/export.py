"""Export a trained model for serving (SavedModel) and for devices (TFLite).

Layout of an export directory, the one TensorFlow Serving reads::

    EXPORT_DIR/1/                 SavedModel, version 1 (saved_model.pb ...)
    EXPORT_DIR/2/                 the next export to the same directory
    EXPORT_DIR/model.tflite       float TensorFlow Lite model (--tflite)
    EXPORT_DIR/model_quant.tflite dynamic-range quantised (--tflite_quantize)

Every SavedModel's ``serving_default`` signature takes the training data's
features by name (tfdist.features), one input each:

==========  ===========================================================
kind        input
==========  ===========================================================
``image``   uint8 ``[batch, H, W, C]``, raw pixels 0..255 (``images`` for
            the image datasets of tfdist.data)
``numeric`` float32 ``[batch, n]``
``id``      int64 ``[batch]``
``id_list`` int64 ``[batch, length]``, each row's ids padded with -1 to the
            batch's longest list (a signature takes no ragged tensor)
==========  ===========================================================

A dataset of one image also gets ``serving_float``: the image as float32
scaled to 0..1. Both return ``probabilities`` (float32 ``[batch,
classes]``) and ``classes`` (int64 ``[batch]``, the most probable class).
The TFLite models carry ``serving_default`` (not for id lists: TFLite takes
no ragged ids).

The export is built from a plain copy of the trained model, made outside any
distribution strategy, with every variable read wherever it lives
(mirrored on each replica, or on the ps tasks under ``ps``; a variable
sharded over several ps tasks is read shard by shard and copied whole:
tfdist.sharding.whole_weights), so one function exports from every
strategy, without collectives, on the chief alone, and the SavedModel
holds whole variables that ``tf.saved_model.load`` and TensorFlow Serving
read (neither loads partitioned ones). Imports tfdist.console, contract,
features and sharding; TensorFlow lazily.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable, Optional

from tfdist import console
from tfdist import contract
from tfdist import features as features_lib
from tfdist import sharding

SAVED_MODEL_FILE = "saved_model.pb"
TFLITE_FILE = "model.tflite"
TFLITE_QUANT_FILE = "model_quant.tflite"
SIGNATURES = ("serving_default", "serving_float")


def versions(export_dir: str) -> list:
  """The SavedModel versions in ``export_dir``, oldest first (no TensorFlow).

  A version is a sub-directory whose name is a number and that holds a
  ``saved_model.pb``, as TensorFlow Serving counts them.
  """
  if not os.path.isdir(export_dir):
    return []
  return sorted(int(name) for name in os.listdir(export_dir)
                if name.isdigit() and os.path.isfile(
                    os.path.join(export_dir, name, SAVED_MODEL_FILE)))


def plain_copy(model, *, model_fn: Callable, features, num_classes: int):
  """A copy of ``model`` built outside any strategy, with its current weights.

  Raises:
    ValueError: called inside a strategy's scope, where the copy's variables
      would be distributed again.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if tf.distribute.has_strategy():
    raise ValueError("plain_copy must be called outside strategy.scope(): "
                     "the copy has to hold ordinary, local variables")
  copy = contract.build(model_fn, features, num_classes)
  # Reads mirrored variables locally and ps variables over RPC (a sharded
  # one from each of its ps tasks, concatenated into one whole variable):
  # the trained values, whichever strategy trained them.
  copy.set_weights(sharding.whole_weights(model))
  return copy


def _input_spec(tf, feature):
  """The serving input of one feature (see the module docstring)."""
  if feature.kind == "image":
    return tf.TensorSpec([None, *feature.shape], tf.uint8, name=feature.name)
  if feature.kind == "numeric":
    return tf.TensorSpec([None, *feature.shape], tf.float32,
                         name=feature.name)
  if feature.kind == "id":
    return tf.TensorSpec([None], tf.int64, name=feature.name)
  return tf.TensorSpec([None, None], tf.int64, name=feature.name)


def _model_inputs(tf, features, served: dict):
  """What the model is called with, from the serving inputs: images
  scaled to 0..1 (as tfdist.data feeds them), id lists made ragged."""
  inputs = {}
  for name, feature in features.items():
    value = served[name]
    if feature.kind == "image" and value.dtype == tf.uint8:
      value = tf.cast(value, tf.float32) / 255.0
    elif feature.kind == "id_list":
      value = tf.RaggedTensor.from_tensor(value, padding=-1)
    inputs[name] = value
  return next(iter(inputs.values())) if len(inputs) == 1 else inputs


def serving_module(model, *, features, probabilities: bool = False):
  """A ``tf.Module`` whose functions are the serving signatures.

  ``model`` must take its inputs as tfdist.data feeds them (images scaled
  to 0..1) and output logits, or ``probabilities``.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  names = list(features)

  class Serving(tf.Module):
    """Features in, class probabilities and the predicted class out."""

    def __init__(self):
      super().__init__(name="serving")
      self.model = model  # tracked: the SavedModel saves its variables

    def predict(self, served: dict):
      scores = self.model(_model_inputs(tf, features, served),
                          training=False)
      probs = scores if probabilities else tf.nn.softmax(scores)
      return {"probabilities": probs,
              "classes": tf.argmax(probs, axis=-1)}

  module = Serving()
  module.serve = tf.function(
      lambda *args: module.predict(dict(zip(names, args))),
      input_signature=[_input_spec(tf, f) for f in features.values()])
  image = features_lib.single_image(features)
  if image is not None:
    module.serve_float = tf.function(
        lambda images: module.predict({image.name: images}),
        input_signature=[tf.TensorSpec([None, *image.shape], tf.float32,
                                       name=image.name)])
  return module


def _write_tflite(saved_model_dir: str, path: str, *, quantize: bool) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  converter = tf.lite.TFLiteConverter.from_saved_model(
      saved_model_dir, signature_keys=["serving_default"])
  if quantize:
    # Dynamic-range quantisation: int8 weights (4x smaller), float
    # activations; no calibration data needed.
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  flatbuffer = converter.convert()
  # Written beside the target and renamed over it: a reader never sees half
  # a model, even when an earlier export is being replaced.
  temp = f"{path}.tmp-{os.getpid()}"
  with open(temp, "wb") as f:
    f.write(flatbuffer)
  os.replace(temp, path)


def export(model, *, model_fn: Callable, features, num_classes: int,
           export_dir: str, probabilities: bool = False,
           tflite: bool = False, tflite_quantize: bool = False,
           digest_fn: Optional[Callable] = None) -> dict:
  """Writes the next SavedModel version of ``model`` (and TFLite models).

  Call on the chief only, outside ``strategy.scope()``. Nothing is half
  written: the SavedModel is assembled in a hidden directory and renamed to
  its version number, the name TensorFlow Serving watches for.

  Args:
    model: the trained Keras model (any strategy).
    model_fn: the function that built it (tfdist.contract).
    features: the features it takes (tfdist.features).
    num_classes: how many classes the model predicts.
    export_dir: the export directory (created if missing).
    probabilities: the model outputs probabilities, not logits.
    tflite: also write ``model.tflite`` (float).
    tflite_quantize: also write ``model_quant.tflite`` (dynamic range).
    digest_fn: if given, ``digest_fn(copy)`` is reported as
      ``weights_digest``, to compare with the trained model's.

  Returns:
    Where everything went: ``saved_model``, ``version``, ``tflite`` and
    ``tflite_quant`` (None when not written), ``weights_digest``.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  copy = plain_copy(model, model_fn=model_fn, features=features,
                    num_classes=num_classes)
  module = serving_module(copy, features=features,
                          probabilities=probabilities)
  os.makedirs(export_dir, exist_ok=True)
  version = (versions(export_dir) or [0])[-1] + 1
  # A name that is not a number: TensorFlow Serving ignores it while it fills.
  temp = os.path.join(export_dir, f".tmp-{version}-{os.getpid()}")
  shutil.rmtree(temp, ignore_errors=True)  # left by a crashed process
  # makedirs, not mkdtemp: the umask's permissions (mkdtemp's are 0700), so
  # a server running as another user can read the version.
  os.makedirs(temp)
  try:
    signatures = {"serving_default": module.serve}
    if hasattr(module, "serve_float"):
      signatures["serving_float"] = module.serve_float
    tf.saved_model.save(module, temp, signatures=signatures)
    result = {"saved_model": os.path.join(export_dir, str(version)),
              "version": version, "tflite": None, "tflite_quant": None}
    for wanted, key, name, quantize in (
        (tflite, "tflite", TFLITE_FILE, False),
        (tflite_quantize, "tflite_quant", TFLITE_QUANT_FILE, True)):
      if wanted:
        result[key] = os.path.join(export_dir, name)
        _write_tflite(temp, result[key], quantize=quantize)
    os.rename(temp, result["saved_model"])
  finally:
    shutil.rmtree(temp, ignore_errors=True)  # gone after the rename
  if digest_fn is not None:
    result["weights_digest"] = digest_fn(copy)
  console.info(f"exported version {version} to {result['saved_model']}"
               + "".join(f"; {result[k]}" for k in ("tflite", "tflite_quant")
                         if result[k]))
  return result
