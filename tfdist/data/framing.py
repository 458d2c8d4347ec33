"""TFRecord files read by their framing, without TensorFlow's runtime.

Owns the few reads a trainer makes before its strategy exists (the first
record's features, a count of records): TensorFlow's eager runtime may not
start before the strategy configures the devices, so these use
``tf.io.gfile`` (any filesystem TensorFlow opens) and parse the framing
here: each record is a little-endian uint64 length, a 4-byte CRC of it, the
data and a 4-byte CRC of the data. Imports tfdist.errors; TensorFlow lazily.
"""

from __future__ import annotations

import struct
from typing import Iterator

from tfdist.errors import ConfigError

_HEADER = 12  # uint64 length + CRC
_FOOTER = 4   # CRC of the data


def _truncated(path: str) -> ConfigError:
  return ConfigError(f"{path}: truncated or corrupt TFRecord file (a record "
                     "runs past its end); write it again")


def _lengths(f, path: str, size: int) -> Iterator[int]:
  """The data length of each record; leaves ``f`` at that record's data."""
  while f.tell() < size:
    header = f.read(_HEADER)
    if len(header) < _HEADER:
      raise _truncated(path)
    (length,) = struct.unpack("<Q", header[:8])
    if f.tell() + length + _FOOTER > size:
      raise _truncated(path)
    yield length


def count(path: str) -> int:
  """Records in ``path``, reading headers only (one seek per record)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  size = tf.io.gfile.stat(path).length
  records = 0
  with tf.io.gfile.GFile(path, "rb") as f:
    for length in _lengths(f, path, size):
      f.seek(f.tell() + length + _FOOTER)
      records += 1
  return records


def first(path: str) -> bytes:
  """The first record's bytes.

  Raises:
    ConfigError: an empty or truncated file, naming it.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  size = tf.io.gfile.stat(path).length
  with tf.io.gfile.GFile(path, "rb") as f:
    for length in _lengths(f, path, size):
      return f.read(length)
  raise ConfigError(f"{path}: holds no record; rewrite it")
