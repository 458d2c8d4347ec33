"""One interface for training data, in memory or streamed from files.

Owns: :class:`FileSource` (TFRecord shards, described by their manifest or
by flags), :class:`InMemorySource` (a loaded :class:`tfdist.data.Dataset`
behind the same interface) and :func:`verify`, which reads shards through.
:func:`open_source` opens what the trainers' data flags
(tfdist.data.options.DataConfig) name: one of these, or a TFDS stream
(tfdist.data.tfds_stream), all with ``image_shape``, ``num_classes``,
``train_examples``, ``test_examples``, ``train_dataset_fn(...)`` for
``DatasetCreator``, ``test_batches(batch_size)`` for exact evaluation and
``reading()`` around the loops that read. Imports tfdist (console, errors,
data and its modules); TensorFlow lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import posixpath
from typing import Callable, Iterator, List, Optional, Union

from tfdist import console
from tfdist import data as data_lib
from tfdist.data import framing
from tfdist.data import manifest as manifest_lib
from tfdist.data import options
from tfdist.data import records
from tfdist.data import tfds_stream
from tfdist.errors import ConfigError


def split_batches(split: data_lib.Split, batch_size: int) -> Iterator:
  """``(float32 images / 255, int64 labels)`` of an in-memory split, all of
  it, in order: the last batch may be short."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for start in range(0, len(split), batch_size):
    yield (tf.cast(split.images[start:start + batch_size], tf.float32) / 255.0,
           split.labels[start:start + batch_size])


@dataclasses.dataclass(frozen=True)
class InMemorySource:
  """A dataset held in memory (small data's fast path)."""
  dataset: data_lib.Dataset

  @property
  def name(self) -> str:
    return self.dataset.name

  @property
  def image_shape(self) -> tuple:
    return self.dataset.image_shape

  @property
  def num_classes(self) -> int:
    return self.dataset.num_classes

  @property
  def train_examples(self) -> int:
    return len(self.dataset.train)

  @property
  def test_examples(self) -> int:
    return len(self.dataset.test)

  def train_dataset_fn(self, global_batch_size: int, *,
                       seed: Optional[int] = 0):
    return data_lib.make_dataset_fn(self.dataset.train,
                                    global_batch_size=global_batch_size,
                                    shuffle_seed=seed)

  def test_batches(self, batch_size: int) -> Iterator:
    return split_batches(self.dataset.test, batch_size)

  def reading(self):
    return contextlib.nullcontext()


@dataclasses.dataclass(frozen=True)
class FileSource(records.FromSpec):
  """Sharded TFRecord files of a train and a test split."""
  name: str
  train_files: List[str]
  test_files: List[str]
  spec: records.RecordSpec
  train_examples: int
  test_examples: int
  class_names: List[str]
  augment: bool = False

  def train_dataset_fn(self, global_batch_size: int, *,
                       seed: Optional[int] = 0,
                       shuffle_buffer: int = records.SHUFFLE_BUFFER,
                       report: Callable[[str], None] = console.info):
    """``dataset_fn(input_context)``: see records.train_dataset_fn; random
    crops and flips when ``augment``."""
    return records.train_dataset_fn(
        self.train_files, self.spec, global_batch_size=global_batch_size,
        seed=seed, augment=self.augment, shuffle_buffer=shuffle_buffer,
        report=report)

  def test_batches(self, batch_size: int) -> Iterator:
    """Every test example exactly once, in batches (the last may be short)."""
    with self.reading():
      yield from records.test_dataset(self.test_files, self.spec,
                                      batch_size=batch_size)

  def reading(self):
    """Around a loop that reads: file errors become one-line ConfigErrors."""
    return records.reading(self.train_files + self.test_files)


# What train.run, the evaluator and the bench take: any of the three.
Source = Union[InMemorySource, FileSource, tfds_stream.TfdsSource]


def _split_info(files: List[str], split: str, report):
  """``(manifest or None, examples)`` of one split's files."""
  directory = posixpath.dirname(files[0])
  manifest = manifest_lib.read(directory)
  if manifest is not None:
    return manifest, manifest_lib.check_files(manifest, split, files,
                                              directory=directory).total
  report(f"no {manifest_lib.MANIFEST_NAME} beside {files[0]}: counting the "
         f"{split} records of {len(files)} files")
  return None, sum(framing.count(path) for path in files)


