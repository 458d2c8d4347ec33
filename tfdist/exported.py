"""Loads an export for prediction: a SavedModel or a ``.tflite`` model.

Owns :class:`Model` (what a loaded export takes and how to call it) and
:func:`load_model`, which finds what a path is (an export directory, one of
its numbered versions, a ``.tflite`` file) without TensorFlow and loads it:
a SavedModel with TensorFlow, a TFLite model on the LiteRT interpreter
(the runtime of phones and boards), without TensorFlow. Either takes the
features of tfdist.export's ``serving_default`` by name. Imports
tfdist.errors and tfdist.export (its file names).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, Tuple

import numpy as np

from tfdist import export as export_lib
from tfdist.errors import ConfigError

SAVED_MODEL, TFLITE = "saved_model", "tflite"
_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class Model:
  """A loaded export.

  Attributes:
    path: the SavedModel directory or ``.tflite`` file in use.
    format: ``saved_model`` or ``tflite``.
    inputs: each input's name -> (dtype name, shape without the batch).
    predict_fn: ``{input name: array [N, ...]}`` -> (probabilities
      ``[N, classes]``, classes ``[N]``).
  """
  path: str
  format: str
  inputs: Dict[str, Tuple[str, tuple]]
  predict_fn: Callable

  @property
  def image_shape(self):
    """``(H, W, C)`` when the model takes one image, else None."""
    if len(self.inputs) != 1:
      return None
    (_, shape), = self.inputs.values()
    return tuple(shape) if len(shape) == 3 else None


def not_an_export(path: str, why: str) -> ConfigError:
  return ConfigError(f"--model={path} is not an export ({why}); pass a "
                     "directory written by --export_dir, one of its numbered "
                     "versions, or its model.tflite")


def resolve_model(path: str) -> tuple:
  """Finds what ``path`` is, without TensorFlow: (format, file or directory).

  Raises:
    ConfigError: ``path`` is neither a SavedModel, an export directory with
      numbered versions, nor a TFLite flatbuffer.
  """
  if os.path.isfile(path):
    with open(path, "rb") as f:
      head = f.read(8)
    # A TFLite flatbuffer carries its identifier at bytes 4..8.
    if head[4:8] != b"TFL3":
      raise not_an_export(path, "a file that is not a TFLite model")
    return TFLITE, path
  if not os.path.isdir(path):
    raise not_an_export(path, "no such file or directory")
  if os.path.isfile(os.path.join(path, export_lib.SAVED_MODEL_FILE)):
    return SAVED_MODEL, path
  found = export_lib.versions(path)
  if not found:
    raise not_an_export(path, "a directory without saved_model.pb or "
                        "numbered versions")
  return SAVED_MODEL, os.path.join(path, str(found[-1]))


def _batched(predict_one: Callable) -> Callable:
  """Runs ``predict_one`` on slices of at most _BATCH examples."""

  def predict_fn(inputs: dict):
    count = len(next(iter(inputs.values())))
    outputs = [predict_one({k: v[i:i + _BATCH] for k, v in inputs.items()})
               for i in range(0, count, _BATCH)]
    return (np.concatenate([p for p, _ in outputs]),
            np.concatenate([c for _, c in outputs]))

  return predict_fn


def _outputs(path: str, outputs, signature: str) -> tuple:
  if not {"probabilities", "classes"} <= set(outputs):
    raise not_an_export(path, f"its {signature} signature returns "
                        f"{', '.join(sorted(outputs))}, not probabilities "
                        "and classes")
  return np.asarray(outputs["probabilities"]), np.asarray(outputs["classes"])


def _cast(value, dtype_name: str, shape: tuple):
  """An input as the signature takes it: uint8 pixels become 0..1 floats
  for a float image input (serving_float), other values its dtype."""
  value = np.asarray(value)
  if (len(shape) == 3 and dtype_name.startswith("float")
      and value.dtype == np.uint8):
    return value.astype(np.float32) / 255.0
  return value.astype(dtype_name)


def _load_saved_model(path: str, signature: str) -> Model:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    loaded = tf.saved_model.load(path)
  except (OSError, ValueError, tf.errors.OpError) as e:
    raise not_an_export(path, f"TensorFlow cannot load it: "
                        f"{str(e).splitlines()[0][:200]}")
  if signature not in loaded.signatures:
    raise ConfigError(f"--signature={signature}: {path} has "
                      f"{', '.join(sorted(loaded.signatures)) or 'none'}")
  specs = loaded.signatures[signature].structured_input_signature[1]
  inputs = {name: (spec.dtype.name, tuple(spec.shape[1:]))
            for name, spec in specs.items()}

  def predict_one(values):
    # Through ``loaded``: a signature function stops working once the loaded
    # object is garbage collected, so the closure keeps it alive.
    outputs = loaded.signatures[signature](**{
        name: tf.constant(_cast(values[name], *inputs[name]))
        for name in inputs})
    return _outputs(path, {k: v.numpy() for k, v in outputs.items()},
                    signature)

  return Model(path, SAVED_MODEL, inputs, _batched(predict_one))


def _load_tflite(path: str, signature: str) -> Model:
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  try:
    interpreter = litert.Interpreter(model_path=path)
  except (RuntimeError, ValueError) as e:
    raise not_an_export(path, f"LiteRT cannot load it: {e}")
  signatures = interpreter.get_signature_list()
  if signature not in signatures:
    raise ConfigError(f"--signature={signature}: {path} has "
                      f"{', '.join(sorted(signatures)) or 'none'}")
  runner = interpreter.get_signature_runner(signature)
  inputs = {name: (np.dtype(detail["dtype"]).name,
                   tuple(int(d) for d in detail["shape"][1:]))
            for name, detail in runner.get_input_details().items()}

  def predict_one(values):
    # The runner resizes the inputs to each batch's size.
    return _outputs(path, runner(**{
        name: _cast(values[name], *inputs[name]) for name in inputs}),
                    signature)

  return Model(path, TFLITE, inputs, _batched(predict_one))


def load_model(path: str, *, signature: str = "serving_default") -> Model:
  """Loads an export (see :func:`resolve_model`) for prediction."""
  kind, resolved = resolve_model(path)
  if kind == TFLITE:
    return _load_tflite(resolved, signature)
  return _load_saved_model(resolved, signature)
