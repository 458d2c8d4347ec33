"""The window shuffle: endless batches of small records at low per-record cost.

Per-record work in ``tf.data`` (interleave, a shuffle buffer, batching)
costs more than a softmax step consumes. This path reads each file in chunks
of :data:`CHUNK` records, turns about ``window`` records at once into
examples with one batched ``parse``, applies one random permutation to them
(what a shuffle buffer of that size does, a window at a time) and cuts the
window into batches; what is left of a window opens the next batch, so no
record is dropped and each epoch is one whole pass over the files, in a
fresh file order.

Owns shuffled_batches. Imports nothing from tfdist; TensorFlow lazily.
"""

from __future__ import annotations

from typing import Callable, List

# Records read from one file at a time.
CHUNK = 256


def shuffled_batches(files: List[str], parse: Callable, *, batch_size: int,
                     window: int, cycle_length: int, seed=None):
  """Endless ``parse`` outputs of ``files``, shuffled, in ``batch_size`` rows.

  Args:
    files: the TFRecord files of this input pipeline.
    parse: ``(file names, serialized records) -> (images, labels)`` of a
      batch of records (one file name per record, for error messages).
    batch_size: rows per batch; every batch is full.
    window: records permuted together (rounded to whole chunks).
    cycle_length: files read at once.
    seed: of the file order and the permutations; None for fresh ones.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  names = tf.data.Dataset.from_tensor_slices(files).shuffle(
      len(files), seed=seed, reshuffle_each_iteration=True)

  def chunks(filename):
    return tf.data.TFRecordDataset(filename).batch(CHUNK).map(
        lambda records: (tf.fill(tf.shape(records), filename), records))

  def permuted(filenames, records):
    images, labels = parse(filenames.flat_values, records.flat_values)
    order = tf.random.shuffle(tf.range(tf.shape(labels)[0]), seed=seed)
    return tf.gather(images, order), tf.gather(labels, order)

  ds = names.interleave(chunks, cycle_length=min(len(files), cycle_length),
                        num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=False)
  ds = ds.ragged_batch(max(1, window // CHUNK)).map(
      permuted, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.repeat().rebatch(batch_size, drop_remainder=True)