def _first_image_shape(path: str, keys: manifest_lib.FeatureKeys) -> tuple:
  """The shape of the first image of ``path``, from its PNG or JPEG header
  (Pillow: TensorFlow's runtime may not start before the strategy)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  features = records.first_record(path)
  try:
    with Image.open(io.BytesIO(features[keys.image][0])) as image:
      channels = len(image.getbands())
      return (image.height, image.width, channels)
  except (OSError, ValueError):
    raise ConfigError(f"{path}: {keys.image!r} holds no PNG or JPEG image; "
                      "for raw pixels write a manifest (python -m "
                      "tfdist.data write) or pass --image_shape") from None


def open_files(train_files: str, test_files: str, *,
               num_classes: Optional[int] = None,
               image_shape: Optional[tuple] = None,
               keys: Optional[manifest_lib.FeatureKeys] = None,
               report: Callable[[str], None] = console.info) -> FileSource:
  """The TFRecord shards of two patterns, checked against their manifest.

  With a manifest beside the files (``python -m tfdist.data write`` writes
  one) no other argument is needed: classes, shape, encoding, keys and
  counts come from it. Without one, ``num_classes`` is needed, the stored
  shape is the first image's and the records are counted.

  Args:
    train_files, test_files: globs or comma-separated names.
    num_classes: must agree with the manifest when both are given.
    image_shape: the model's input (height, width, channels), when it
      differs from the stored images: they are cropped (or upscaled) to it.
    keys: feature keys; default the manifest's, else FeatureKeys().
    report: receives informational lines.

  Raises:
    ConfigError: no match, a manifest that disagrees with the files, a
      missing feature, or a missing class count.
  """
  train = records.list_files(train_files, flag="train_files")
  test = records.list_files(test_files, flag="test_files")
  manifest, train_examples = _split_info(train, "train", report)
  test_manifest, test_examples = _split_info(test, "test", report)
  manifest = manifest or test_manifest
  keys = keys or (manifest.keys if manifest else manifest_lib.FeatureKeys())
  for path in (train[0], test[0]):
    records.check_keys(path, keys)
  if manifest is not None:
    if num_classes is not None and num_classes != manifest.num_classes:
      raise ConfigError(f"--num_classes={num_classes} but the manifest "
                        f"beside {train[0]} says {manifest.num_classes}; "
                        "drop the flag")
    num_classes, stored_shape = manifest.num_classes, manifest.image_shape
    encoding, class_names = manifest.encoding, manifest.class_names
  elif num_classes is None:
    raise ConfigError(f"no {manifest_lib.MANIFEST_NAME} beside {train[0]}: "
                      "pass --num_classes (or write the files with python -m "
                      "tfdist.data write)")
  else:
    stored_shape = image_shape or _first_image_shape(train[0], keys)
    encoding, class_names = "auto", [str(i) for i in range(num_classes)]
  if encoding == "raw" and image_shape and image_shape[2] != stored_shape[2]:
    raise ConfigError(f"--image_shape={image_shape}: raw pixels have "
                      f"{stored_shape[2]} channels")
  spec = records.RecordSpec(
      keys=keys, encoding=None if encoding == "auto" else encoding,
      image_shape=tuple(image_shape or stored_shape),
      num_classes=num_classes, stored_shape=tuple(stored_shape))
  return FileSource(
      name=(manifest.source if manifest else "") or "tfrecord",
      train_files=train, test_files=test, spec=spec,
      train_examples=train_examples, test_examples=test_examples,
      class_names=list(class_names))


def open_source(config: options.DataConfig, *, tfds_name: str = "mnist",
                image_shape: Optional[tuple] = None, seed: int = 0,
                report: Callable[[str], None] = console.info):
  """The source ``config`` names, behind one interface.

  Args:
    config: the data flags.
    tfds_name: the dataset a TFDS source streams (a trainer's --dataset).
    image_shape: the model's input when it differs from the stored images
      (tfrecord, tfds), or the shape of synthetic images.
    seed: of synthetic images.
    report: receives the line that says which data and how much.

  Returns:
    A FileSource, a tfds_stream.TfdsSource, or an InMemorySource (idx,
    synthetic: small data's fast path).
  """
  source = data_lib.resolve_source(
      config.kind, mnist_dir=config.mnist_dir, tfds_name=tfds_name,
      tfds_data_dir=config.tfds_data_dir)
  if source.kind == "tfrecord":
    opened = dataclasses.replace(open_files(
        config.train_files, config.test_files,
        num_classes=config.num_classes or None, image_shape=image_shape,
        keys=config.keys(), report=report), augment=config.augment)
    what = (f"{opened.name} from {len(opened.train_files)} training and "
            f"{len(opened.test_files)} test files")
  elif source.kind == "tfds":
    opened = tfds_stream.open_tfds(tfds_name, data_dir=config.tfds_data_dir,
                                   image_shape=image_shape,
                                   augment=config.augment)
    what = f"{source.describe()}, streamed"
  else:
    if config.augment:
      raise ConfigError(f"--augment crops streamed images; "
                        f"{source.describe()} is held in memory: use "
                        "--data=tfrecord or tfds, or drop --augment")
    opened = InMemorySource(data_lib.load(
        source, synthetic_shape=image_shape or (28, 28, 1), seed=seed))
    return opened
  report(f"data: {what}, {opened.train_examples:,} training and "
         f"{opened.test_examples:,} test examples of shape "
         f"{'x'.join(map(str, opened.image_shape))}")
  return opened


def _check_counts(files: List[str], split: str) -> int:
  """Counts each file's records; checks them against the manifest's."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  directory = posixpath.dirname(files[0])
  manifest = manifest_lib.read(directory)
  expected = (dict(zip(manifest.splits[split].files,
                       manifest.splits[split].examples)) if manifest else {})
  total = 0
  for path in files:
    count = sum(1 for _ in tf.data.TFRecordDataset(path))
    listed = expected.get(posixpath.basename(path), count)
    if listed != count:
      raise ConfigError(
          f"{path}: {count} records, {manifest_lib.manifest_path(directory)} "
          f"says {listed}; rewrite the shards and manifest together")
    total += count
  return total


def verify(train_files: str, test_files: str, *,
           num_classes: Optional[int] = None,
           keys: Optional[manifest_lib.FeatureKeys] = None) -> dict:
  """Reads every record of both splits through the decoding pipeline.

  Checks what training would find only later: the manifest (file list,
  sizes, counts), the keys, every label and every image.

  Returns:
    Files and examples per split, classes and the image shape.
  """
  source = open_files(train_files, test_files, num_classes=num_classes,
                      keys=keys, report=lambda _: None)
  result = {"num_classes": source.num_classes,
            "image_shape": list(source.image_shape)}
  for split, files in (("train", source.train_files),
                       ("test", source.test_files)):
    with records.reading(files):
      counted = _check_counts(files, split)
      for _ in records.test_dataset(files, source.spec, batch_size=1024):
        pass  # decodes every image and checks every label
    result[split] = {"files": len(files), "examples": counted}
  return result
