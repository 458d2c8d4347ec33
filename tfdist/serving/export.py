"""Export a trained model for serving (SavedModel) and for devices (TFLite).

Layout of an export directory, the one TensorFlow Serving reads::

    EXPORT_DIR/1/                 SavedModel, version 1 (saved_model.pb ...)
    EXPORT_DIR/1/assets.extra/tfdist.json   its description
    EXPORT_DIR/2/                 the next export to the same directory
    EXPORT_DIR/model.tflite       float TensorFlow Lite model (--tflite)
    EXPORT_DIR/model_quant.tflite dynamic-range quantised (--tflite_quantize)
    EXPORT_DIR/model.tflite.json  the description of each TFLite model

The signatures (raw features by name in; class names and probabilities,
labels or values out) and the description (features with their CSV
columns, task, label columns, class names) are tfdist.serving.signatures's.
The TFLite models carry ``serving_default`` (not for id lists or strings: see
tfdist.serving.signatures.check_tflite).

The export is written from a model whose variables are plain: under a
distribution strategy, the trainer's plain copy of the trained model
(tfdist.training.sharding.plain_copy: every variable read wherever it lives
and a sharded one copied whole), so one function exports from every
strategy, without collectives, on the chief alone, and the SavedModel holds
whole variables that ``tf.saved_model.load`` and TensorFlow Serving read
(neither loads partitioned ones). Imports tfdist.console and
tfdist.serving.signatures; TensorFlow lazily.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable, Optional

from tfdist import console
from tfdist.serving import signatures

SAVED_MODEL_FILE = "saved_model.pb"
TFLITE_FILE = "model.tflite"
TFLITE_QUANT_FILE = "model_quant.tflite"
SIGNATURES = ("serving_default", "serving_float")
# A TFLite model's description: beside it, this suffix added to its name.
TFLITE_DESCRIPTION_SUFFIX = ".json"


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


def _replace(path: str, write) -> None:
  """``write(file)`` into a file beside ``path``, renamed over it: a reader
  never sees half a file, even when an earlier export is being replaced."""
  temp = f"{path}.tmp-{os.getpid()}"
  with open(temp, "wb") as f:
    write(f)
  os.replace(temp, path)


def _write_tflite(saved_model_dir: str, path: str, *, quantize: bool,
                  description: signatures.Description) -> None:
  """A TFLite model of the SavedModel's ``serving_default`` at ``path``,
  its description beside it (written first: it says what the model takes)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  converter = tf.lite.TFLiteConverter.from_saved_model(
      saved_model_dir, signature_keys=["serving_default"])
  if quantize:
    # Dynamic-range quantisation: int8 weights (4x smaller), float
    # activations; no calibration data needed.
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  flatbuffer = converter.convert()
  _replace(path + TFLITE_DESCRIPTION_SUFFIX,
           lambda f: f.write(description.to_json().encode()))
  _replace(path, lambda f: f.write(flatbuffer))


def _write_version(module, temp: str, *, description: signatures.Description,
                   export_dir: str, version: int, tflite: bool,
                   tflite_quantize: bool) -> dict:
  """The SavedModel and its description into ``temp``, the TFLite models
  into ``export_dir``; ``temp`` renamed to its version last."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  functions = {"serving_default": module.serve}
  if hasattr(module, "serve_float"):
    functions["serving_float"] = module.serve_float
  tf.saved_model.save(module, temp, signatures=functions)
  signatures.write_description(
      description, os.path.join(temp, signatures.DESCRIPTION_FILE))
  result = {"saved_model": os.path.join(export_dir, str(version)),
            "version": version, "tflite": None, "tflite_quant": None}
  for wanted, key, name, quantize in (
      (tflite, "tflite", TFLITE_FILE, False),
      (tflite_quantize, "tflite_quant", TFLITE_QUANT_FILE, True)):
    if wanted:
      result[key] = os.path.join(export_dir, name)
      _write_tflite(temp, result[key], quantize=quantize,
                    description=description)
  os.rename(temp, result["saved_model"])
  return result


def export(model, *, source, export_dir: str,
           probabilities: bool = False, tflite: bool = False,
           tflite_quantize: bool = False,
           digest_fn: Optional[Callable] = None) -> dict:
  """Writes the next SavedModel version of ``model`` (and TFLite models).

  Call on the chief only, outside ``strategy.scope()``, with a model whose
  variables are plain (built outside any strategy: of a model trained
  under one, tfdist.training.sharding.plain_copy). Nothing is half
  written: the SavedModel is assembled in a hidden directory and renamed to
  its version number, the name TensorFlow Serving watches for.

  Args:
    model: the trained Keras model, its variables plain.
    source: the data it trained on (tfdist.data.sources): its features,
      task, label columns and classes.
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
  description = signatures.Description(dict(source.features),
                                    signatures.target_of(source))
  module = signatures.serving_module(model, features=description.features,
                                    target=description.target,
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
    result = _write_version(module, temp, description=description,
                            export_dir=export_dir, version=version,
                            tflite=tflite, tflite_quantize=tflite_quantize)
  finally:
    shutil.rmtree(temp, ignore_errors=True)  # gone after the rename
  if digest_fn is not None:
    result["weights_digest"] = digest_fn(model)
  console.info(f"exported version {version} to {result['saved_model']}"
               + "".join(f"; {result[k]}" for k in ("tflite", "tflite_quant")
                         if result[k]))
  return result
