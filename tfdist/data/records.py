"""Streams sharded TFRecord files of images to every input pipeline.

Owns: listing the files of a pattern, deciding how input pipelines share
them (by file, or by record when there are fewer files than pipelines), the
``tf.data`` pipeline from file names to float batches, and turning the
errors TensorFlow raises while reading into one-line ConfigErrors that name
the file. Imports tfdist.console, tfdist.errors and tfdist.data (framing,
manifest, window); TensorFlow lazily.

Every pipeline is built inside ``dataset_fn(input_context)``, on the task
that reads: under ps the function the coordinator traces carries file names,
never data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
import re
from typing import Callable, List, Optional

from tfdist import console
from tfdist.data import framing
from tfdist.data import manifest as manifest_lib
from tfdist.data import window
from tfdist.errors import ConfigError

# Shuffle buffer of a training pipeline, in records (encoded, so a 299 px
# JPEG buffer holds about 1 GB at most; MNIST PNGs about 3 MB).
SHUFFLE_BUFFER = 10_000
# Files one pipeline reads at once.
CYCLE_LENGTH = 8


def list_files(pattern: str, *, flag: str = "files") -> List[str]:
  """The files of ``pattern``: globs and names, comma-separated, in order.

  Any filesystem TensorFlow opens works (``gs://``, ``s3://``, ...). A
  manifest matched by a glob is not a data file and is left out.

  Raises:
    ConfigError: a part of the pattern matches no file.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = []
  for part in (p.strip() for p in pattern.split(",")):
    if not part:
      continue
    if any(c in part for c in "*?["):
      matched = sorted(f for f in tf.io.gfile.glob(part)
                       if posixpath.basename(f) != manifest_lib.MANIFEST_NAME)
    else:
      matched = [part] if tf.io.gfile.exists(part) else []
    if not matched:
      raise ConfigError(f"--{flag}={pattern}: no file matches {part}; check "
                        "the path (python -m tfdist.data write creates "
                        "shards)")
    files.extend(f for f in matched if f not in files)
  if not files:
    raise ConfigError(f"--{flag}={pattern!r} names no file")
  return files


@dataclasses.dataclass(frozen=True)
class ShardPlan:
  """What one input pipeline reads: whole files, or every n-th record."""
  by: str  # "file", "record", or "all" for a single pipeline
  files: List[str]
  pipeline: int
  pipelines: int

  def describe(self) -> str:
    names = ", ".join(posixpath.basename(f) for f in self.files)
    where = f"input pipeline {self.pipeline} of {self.pipelines}"
    if self.by == "all":
      return f"{where} reads all {len(self.files)} files: {names}"
    if self.by == "file":
      return (f"{where} shards by file, since there are at least as many "
              f"files as pipelines; it reads {len(self.files)} files: "
              f"{names}")
    return (f"{where} shards by record, since {len(self.files)} files are "
            f"fewer than {self.pipelines} pipelines (more files would spare "
            f"each pipeline reading all of them); it keeps every "
            f"{self.pipelines}th record of {len(self.files)} files: {names}")


def plan_shards(files: List[str], num_pipelines: int,
                pipeline_id: int) -> ShardPlan:
  """By file when every pipeline gets at least one file, else by record."""
  if num_pipelines <= 1:
    return ShardPlan("all", list(files), pipeline_id, num_pipelines)
  if len(files) >= num_pipelines:
    return ShardPlan("file", list(files[pipeline_id::num_pipelines]),
                     pipeline_id, num_pipelines)
  return ShardPlan("record", list(files), pipeline_id, num_pipelines)


@dataclasses.dataclass(frozen=True)
class RecordSpec:
  """How to turn a record into a model input.

  Attributes:
    keys: the feature keys.
    encoding: ``png``, ``jpeg``, ``raw`` or None (PNG or JPEG, per record).
    image_shape: (height, width, channels) the model takes.
    num_classes: labels must be in [0, num_classes).
    stored_shape: the shape in the files when known (a manifest's): needed
      for ``raw``; equal to image_shape it skips every resize.
  """
  keys: manifest_lib.FeatureKeys
  encoding: Optional[str]
  image_shape: tuple
  num_classes: int
  stored_shape: Optional[tuple] = None


class FromSpec:
  """``image_shape`` and ``num_classes`` of a source with a ``spec``."""
  spec: RecordSpec

  @property
  def image_shape(self) -> tuple:
    return tuple(self.spec.image_shape)

  @property
  def num_classes(self) -> int:
    return self.spec.num_classes


def _decode(tf, spec: RecordSpec, encoded):
  channels = spec.image_shape[2]
  if spec.encoding == "png":
    return tf.io.decode_png(encoded, channels=channels)
  if spec.encoding == "jpeg":
    return tf.io.decode_jpeg(encoded, channels=channels)
  if spec.encoding == "raw":
    return tf.reshape(tf.io.decode_raw(encoded, tf.uint8), spec.stored_shape)
  image = tf.io.decode_image(encoded, channels=channels,
                             expand_animations=False)
  image.set_shape([None, None, channels])
  return image


def _fit(tf, spec: RecordSpec, image, *, augment: bool, seed):
  """Crops ``image`` to the model's size (upscaled first if it is smaller).

  Centre crop, or a random crop and left-right flip when ``augment``.
  """
  height, width, channels = spec.image_shape
  if tuple(spec.stored_shape or ()) != tuple(spec.image_shape):
    size = tf.shape(image)[:2]
    scale = tf.reduce_max(tf.constant([height, width], tf.float32)
                          / tf.cast(size, tf.float32))
    image = tf.cond(
        scale > 1.0,
        lambda: tf.cast(tf.round(tf.clip_by_value(tf.image.resize(
            image, tf.cast(tf.math.ceil(tf.cast(size, tf.float32) * scale),
                           tf.int32)), 0, 255)), tf.uint8),
        lambda: image)
    if augment:
      image = tf.image.random_crop(image, [height, width, channels], seed=seed)
    else:
      image = tf.image.resize_with_crop_or_pad(image, height, width)
  if augment:
    image = tf.image.random_flip_left_right(image, seed=seed)
  return tf.ensure_shape(image, spec.image_shape)


def example_fn(spec: RecordSpec, *, augment: bool = False, seed=None):
  """``(file name, serialized Example) -> (uint8 image, int64 label)``.

  A label outside the classes fails the pipeline with a message that names
  the file (see :func:`reading`).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  features = {spec.keys.image: tf.io.FixedLenFeature([], tf.string),
              spec.keys.label: tf.io.FixedLenFeature([], tf.int64)}

  def parse(filename, record):
    example = tf.io.parse_single_example(record, features)
    label = example[spec.keys.label]
    in_range = tf.debugging.Assert(
        tf.logical_and(label >= 0, label < spec.num_classes),
        [_LABEL_ERROR, label, spec.num_classes, filename],
        summarize=1)
    with tf.control_dependencies([in_range]):
      label = tf.identity(label)
    image = _decode(tf, spec, example[spec.keys.image])
    return _fit(tf, spec, image, augment=augment, seed=seed), label

  return parse


_LABEL_ERROR = "label out of range:"


def _raw_batch_fn(spec: RecordSpec):
  """``(file names, serialized Examples) -> (uint8 images, labels)`` of a
  batch of raw-pixel records at the model's size: parsed and decoded as one
  batch, for small images whose per-example ops would cost more than the
  training step (softmax MNIST)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  features = {spec.keys.image: tf.io.FixedLenFeature([], tf.string),
              spec.keys.label: tf.io.FixedLenFeature([], tf.int64)}

  def parse(filenames, batch):
    examples = tf.io.parse_example(batch, features)
    labels = examples[spec.keys.label]
    bad = tf.argmax(tf.cast(tf.logical_or(labels < 0,
                                          labels >= spec.num_classes),
                            tf.int32))
    in_range = tf.debugging.Assert(
        tf.logical_and(labels[bad] >= 0, labels[bad] < spec.num_classes),
        [_LABEL_ERROR, labels[bad], spec.num_classes, filenames[bad]],
        summarize=1)
    with tf.control_dependencies([in_range]):
      labels = tf.identity(labels)
    images = tf.io.decode_raw(examples[spec.keys.image], tf.uint8)
    return tf.reshape(images, (-1,) + tuple(spec.image_shape)), labels

  return parse


def _raw_fast_path(spec: RecordSpec, *, augment: bool) -> bool:
  """Raw pixels at the model's size: whole batches parse at once."""
  return (spec.encoding == "raw" and not augment
          and tuple(spec.stored_shape or ()) == tuple(spec.image_shape))


def _decode_batches(ds, spec: RecordSpec, *, batch_size: int,
                    drop_remainder: bool, augment: bool = False, seed=None,
                    deterministic: bool = True):
  """Records -> float32 batches: per example, or per batch for raw pixels
  that need no crop."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if _raw_fast_path(spec, augment=augment):
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(
        _raw_batch_fn(spec), num_parallel_calls=tf.data.AUTOTUNE)
  else:
    ds = ds.map(example_fn(spec, augment=augment, seed=seed),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic).batch(
                    batch_size, drop_remainder=drop_remainder)
  return _scaled(ds)


def fitted_batches(ds, spec: RecordSpec, *, batch_size: int,
                   drop_remainder: bool, augment: bool = False, seed=None,
                   deterministic: bool = True):
  """Decoded ``(uint8 image, label)`` examples (a TFDS split's) -> float32
  batches, each image cropped to the model's size as file records are."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def fit(image, label):
    return _fit(tf, spec, image, augment=augment, seed=seed), label

  return _scaled(ds.map(fit, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=deterministic).batch(
                            batch_size, drop_remainder=drop_remainder))


def _scaled(batches):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return batches.map(_scale, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
      tf.data.AUTOTUNE)


def _scale(images, labels):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # As the in-memory path: uint8 through the pipeline, float32 / 255 once
  # per batch.
  return tf.cast(images, tf.float32) / 255.0, labels


def records(plan: ShardPlan, *, shuffle_seed=None, shuffle_files=False):
  """``(file name, record)`` pairs of one pipeline, one pass over its share.

  Record sharding needs the same order in every pipeline: the files are then
  interleaved deterministically and never shuffled.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = tf.data.Dataset.from_tensor_slices(plan.files)
  by_record = plan.by == "record"
  if shuffle_files and not by_record:
    files = files.shuffle(len(plan.files), seed=shuffle_seed,
                          reshuffle_each_iteration=True)

  def read(filename):
    return tf.data.Dataset.zip((tf.data.Dataset.from_tensors(filename).repeat(),
                                tf.data.TFRecordDataset(filename)))

  pairs = files.interleave(
      read, cycle_length=min(len(plan.files), CYCLE_LENGTH),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=by_record or not shuffle_files)
  if by_record:
    pairs = pairs.shard(plan.pipelines, plan.pipeline)
  return pairs


def train_dataset_fn(files: List[str], spec: RecordSpec, *,
                     global_batch_size: int, seed: Optional[int] = 0,
                     augment: bool = False,
                     shuffle_buffer: int = SHUFFLE_BUFFER,
                     report: Callable[[str], None] = console.info):
  """``dataset_fn(input_context)`` of endless shuffled training batches.

  Args:
    files: every training file (see :func:`list_files`).
    spec: how records become model inputs.
    global_batch_size: examples per step over all replicas.
    seed: base seed (plus the pipeline id); None for a fresh one per
      pipeline (ps, where every worker runs the same traced function).
    augment: random crop and flip instead of a centre crop.
    shuffle_buffer: records in the shuffle buffer.
    report: receives one line per pipeline saying what it reads and why.
  """

  def dataset_fn(input_context):
    plan = plan_shards(files, input_context.num_input_pipelines,
                       input_context.input_pipeline_id)
    report(plan.describe())
    batch = input_context.get_per_replica_batch_size(global_batch_size)
    pipeline_seed = None if seed is None else seed + plan.pipeline
    if plan.by != "record" and _raw_fast_path(spec, augment=augment):
      return _scaled(window.shuffled_batches(
          plan.files, _raw_batch_fn(spec), batch_size=batch,
          window=shuffle_buffer, cycle_length=CYCLE_LENGTH,
          seed=pipeline_seed, cache=window.small(plan.files)))
    ds = records(plan, shuffle_seed=pipeline_seed, shuffle_files=True)
    # Shuffled before repeat(): each epoch is a whole pass over the share.
    # repeat() before batch(): steps_per_epoch, not the data, ends an epoch,
    # so no worker runs dry a step before the others (a collective hang).
    ds = ds.shuffle(shuffle_buffer, seed=pipeline_seed,
                    reshuffle_each_iteration=True).repeat()
    return _decode_batches(ds, spec, batch_size=batch, drop_remainder=True,
                           augment=augment, seed=pipeline_seed,
                           deterministic=False)

  return dataset_fn


def test_dataset(files: List[str], spec: RecordSpec, *, batch_size: int):
  """Every example of ``files`` exactly once, centre-cropped, in order.

  The last batch may be short: nothing is lost to ``drop_remainder``.
  """
  return _decode_batches(records(ShardPlan("all", list(files), 0, 1)), spec,
                         batch_size=batch_size, drop_remainder=False)


def first_record(path: str) -> dict:
  """The features of the first record of ``path``: key -> list of values."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Framing read in Python: the strategy may not exist yet (see framing).
  example = tf.train.Example.FromString(framing.first(path))
  return {key: list(getattr(f, f.WhichOneof("kind")).value)
          for key, f in example.features.feature.items()}


def check_keys(path: str, keys: manifest_lib.FeatureKeys) -> dict:
  """Checks the first record of ``path`` has the image and label features.

  Raises:
    ConfigError: naming the missing key and listing the keys it has.
  """
  features = first_record(path)
  for flag, key in (("image_key", keys.image), ("label_key", keys.label)):
    if key not in features:
      raise ConfigError(
          f"{path}: its records have no feature {key!r} (they have "
          f"{', '.join(sorted(features)) or 'none'}); name the right one "
          f"with --{flag}")
  return features


def _bad_file(files: List[str]) -> Optional[str]:
  """The first of ``files`` that cannot be read through, if any."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for path in files:
    try:
      for _ in tf.data.TFRecordDataset(path):
        pass
    except tf.errors.DataLossError:
      return path
  return None


@contextlib.contextmanager
def reading(files: List[str]):
  """Turns TensorFlow's errors while reading ``files`` into ConfigErrors.

  A truncated or corrupt file (found by reading the files through, on this
  error path only), a missing feature or a label outside the classes each
  become one line naming the file or key.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    yield
  except tf.errors.DataLossError as e:
    bad = _bad_file(files)
    raise ConfigError(f"{bad or ', '.join(files[:3])}: truncated or corrupt "
                      f"TFRecord file ({e.message.splitlines()[0][:120]}); "
                      "write it again") from None
  except tf.errors.InvalidArgumentError as e:
    message = e.message.replace("\n", " ")
    # The Assert's data: [marker] [label] [num_classes] [file name].
    label = re.search(re.escape(_LABEL_ERROR)
                      + r"\]\s*\[(-?\d+)\]\s*\[(\d+)\]\s*\[([^\]]+)\]", message)
    if label:
      raise ConfigError(f"{label.group(3)}: label {label.group(1)} is outside "
                        f"the {label.group(2)} classes of the manifest or "
                        "--num_classes; fix the labels or the class count"
                        ) from None
    if "could not be found" in message or "Feature:" in message:
      raise ConfigError(f"a record of {', '.join(files[:3])} lacks a "
                        f"feature ({message[:200]}); name the keys with "
                        "--image_key/--label_key") from None
    raise
