"""Image files as an export takes them: PNG, JPEG and MNIST's IDX files.

Owns recognising a file by its first bytes (:func:`file_kind`: the formats
the converter, tfdist.data.convert, reads), checking each image against the
model's size and channels before TensorFlow starts (:func:`check`: Pillow
reads the header only), and decoding them (:func:`read`) with TensorFlow's
decoder, the one the training pipeline uses (tfdist.data.parsing), so a
JPEG's pixels are those training saw (Pillow's JPEG decoder differs from it
by a few levels).

Channels are converted as the training pipeline converts them: a folder
that mixes grayscale and colour images trains on colour, every image
decoded with three channels (grayscale repeated, an alpha channel
dropped), so a grayscale image given to a colour model is read the same
way. A colour image given to a grayscale model is refused: training never
turned colour into gray. Imports tfdist.data (the IDX reader) and
tfdist.errors; TensorFlow and Pillow lazily.
"""

from __future__ import annotations

import gzip
import os
from typing import Sequence, Tuple

import numpy as np

from tfdist import data as data_lib
from tfdist.errors import ConfigError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8"
_GZIP_SIGNATURE = b"\x1f\x8b"
# IDX magic numbers (tfdist.data checks them when reading).
IDX_IMAGES_MAGIC = data_lib._IMAGES_MAGIC  # pylint: disable=protected-access
IDX_LABELS_MAGIC = data_lib._LABELS_MAGIC  # pylint: disable=protected-access
WHAT = "PNG or JPEG images or an IDX images file"
# Pillow's modes and the channels TensorFlow decodes each to by itself (the
# converter's count: tfdist.data.convert.encode_image).
_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "I;16B": 1, "LA": 2,
             "RGB": 3, "YCbCr": 3, "RGBA": 4, "CMYK": 4}


def file_kind(path: str) -> str:
  """``png``, ``jpeg`` or ``idx`` from a file's first bytes; ConfigError
  otherwise."""
  if not os.path.isfile(path):
    raise ConfigError(f"{path}: no such file; pass {WHAT}")
  with open(path, "rb") as f:
    head = f.read(8)
  if head.startswith(_PNG_SIGNATURE):
    return "png"
  if head.startswith(_JPEG_SIGNATURE):
    return "jpeg"
  if head.startswith(_GZIP_SIGNATURE):
    try:
      with gzip.open(path, "rb") as f:
        head = f.read(4)
    except (OSError, EOFError):
      head = b""
  if len(head) >= 4 and int.from_bytes(head[:4], "big") == IDX_IMAGES_MAGIC:
    return "idx"
  raise ConfigError(f"{path} is neither a PNG or JPEG image nor an IDX "
                    f"images file (e.g. t10k-images-idx3-ubyte.gz); pass "
                    f"{WHAT}")


def _header_shape(path: str) -> tuple:
  """``(height, width, channels)`` of an image file, from its header."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      mode, height, width = image.mode, image.height, image.width
      transparent = "transparency" in image.info
  except (OSError, SyntaxError, ValueError) as e:
    raise ConfigError(f"{path}: not a readable image ({e}); re-save it as "
                      "an 8-bit PNG or a JPEG")
  channels = 4 if mode == "P" and transparent else 3 if mode == "P" else \
      _CHANNELS.get(mode)
  if channels is None:
    raise ConfigError(f"{path}: a {mode} image; re-save it as an 8-bit "
                      "grayscale or RGB PNG or JPEG")
  return height, width, channels


def _describe(channels: int) -> str:
  return {1: "grayscale", 3: "RGB"}.get(channels, f"{channels}-channel")


def check(path: str, shape: tuple, expected: tuple) -> None:
  """ConfigError when an image of ``shape`` cannot be read as the model's
  ``expected`` (H, W, C): another size, or colour for a grayscale model."""
  height, width, channels = expected
  if tuple(shape[:2]) != (height, width):
    raise ConfigError(f"{path} is {shape[1]}x{shape[0]} pixels, the model "
                      f"takes {width}x{height}; resize it to {width}x{height}")
  # Colour: 3 or 4 channels (RGB, RGBA); grayscale: 1 or 2 (with alpha).
  if shape[2] >= 3 > channels:
    raise ConfigError(f"{path} has {shape[2]} channels, the model takes "
                      f"{channels} ({_describe(channels)}); convert it to "
                      f"{_describe(channels)}")


def check_all(paths: Sequence[str], image_shape: tuple) -> None:
  """Checks every file against the model's image, without TensorFlow."""
  for path in paths:
    if file_kind(path) == "idx":
      # tfdist.data.read_idx reads MNIST's 28x28 grayscale images only.
      check(path, data_lib.MNIST_SHAPE, image_shape)
      if image_shape[2] not in (1, 3):
        raise ConfigError(f"{path}: grayscale images, the model takes "
                          f"{image_shape[2]} channels")
    else:
      check(path, _header_shape(path), image_shape)


def _decoded(path: str, channels: int) -> np.ndarray:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f:
    data = f.read()
  try:
    return tf.io.decode_image(data, channels=channels,
                              expand_animations=False).numpy()
  except tf.errors.InvalidArgumentError as e:
    raise ConfigError(f"{path}: cannot decode it "
                      f"({e.message.splitlines()[0][:100]}); re-save it as "
                      "a PNG or JPEG") from None


def read(paths: Sequence[str], *,
         image_shape: tuple) -> Tuple[list, np.ndarray]:
  """``(names, uint8 images [N, H, W, C])`` of image and IDX files checked
  by :func:`check_all`, read as the model takes them (see the module
  docstring).

  Raises:
    ConfigError: an image that does not decode; the message names the file.
  """
  channels = image_shape[2]
  names, batches = [], []
  for path in paths:
    if file_kind(path) == "idx":
      images = data_lib.read_idx(path, expect_magic=IDX_IMAGES_MAGIC)[..., None]
      names.extend(f"{path}[{i}]" for i in range(len(images)))
      batches.append(np.repeat(images, channels, axis=-1))
    else:
      names.append(path)
      batches.append(_decoded(path, channels)[None])
  return names, np.concatenate(batches)
