r"""Predicts with an exported model: PNG images or an IDX images file.

    python -m tfdist.predict --model=/tmp/export digit.png other.png
    python -m tfdist.predict --model=/tmp/export/model.tflite \
        tfdist/datasets/mnist/t10k-images-idx3-ubyte.gz \
        --labels=tfdist/datasets/mnist/t10k-labels-idx1-ubyte.gz

``--model`` is an export directory (its newest version is used), one
SavedModel version directory, or a ``.tflite`` file. Each image gets one line
``NAME<TAB>CLASS<TAB>PROBABILITY``; the last line is one JSON object with the
count and, given ``--labels``, the accuracy. A ``.tflite`` model runs on the
LiteRT interpreter (the runtime of phones and boards), without TensorFlow.
Bad input is one ``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import sys
from typing import Callable, Optional, Sequence

import numpy as np

from tfdist import cli
from tfdist import console
from tfdist import data as data_lib
from tfdist import errors
from tfdist import export as export_lib
from tfdist.errors import ConfigError

SAVED_MODEL, TFLITE = "saved_model", "tflite"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GZIP_SIGNATURE = b"\x1f\x8b"
# IDX magic numbers (tfdist.data checks them when reading).
_IDX_IMAGES_MAGIC = data_lib._IMAGES_MAGIC  # pylint: disable=protected-access
_IDX_LABELS_MAGIC = data_lib._LABELS_MAGIC  # pylint: disable=protected-access
# Pillow's modes for 8-bit images, and the channels each decodes to.
_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class Model:
  """A loaded export.

  Attributes:
    path: the SavedModel directory or ``.tflite`` file in use.
    format: ``saved_model`` or ``tflite``.
    image_shape: ``(H, W, C)`` the model takes.
    predict_fn: uint8 images ``[N, H, W, C]`` -> (probabilities
      ``[N, classes]``, classes ``[N]``).
  """
  path: str
  format: str
  image_shape: tuple
  predict_fn: Callable


def _not_an_export(path: str, why: str) -> ConfigError:
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
      raise _not_an_export(path, "a file that is not a TFLite model")
    return TFLITE, path
  if not os.path.isdir(path):
    raise _not_an_export(path, "no such file or directory")
  if os.path.isfile(os.path.join(path, export_lib.SAVED_MODEL_FILE)):
    return SAVED_MODEL, path
  found = export_lib.versions(path)
  if not found:
    raise _not_an_export(path, "a directory without saved_model.pb or "
                         "numbered versions")
  return SAVED_MODEL, os.path.join(path, str(found[-1]))


def _batched(predict_one: Callable) -> Callable:
  """Runs ``predict_one`` on slices of at most _BATCH images."""

  def predict_fn(images: np.ndarray):
    outputs = [predict_one(images[i:i + _BATCH])
               for i in range(0, len(images), _BATCH)]
    return (np.concatenate([p for p, _ in outputs]),
            np.concatenate([c for _, c in outputs]))

  return predict_fn


def _outputs(path: str, outputs, signature: str) -> tuple:
  if not {"probabilities", "classes"} <= set(outputs):
    raise _not_an_export(path, f"its {signature} signature returns "
                         f"{', '.join(sorted(outputs))}, not probabilities "
                         "and classes")
  return np.asarray(outputs["probabilities"]), np.asarray(outputs["classes"])


def _scale_for(dtype_name: str) -> Callable:
  # serving_float takes pixels scaled to 0..1 (see tfdist.export).
  if dtype_name.startswith("float"):
    return lambda images: images.astype(np.float32) / 255.0
  return lambda images: images


def _load_saved_model(path: str, signature: str) -> Model:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    loaded = tf.saved_model.load(path)
  except (OSError, ValueError, tf.errors.OpError) as e:
    raise _not_an_export(path, f"TensorFlow cannot load it: "
                         f"{str(e).splitlines()[0][:200]}")
  if signature not in loaded.signatures:
    raise ConfigError(f"--signature={signature}: {path} has "
                      f"{', '.join(sorted(loaded.signatures)) or 'none'}")
  function = loaded.signatures[signature]
  inputs = function.structured_input_signature[1]
  if len(inputs) != 1:
    raise _not_an_export(path, f"its {signature} signature takes "
                         f"{len(inputs)} inputs, not one image batch")
  (name, spec), = inputs.items()
  scale = _scale_for(spec.dtype.name)

  def predict_one(images):
    # Through ``loaded``: a signature function stops working once the loaded
    # object is garbage collected, so the closure keeps it alive.
    outputs = loaded.signatures[signature](
        **{name: tf.constant(scale(images), dtype=spec.dtype)})
    return _outputs(path, {k: v.numpy() for k, v in outputs.items()},
                    signature)

  return Model(path, SAVED_MODEL, tuple(spec.shape[1:]), _batched(predict_one))


def _load_tflite(path: str, signature: str) -> Model:
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  try:
    interpreter = litert.Interpreter(model_path=path)
  except (RuntimeError, ValueError) as e:
    raise _not_an_export(path, f"LiteRT cannot load it: {e}")
  signatures = interpreter.get_signature_list()
  if signature not in signatures:
    raise ConfigError(f"--signature={signature}: {path} has "
                      f"{', '.join(sorted(signatures)) or 'none'}")
  runner = interpreter.get_signature_runner(signature)
  inputs = runner.get_input_details()
  if len(inputs) != 1:
    raise _not_an_export(path, f"its {signature} signature takes "
                         f"{len(inputs)} inputs, not one image batch")
  (name, detail), = inputs.items()
  scale = _scale_for(np.dtype(detail["dtype"]).name)

  def predict_one(images):
    # The runner resizes the input to each batch's size.
    return _outputs(path, runner(**{name: scale(images)}), signature)

  return Model(path, TFLITE, tuple(int(d) for d in detail["shape"][1:]),
               _batched(predict_one))


def load_model(path: str, *, signature: str = "serving_default") -> Model:
  """Loads an export (see :func:`resolve_model`) for prediction."""
  kind, resolved = resolve_model(path)
  if kind == TFLITE:
    return _load_tflite(resolved, signature)
  return _load_saved_model(resolved, signature)


def _file_kind(path: str) -> str:
  """``png`` or ``idx`` from a file's first bytes; ConfigError otherwise."""
  if not os.path.isfile(path):
    raise ConfigError(f"{path}: no such file; pass PNG images or an IDX "
                      "images file")
  with open(path, "rb") as f:
    head = f.read(8)
  if head.startswith(_PNG_SIGNATURE):
    return "png"
  if head.startswith(_GZIP_SIGNATURE):
    try:
      with gzip.open(path, "rb") as f:
        head = f.read(4)
    except (OSError, EOFError):
      head = b""
  if len(head) >= 4 and int.from_bytes(head[:4], "big") == _IDX_IMAGES_MAGIC:
    return "idx"
  raise ConfigError(f"{path} is neither a PNG image nor an IDX images file "
                    "(e.g. t10k-images-idx3-ubyte.gz); pass PNG images or an "
                    "IDX images file")


