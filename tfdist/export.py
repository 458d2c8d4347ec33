"""Export a trained model for serving (SavedModel) and for devices (TFLite).

Layout of an export directory, the one TensorFlow Serving reads::

    EXPORT_DIR/1/                 SavedModel, version 1 (saved_model.pb ...)
    EXPORT_DIR/2/                 the next export to the same directory
    EXPORT_DIR/model.tflite       float TensorFlow Lite model (--tflite)
    EXPORT_DIR/model_quant.tflite dynamic-range quantised (--tflite_quantize)

Every SavedModel has two signatures over images of the training data's shape
(28x28x1 for MNIST, the dataset's shape for any other trainer):

``serving_default``
  ``images``: uint8 ``[batch, H, W, C]``, raw pixels 0..255.
``serving_float``
  ``images``: float32 ``[batch, H, W, C]``, pixels scaled to 0..1.

Both return ``probabilities`` (float32 ``[batch, classes]``) and ``classes``
(int64 ``[batch]``, the most probable class). The TFLite models carry
``serving_default``.

The export is built from a plain copy of the trained model, made outside any
distribution strategy: ``get_weights`` reads every variable wherever it lives
(mirrored on each replica, or on the ps tasks under ``ps``), so one function
exports from every strategy, without collectives, on the chief alone.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable, Optional, Sequence

from tfdist import console

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


def plain_copy(model, *, model_fn: Callable, image_shape: Sequence[int],
               num_classes: int):
  """A copy of ``model`` built outside any strategy, with its current weights.

  Raises:
    ValueError: called inside a strategy's scope, where the copy's variables
      would be distributed again.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if tf.distribute.has_strategy():
    raise ValueError("plain_copy must be called outside strategy.scope(): "
                     "the copy has to hold ordinary, local variables")
  copy = model_fn(tuple(image_shape), num_classes)
  # Reads mirrored variables locally and ps variables over RPC: the trained
  # values, whichever strategy trained them.
  copy.set_weights(model.get_weights())
  return copy


def serving_module(model, *, image_shape: Sequence[int]):
  """A ``tf.Module`` whose two functions are the serving signatures.

  ``model`` must output logits from images scaled to 0..1, the input that
  tfdist.data feeds during training.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shape = [None, *image_shape]

  class Serving(tf.Module):
    """Raw images in, class probabilities and the predicted class out."""

    def __init__(self):
      super().__init__(name="serving")
      self.model = model  # tracked: the SavedModel saves its variables

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32,
                                                name="images")])
    def serve_float(self, images):
      probabilities = tf.nn.softmax(self.model(images, training=False))
      return {"probabilities": probabilities,
              "classes": tf.argmax(probabilities, axis=-1)}

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8,
                                                name="images")])
    def serve_uint8(self, images):
      # The same scaling as training (tfdist.data), so served predictions
      # equal the trainer's evaluation exactly.
      return self.serve_float(tf.cast(images, tf.float32) / 255.0)

  return Serving()


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


def export(model, *, model_fn: Callable, image_shape: Sequence[int],
           num_classes: int, export_dir: str, tflite: bool = False,
           tflite_quantize: bool = False,
           digest_fn: Optional[Callable] = None) -> dict:
  """Writes the next SavedModel version of ``model`` (and TFLite models).

  Call on the chief only, outside ``strategy.scope()``. Nothing is half
  written: the SavedModel is assembled in a hidden directory and renamed to
  its version number, the name TensorFlow Serving watches for.

  Args:
    model: the trained Keras model (any strategy), outputting logits.
    model_fn: the function that built it, ``(input_shape, num_classes)``.
    image_shape: ``(H, W, C)`` of the training images.
    num_classes: how many classes the model predicts.
    export_dir: the export directory (created if missing).
    tflite: also write ``model.tflite`` (float).
    tflite_quantize: also write ``model_quant.tflite`` (dynamic range).
    digest_fn: if given, ``digest_fn(copy)`` is reported as
      ``weights_digest``, to compare with the trained model's.

  Returns:
    Where everything went: ``saved_model``, ``version``, ``tflite`` and
    ``tflite_quant`` (None when not written), ``weights_digest``.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  copy = plain_copy(model, model_fn=model_fn, image_shape=image_shape,
                    num_classes=num_classes)
  module = serving_module(copy, image_shape=image_shape)
  os.makedirs(export_dir, exist_ok=True)
  version = (versions(export_dir) or [0])[-1] + 1
  # A name that is not a number: TensorFlow Serving ignores it while it fills.
  temp = os.path.join(export_dir, f".tmp-{version}-{os.getpid()}")
  shutil.rmtree(temp, ignore_errors=True)  # left by a crashed process
  # makedirs, not mkdtemp: the umask's permissions (mkdtemp's are 0700), so
  # a server running as another user can read the version.
  os.makedirs(temp)
  try:
    tf.saved_model.save(module, temp, signatures={
        "serving_default": module.serve_uint8,
        "serving_float": module.serve_float})
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
