r"""Predicts with an exported model: images, or records of any features.

    python -m tfdist.predict --model=/tmp/export digit.png other.png
    python -m tfdist.predict --model=/tmp/export/model.tflite \
        tfdist/datasets/mnist/t10k-images-idx3-ubyte.gz \
        --labels=tfdist/datasets/mnist/t10k-labels-idx1-ubyte.gz
    python -m tfdist.predict --model=/tmp/export \
        --records='/tmp/records/test-*'

``--model`` is an export directory (its newest version is used), one
SavedModel version directory, or a ``.tflite`` file (tfdist.exported). The
inputs are PNG images or an IDX images file (a model of one image), or
``--records``: TFRecord files with their manifest (python -m tfdist.data
write), read as training reads them, their labels giving the accuracy.
Each example gets one line ``NAME<TAB>CLASS<TAB>PROBABILITY``; the last
line is one JSON object with the count and, with labels, the accuracy.
Bad input is one ``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import gzip
import os
import sys
from typing import Optional, Sequence

import numpy as np

from tfdist import cli
from tfdist import console
from tfdist import data as data_lib
from tfdist import errors
from tfdist import exported
from tfdist import tf_startup
from tfdist.errors import ConfigError
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GZIP_SIGNATURE = b"\x1f\x8b"
# IDX magic numbers (tfdist.data checks them when reading).
_IDX_IMAGES_MAGIC = data_lib._IMAGES_MAGIC  # pylint: disable=protected-access
_IDX_LABELS_MAGIC = data_lib._LABELS_MAGIC  # pylint: disable=protected-access
# Pillow's modes for 8-bit images, and the channels each decodes to.
_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}


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


def _read_records(pattern: str, loaded: exported.Model) -> tuple:
  """(names, {input: array}, labels) of every record of ``pattern``."""
  from tfdist.data import records  # pylint: disable=g-import-not-at-top
  from tfdist.data import sources  # pylint: disable=g-import-not-at-top
  files, spec = sources.open_split(pattern, image_shape=loaded.image_shape)
  features = spec.model_features
  missing = sorted(set(loaded.inputs) - set(features))
  if missing:
    raise ConfigError(f"--records={pattern}: the model takes "
                      f"{missing[0]!r}, which these records lack (they have "
                      f"{', '.join(features)}); pass the records the model "
                      "was trained on")
  with records.reading(files):
    inputs, labels = records.serving_inputs(files, spec)
  names = [f"{path}[{i}]" for path, count in _counts(files) for i in
           range(count)]
  return names, inputs, labels


def _counts(files) -> list:
  from tfdist.data import framing  # pylint: disable=g-import-not-at-top
  return [(path, framing.count(path)) for path in files]


def _read_images(inputs: Sequence[str], labels: Optional[str],
                 loaded: exported.Model) -> tuple:
  """(names, {input: images}, labels or None) of PNG or IDX inputs."""
  if loaded.image_shape is None:
    raise ConfigError(f"{loaded.path} takes {', '.join(loaded.inputs)}, not "
                      "one image: pass --records=PATTERN of its records")
  names, images = read_inputs(inputs, image_shape=loaded.image_shape)
  truth = None
  if labels is not None:
    truth = data_lib.read_idx(labels, expect_magic=_IDX_LABELS_MAGIC)
    if len(truth) != len(images):
      raise ConfigError(f"--labels={labels} has {len(truth)} labels for "
                        f"{len(images)} images; use the matching labels file")
  return names, {next(iter(loaded.inputs)): images}, truth


def _check_inputs(inputs: Sequence[str], labels: Optional[str],
                  records_pattern: Optional[str]) -> None:
  """What can be checked before a model is loaded (no TensorFlow)."""
  if records_pattern and (inputs or labels):
    raise ConfigError("--records reads examples and their labels: drop the "
                      "image inputs and --labels")
  if not records_pattern and not inputs:
    raise ConfigError("nothing to predict: pass PNG images, an IDX images "
                      "file, or --records=PATTERN")
  for path in inputs:
    _file_kind(path)
  if labels is not None and (len(inputs) != 1
                             or _file_kind(inputs[0]) != "idx"):
    raise ConfigError(f"--labels={labels} needs exactly one IDX images "
                      "file as input, in the same order")


def predict(*, model: str, inputs: Sequence[str] = (),
            labels: Optional[str] = None, records: Optional[str] = None,
            signature: str = "serving_default", out=sys.stdout) -> dict:
  """Prints one line per example and returns the summary (accuracy when
  there are labels).

  Inputs are checked before the model is loaded where no model is needed,
  so a wrong file is reported before TensorFlow starts.
  """
  kind, resolved = exported.resolve_model(model)
  _check_inputs(inputs, labels, records)
  loaded = exported.load_model(model, signature=signature)
  if records:
    names, values, truth = _read_records(records, loaded)
  else:
    names, values, truth = _read_images(inputs, labels, loaded)
  probabilities, classes = loaded.predict_fn(values)
  for name, predicted, p in zip(names, classes, probabilities):
    out.write(f"{name}\t{predicted}\t{p[predicted]:.4f}\n")
  summary = {"model": resolved, "format": kind, "signature": signature,
             "examples" if records else "images": len(classes)}
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
  parser.add_argument("--records", help="TFRecord files with a manifest "
                      "(a glob or comma-separated): predicts every record and "
                      "prints the accuracy against its labels")
  parser.add_argument("inputs", nargs="*", metavar="INPUT",
                      help="PNG images or one IDX images file")
  args = parser.parse_args(argv)

  def predict_and_summarise() -> int:
    summary = predict(model=args.model, inputs=args.inputs,
                      labels=args.labels, records=args.records,
                      signature=args.signature)
    console.result(summary)
    return errors.EXIT_OK

  return cli.run(predict_and_summarise)


if __name__ == "__main__":
  # TensorFlow's C++ INFO lines would bury the predictions; warnings remain;
  # no CUDA error on a machine without a GPU.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  tf_startup.prepare(os.environ, has_gpu=tf_startup.has_gpu_device())
  sys.exit(main())
