"""Loads an export for prediction: a SavedModel or a ``.tflite`` model.

Owns :class:`Model` (what a loaded export takes and how to call it),
:func:`resolve_model`, which finds what a path is (an export directory, one of
its numbered versions, a ``.tflite`` file) and reads its description
(tfdist.serving.signatures) without TensorFlow, and :func:`load_model`, which
loads it: a SavedModel with TensorFlow, a TFLite model on the LiteRT interpreter
(the runtime of phones and boards), without TensorFlow. Either takes the
features of tfdist.serving.signatures's ``serving_default`` by name. An export
of an older tfdist has no description: it loads, predicts class ids (no names)
and reads no CSV rows. Imports tfdist.errors, signatures.export (its file names)
and serving.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from tfdist.errors import ConfigError
from tfdist.serving import export as export_lib
from tfdist.serving import signatures

SAVED_MODEL, TFLITE = "saved_model", "tflite"
_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class Found:
  """What a path is, found without TensorFlow.

  Attributes:
    path: the SavedModel directory or ``.tflite`` file to load.
    format: ``saved_model`` or ``tflite``.
    description: what the export takes and predicts
      (tfdist.serving.signatures), or None for an export of an older
      tfdist.
  """
  path: str
  format: str
  description: Optional[signatures.Description]


@dataclasses.dataclass(frozen=True)
class Model:
  """A loaded export.

  Attributes:
    found: its path, format and description.
    inputs: each input's name -> (dtype name, shape without the batch).
    predict_fn: ``{input name: array [N, ...]}`` -> ``{output name: array
      [N, ...]}`` (tfdist.serving.signatures's outputs).
  """
  found: Found
  inputs: Dict[str, Tuple[str, tuple]]
  predict_fn: Callable

  @property
  def path(self) -> str:
    return self.found.path

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


def _locate(path: str) -> tuple:
  """``(format, file or directory)`` of ``path`` (see resolve_model)."""
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


def resolve_model(path: str) -> Found:
  """Finds what ``path`` is and reads its description, without TensorFlow.

  Raises:
    ConfigError: ``path`` is neither a SavedModel, an export directory with
      numbered versions, nor a TFLite flatbuffer; or its description is
      unreadable.
  """
  kind, resolved = _locate(path)
  description = (resolved + export_lib.TFLITE_DESCRIPTION_SUFFIX
                 if kind == TFLITE
                 else os.path.join(resolved, signatures.DESCRIPTION_FILE))
  return Found(resolved, kind, signatures.read_description(description))


def _batched(predict_one: Callable) -> Callable:
  """Runs ``predict_one`` on slices of at most _BATCH examples."""

  def predict_fn(inputs: dict):
    count = len(next(iter(inputs.values())))
    outputs = [predict_one({k: v[i:i + _BATCH] for k, v in inputs.items()})
               for i in range(0, count, _BATCH)]
    return {name: np.concatenate([o[name] for o in outputs])
            for name in outputs[0]}

  return predict_fn


def _outputs(found: Found, outputs: dict, signature: str) -> dict:
  """The outputs as numpy arrays (strings decoded), checked: those the
  description names, or (an older export) probabilities and classes."""
  expected = (signatures.OUTPUTS[found.description.target.task]
              if found.description else ("probabilities", "classes"))
  if not set(expected) <= set(outputs):
    raise not_an_export(found.path, f"its {signature} signature returns "
                        f"{', '.join(sorted(outputs))}, not "
                        f"{', '.join(expected)}")
  arrays = {name: np.asarray(outputs[name]) for name in expected}
  if "class_names" in arrays:
    arrays["class_names"] = np.array(
        [n.decode() if isinstance(n, bytes) else str(n)
         for n in arrays["class_names"]], dtype=object)
  return arrays


def _cast(value, dtype_name: str, shape: tuple):
  """An input as the signature takes it: uint8 pixels become 0..1 floats
  for a float image input (serving_float), strings UTF-8 bytes, other
  values its dtype."""
  value = np.asarray(value)
  if dtype_name == "string":
    return np.array([v if isinstance(v, bytes) else str(v).encode()
                     for v in value.reshape(-1)], dtype=object).reshape(
                         value.shape)
  if (len(shape) == 3 and dtype_name.startswith("float")
      and value.dtype == np.uint8):
    return value.astype(np.float32) / 255.0
  return value.astype(dtype_name)


def _load_saved_model(found: Found, signature: str) -> Model:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = found.path
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
    return _outputs(found, {k: v.numpy() for k, v in outputs.items()},
                    signature)

  return Model(found, inputs, _batched(predict_one))


def _load_tflite(found: Found, signature: str) -> Model:
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  path = found.path
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
    return _outputs(found, runner(**{
        name: _cast(values[name], *inputs[name]) for name in inputs}),
                    signature)

  return Model(found, inputs, _batched(predict_one))


def load_model(found: Found, *, signature: str = "serving_default") -> Model:
  """Loads an export found by :func:`resolve_model` for prediction."""
  if found.format == TFLITE:
    return _load_tflite(found, signature)
  return _load_saved_model(found, signature)
