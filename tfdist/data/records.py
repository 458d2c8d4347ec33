"""Streams sharded TFRecord files to every input pipeline.

Owns: listing the files of a pattern, deciding how input pipelines share
them (by file, or by record when there are fewer files than pipelines), the
``tf.data`` pipeline from file names to batches of model inputs (what a
record holds and how it parses: tfdist.data.parsing), and turning the
errors TensorFlow raises while reading into one-line ConfigErrors that name
the file. Imports tfdist.console, tfdist.errors and tfdist.data (framing,
manifest, parsing, window); TensorFlow lazily.

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
from tfdist.data import parsing
from tfdist.data import window
from tfdist.errors import ConfigError

# Shuffle buffer of a training pipeline, in records (encoded, so a 299 px
# JPEG buffer holds about 1 GB at most; MNIST PNGs about 3 MB).
SHUFFLE_BUFFER = 10_000
# Files one pipeline reads at once.
CYCLE_LENGTH = 8
RecordSpec = parsing.RecordSpec
FromSpec = parsing.FromSpec


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


def _decode_batches(ds, spec: RecordSpec, *, batch_size: int,
                    drop_remainder: bool, augment: bool = False, seed=None,
                    deterministic: bool = True, weights: bool = False):
  """``(file name, record)`` pairs -> batches of ``(inputs, labels[,
  weights])``: per batch where records parse at once
  (parsing.batch_parses), else per record."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if parsing.batch_parses(spec, augment=augment):
    ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(
        parsing.batch_fn(spec, weights=weights),
        num_parallel_calls=tf.data.AUTOTUNE)
  else:
    ds = ds.map(parsing.example_fn(spec, augment=augment, seed=seed,
                                   weights=weights),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic)
    if any(f.ragged for f in spec.features):
      ds = ds.ragged_batch(batch_size, drop_remainder=drop_remainder)
    else:
      ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  return parsing.scaled(ds, spec)


def fitted_batches(ds, spec: RecordSpec, *, batch_size: int,
                   drop_remainder: bool, augment: bool = False, seed=None,
                   deterministic: bool = True, weights: bool = False):
  """Decoded ``(uint8 image, label)`` examples (a TFDS split's) -> float32
  batches of ``({image name: images}, labels[, weights])``, each image
  cropped to the model's size as file records are."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  (image,) = spec.features
  shape = spec.model_features[image.name].shape

  def fit(value, label):
    fitted = parsing.fit_image(tf, value, stored_shape=spec.stored_shape(image),
                               image_shape=shape, augment=augment, seed=seed)
    if weights and spec.has_weights:
      return {image.name: fitted}, label, parsing.weights_of(
          tf, label, class_weights=spec.class_weights)
    return {image.name: fitted}, label

  return parsing.scaled(ds.map(fit, num_parallel_calls=tf.data.AUTOTUNE,
                               deterministic=deterministic).batch(
                                   batch_size, drop_remainder=drop_remainder),
                        spec)


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
  """``dataset_fn(input_context)`` of endless shuffled training batches,
  ``(inputs, labels)``, or ``(inputs, labels, weights)`` when the spec has
  weights.

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
    if plan.by != "record" and parsing.raw_images(spec, augment=augment):
      return parsing.scaled(window.shuffled_batches(
          plan.files, parsing.batch_fn(spec, weights=True), batch_size=batch,
          window=shuffle_buffer, cycle_length=CYCLE_LENGTH,
          seed=pipeline_seed, cache=window.small(plan.files)), spec)
    ds = records(plan, shuffle_seed=pipeline_seed, shuffle_files=True)
    # Shuffled before repeat(): each epoch is a whole pass over the share.
    # repeat() before batch(): steps_per_epoch, not the data, ends an epoch,
    # so no worker runs dry a step before the others (a collective hang).
    ds = ds.shuffle(shuffle_buffer, seed=pipeline_seed,
                    reshuffle_each_iteration=True).repeat()
    return _decode_batches(ds, spec, batch_size=batch, drop_remainder=True,
                           augment=augment, seed=pipeline_seed,
                           deterministic=False, weights=True)

  return dataset_fn