def read_png(path: str) -> np.ndarray:
  """An 8-bit PNG as a uint8 array ``(H, W, C)``."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      image.load()
  except (OSError, SyntaxError, ValueError) as e:
    raise ConfigError(f"{path}: not a readable PNG ({e}); re-save it as an "
                      "8-bit PNG")
  if image.mode == "1":
    image = image.convert("L")  # 1-bit: black and white at 0 and 255
  elif image.mode == "P":
    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
  if image.mode not in _CHANNELS:
    raise ConfigError(f"{path}: a {image.mode} PNG; re-save it as an 8-bit "
                      "grayscale or RGB PNG")
  return np.asarray(image, dtype=np.uint8).reshape(
      image.height, image.width, _CHANNELS[image.mode])


def _check_shape(path: str, shape: tuple, expected: tuple) -> None:
  if tuple(shape) == tuple(expected):
    return
  height, width, channels = expected
  if tuple(shape[:2]) != (height, width):
    raise ConfigError(f"{path} is {shape[1]}x{shape[0]} pixels, the model "
                      f"takes {width}x{height}; resize it to {width}x{height}")
  kind = {1: "grayscale", 3: "RGB"}.get(channels, f"{channels}-channel")
  raise ConfigError(f"{path} has {shape[2]} channels, the model takes "
                    f"{channels} ({kind}); convert it to {kind}")


def read_inputs(paths: Sequence[str], *, image_shape: tuple) -> tuple:
  """Reads PNG files and IDX images files into (names, uint8 images).

  Raises:
    ConfigError: a file that is neither, or an image whose size or channels
      differ from ``image_shape``; the message names the file.
  """
  names, batches = [], []
  for path in paths:
    if _file_kind(path) == "png":
      image = read_png(path)
      _check_shape(path, image.shape, image_shape)
      names.append(path)
      batches.append(image[None])
    else:
      images = data_lib.read_idx(path, expect_magic=_IDX_IMAGES_MAGIC)[..., None]
      _check_shape(path, images.shape[1:], image_shape)
      names.extend(f"{path}[{i}]" for i in range(len(images)))
      batches.append(images)
  return names, np.concatenate(batches)


def predict(*, model: str, inputs: Sequence[str], labels: Optional[str] = None,
            signature: str = "serving_default", out=sys.stdout) -> dict:
  """Prints one line per image and returns the summary (accuracy if labels).

  Inputs are checked before the model is loaded where no model is needed,
  so a wrong file is reported before TensorFlow starts.
  """
  kind, resolved = resolve_model(model)
  for path in inputs:
    _file_kind(path)
  truth = None
  if labels is not None:
    if len(inputs) != 1 or _file_kind(inputs[0]) != "idx":
      raise ConfigError(f"--labels={labels} needs exactly one IDX images "
                        "file as input, in the same order")
    truth = data_lib.read_idx(labels, expect_magic=_IDX_LABELS_MAGIC)
  loaded = load_model(model, signature=signature)
  names, images = read_inputs(inputs, image_shape=loaded.image_shape)
  if truth is not None and len(truth) != len(images):
    raise ConfigError(f"--labels={labels} has {len(truth)} labels for "
                      f"{len(images)} images; use the matching labels file")
  probabilities, classes = loaded.predict_fn(images)
  for name, predicted, p in zip(names, classes, probabilities):
    out.write(f"{name}\t{predicted}\t{p[predicted]:.4f}\n")
  summary = {"model": resolved, "format": kind, "signature": signature,
             "images": len(images)}
  if truth is not None:
    correct = int(np.sum(classes == truth))
    summary.update(correct=correct, accuracy=round(correct / len(truth), 5))
  return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point: ``python -m tfdist.predict --model=PATH INPUT...``."""
  parser = cli.OneLineParser(
      prog="python -m tfdist.predict",
      description="Predict with a tfdist export (SavedModel or .tflite).")
  parser.add_argument("--model", required=True,
                      help="export directory, SavedModel version directory "
                      "or .tflite file")
  parser.add_argument("--labels", help="IDX labels file for an IDX images "
                      "input: prints the accuracy")
  parser.add_argument("--signature", default="serving_default",
                      help="serving_default (uint8 input) or serving_float "
                      "(0..1 floats); SavedModel only")
  parser.add_argument("inputs", nargs="+", metavar="INPUT",
                      help="PNG images or one IDX images file")
  args = parser.parse_args(argv)

  def predict_and_summarise() -> int:
    summary = predict(model=args.model, inputs=args.inputs,
                      labels=args.labels, signature=args.signature)
    console.result(summary)
    return errors.EXIT_OK

  return cli.run(predict_and_summarise)


if __name__ == "__main__":
  # TensorFlow's C++ INFO lines would bury the predictions; warnings remain.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  sys.exit(main())
