"""The window shuffle: endless batches of small records at low per-record cost.

Per-record work in ``tf.data`` (interleave, a shuffle buffer, batching)
costs more than a softmax step consumes. This path reads each file in chunks
of :data:`CHUNK` records, turns each chunk into examples with one batched
``parse``, shuffles the chunks, applies one random permutation to a window
of about ``window`` examples at a time (what a shuffle buffer of that size
does) and cuts the window into batches; what is left of a window opens the
next batch, so no record is dropped and each epoch is one whole pass over
the files, in a fresh order.

Small data (at most :data:`SMALL_BYTES` of files per pipeline) is parsed
once and kept in memory, as parsed uint8 chunks: later epochs read no file
and parse nothing, and are shuffled as the first.

Owns shuffled_batches and small. Imports nothing from tfdist; TensorFlow lazily.
"""

from __future__ import annotations

from typing import Callable, List

# Records read from one file at a time.
CHUNK = 256
# Files up to this size are small data: parsed once, then kept in memory
# (as TFDS caches small datasets); MNIST's raw shards are 19 MB.
SMALL_BYTES = 256 * 2**20


def shuffled_batches(files: List[str], parse: Callable, *, batch_size: int,
                     window: int, cycle_length: int, seed=None,
                     cache: bool = False):
  """Endless ``parse`` outputs of ``files``, shuffled, in ``batch_size`` rows.

  Args:
    files: the TFRecord files of this input pipeline.
    parse: ``(file names, serialized records) -> (inputs, labels[,
      weights])`` of a batch of records, the inputs a dict of images (one
      file name per record, for error messages).
    batch_size: rows per batch; every batch is full.
    window: records permuted together (rounded to whole chunks).
    cycle_length: files read at once.
    seed: of the file order and the permutations; None for fresh ones.
    cache: keep the parsed examples in memory after the first epoch (small
      data only: see :func:`small`), so later epochs read no file.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  names = tf.data.Dataset.from_tensor_slices(files).shuffle(
      len(files), seed=seed, reshuffle_each_iteration=True)

  def chunks(filename):
    return tf.data.TFRecordDataset(filename).batch(CHUNK).map(
        lambda records: parse(tf.fill(tf.shape(records), filename), records))

  def permuted(*parts):
    # (inputs, labels[, weights]), each (or each input) ragged by chunk.
    flat = tf.nest.map_structure(lambda part: part.flat_values, parts)
    labels = flat[1]
    order = tf.random.shuffle(tf.range(tf.shape(labels)[0]), seed=seed)
    return tf.nest.map_structure(lambda part: tf.gather(part, order), flat)

  ds = names.interleave(chunks, cycle_length=min(len(files), cycle_length),
                        num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=False)
  if cache:
    ds = ds.cache()
  # Chunks shuffled (every epoch), then a window of them permuted at once.
  per_window = max(1, window // CHUNK)
  ds = ds.shuffle(per_window, seed=seed, reshuffle_each_iteration=True)
  ds = ds.ragged_batch(per_window).map(permuted,
                                       num_parallel_calls=tf.data.AUTOTUNE)
  return ds.repeat().rebatch(batch_size, drop_remainder=True)


def small(files: List[str]) -> bool:
  """Whether ``files`` hold at most :data:`SMALL_BYTES` (worth caching)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return sum(tf.io.gfile.stat(f).length for f in files) <= SMALL_BYTES
