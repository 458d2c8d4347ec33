"""Writes serialized examples as sharded TFRecord files plus a manifest.

Owns the all-or-nothing write every converter shares (images:
tfdist.data.convert; tables: tfdist.data.tables): examples go round-robin
to temporary files (every shard gets every class, even from a source
sorted by class, and no shard is held in memory); they are renamed only
once every split is complete, and the manifest is written last,
atomically: a directory with a manifest is complete. A failure removes
the temporary files: nothing half-written is left. Imports tfdist.console,
errors and data.manifest; TensorFlow lazily (tf.io, so any filesystem it
opens, e.g. ``gs://``).
"""

from __future__ import annotations

import posixpath
from typing import Callable, Dict, Iterator, Tuple

from tfdist import console
from tfdist.data import manifest as manifest_lib
from tfdist.errors import ConfigError

PROGRESS_EVERY = 10_000
# What a converter hands over per split: (example count, a function that
# yields the serialized tf.train.Examples).
Splits = Dict[str, Tuple[int, Callable[[], Iterator[bytes]]]]


def _write_split(tf, split: str, count: int, examples, *, out_dir: str,
                 num_shards: int, temps: list, progress_every: int, report):
  n = max(1, min(num_shards, count))
  names = [f"{split}-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]
  temps.extend((posixpath.join(out_dir, f".{name}.partial"),
                posixpath.join(out_dir, name)) for name in names)
  writers = [tf.io.TFRecordWriter(temp) for temp, _ in temps[-n:]]
  counts = [0] * n
  try:
    for i, example in enumerate(examples()):
      writers[i % n].write(example)
      counts[i % n] += 1
      if (i + 1) % progress_every == 0:
        report(f"write {split}: {i + 1}/{count} examples "
               f"({100 * (i + 1) // max(count, 1)}%)")
  finally:
    for writer in writers:
      writer.close()
  sizes = [tf.io.gfile.stat(temp).length for temp, _ in temps[-n:]]
  report(f"write {split}: {sum(counts)} examples in {n} shards")
  return manifest_lib.SplitFiles(names, counts, sizes)


def _discard(tf, paths) -> None:
  for path in paths:
    if tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)


def check_out_dir(out_dir: str, num_shards: int) -> None:
  """ConfigError unless ``out_dir`` can take a new dataset."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if num_shards < 1:
    raise ConfigError(f"--shards={num_shards}: must be >= 1")
  if tf.io.gfile.exists(manifest_lib.manifest_path(out_dir)):
    raise ConfigError(f"--out_dir={out_dir} already holds a dataset "
                      f"({manifest_lib.MANIFEST_NAME}); choose a new "
                      "directory or remove it")


def write(splits: Splits, *, out_dir: str, num_shards: int,
          manifest: Callable[[Dict[str, manifest_lib.SplitFiles]],
                             manifest_lib.Manifest],
          progress_every: int = PROGRESS_EVERY,
          report: Callable[[str], None] = console.info
          ) -> manifest_lib.Manifest:
  """Writes every split to ``out_dir``; returns the manifest written.

  Args:
    splits: per split, its count and its serialized examples.
    out_dir: a new or empty directory (any TensorFlow filesystem).
    num_shards: files per split (fewer if a split has fewer examples).
    manifest: builds the manifest from the written splits' files, once
      every example was written (a converter learns e.g. the image shape
      on the way).
    progress_every: a progress line every this many examples.
    report: receives the progress lines.

  Raises:
    ConfigError: bad arguments, or a bad example (raised by the examples'
      iterator); nothing is left written.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  check_out_dir(out_dir, num_shards)
  created = not tf.io.gfile.exists(out_dir)
  temps, renamed = [], []
  try:
    tf.io.gfile.makedirs(out_dir)
    written = {split: _write_split(
        tf, split, count, examples, out_dir=out_dir, num_shards=num_shards,
        temps=temps, progress_every=progress_every, report=report)
               for split, (count, examples) in splits.items()}
    described = manifest(written)
    for temp, path in temps:
      tf.io.gfile.rename(temp, path, overwrite=True)
      renamed.append(path)
    # Last, and atomically: a directory with a manifest is complete.
    partial = posixpath.join(out_dir, ".manifest.json.partial")
    with tf.io.gfile.GFile(partial, "w") as f:
      f.write(described.to_json())
    temps.append((partial, None))
    tf.io.gfile.rename(partial, manifest_lib.manifest_path(out_dir),
                       overwrite=True)
    return described
  except BaseException:
    _discard(tf, [temp for temp, _ in temps] + renamed)
    if (created and tf.io.gfile.exists(out_dir)
        and not tf.io.gfile.listdir(out_dir)):
      tf.io.gfile.rmtree(out_dir)
    raise