def test_dataset(files: List[str], spec: RecordSpec, *, batch_size: int):
  """Every example of ``files`` exactly once, centre-cropped, in order,
  as ``(inputs, labels)`` (no weights: test metrics count each example
  once).

  The last batch may be short: nothing is lost to ``drop_remainder``.
  """
  return _decode_batches(records(ShardPlan("all", list(files), 0, 1)), spec,
                         batch_size=batch_size, drop_remainder=False)


def serving_inputs(files: List[str], spec: RecordSpec) -> tuple:
  """Every record of ``files`` as a served model takes it (the export's
  serving_default: tfdist.serving.export): ``({feature name: numpy array},
  labels)``: images uint8 at the model's size, numbers float32 ``[n,
  width]`` (NaN where missing), categories and texts their UTF-8 bytes
  ``[n]``, ids int64 ``[n]``, id lists padded with -1 to the longest; the
  labels int64 class indices, or float32 ``[n, outputs]``."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ds = records(ShardPlan("all", list(files), 0, 1)).map(
      parsing.example_fn(spec))
  batched = ds.ragged_batch(1024) if any(f.ragged for f in spec.features) \
      else ds.batch(1024)
  parts, labels = {f.name: [] for f in spec.features}, []
  for inputs, label in batched:
    for name, value in inputs.items():
      parts[name].append(value.to_tensor(default_value=-1).numpy()
                         if isinstance(value, tf.RaggedTensor)
                         else value.numpy())
    labels.append(label.numpy())
  width = {name: max((p.shape[1] for p in values), default=0)
           for name, values in parts.items() if spec.model_features[name].ragged}
  for name in width:
    parts[name] = [np.pad(p, ((0, 0), (0, width[name] - p.shape[1])),
                          constant_values=-1) for p in parts[name]]
  return ({name: np.concatenate(values) for name, values in parts.items()},
          np.concatenate(labels))


def first_record(path: str) -> dict:
  """The features of the first record of ``path``: key -> list of values."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Framing read in Python: the strategy may not exist yet (see framing).
  example = tf.train.Example.FromString(framing.first(path))
  return {key: list(getattr(f, f.WhichOneof("kind")).value)
          for key, f in example.features.feature.items()}


def check_keys(path: str, spec: RecordSpec) -> dict:
  """Checks the first record of ``path`` has every feature and the label.

  Raises:
    ConfigError: naming the missing key and listing the keys it has.
  """
  wanted = {f"feature {f.name!r}": f.key for f in spec.features}
  wanted["the label"] = spec.label_key
  if spec.weight_key:
    wanted["the weight"] = spec.weight_key
  return require_keys(path, wanted, image_flags=spec.has_image)


def require_keys(path: str, wanted: dict, *, image_flags: bool) -> dict:
  """The features of the first record of ``path``, which must have every
  key of ``wanted`` (what it is for -> key); ``image_flags``: the keys
  come from --image_key/--label_key, the fix to suggest."""
  features = first_record(path)
  for what, key in wanted.items():
    if key not in features:
      hint = ("name the right keys with --image_key/--label_key"
              if image_flags else "write the records and their manifest "
              "again (python -m tfdist.data write)")
      raise ConfigError(
          f"{path}: its records have no {key!r} for {what} (they have "
          f"{', '.join(sorted(features)) or 'none'}); {hint}")
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
    # The Assert's data: [marker] [what] [value] [bound] [file name].
    found = re.search(re.escape(parsing.RANGE_ERROR) + r"\]\s*\[([^\]]+)\]"
                      r"\s*\[(-?\d+)\]\s*\[(\d+)\]\s*\[([^\]]*)\]", message)
    if found:
      what, value, bound, path = found.groups()
      if what == "label":
        raise ConfigError(f"{path}: label {value} is outside the {bound} "
                          "classes of the manifest or --num_classes; fix the "
                          "labels or the class count") from None
      raise ConfigError(f"{path}: {what} {value} is outside [0, {bound}), "
                        "the ids the manifest gives it; fix the ids or the "
                        "manifest's num_ids") from None
    if "could not be found" in message or "Feature:" in message:
      raise ConfigError(f"a record of {', '.join(files[:3])} lacks a "
                        f"feature ({message[:200]}); name the keys with "
                        "--image_key/--label_key") from None
    raise
