"""One interface for training data, in memory or streamed from files.

Owns: :class:`FileSource` (TFRecord shards, described by their manifest or
by flags), :class:`InMemorySource` (a loaded :class:`tfdist.data.Dataset`
behind the same interface) and :func:`verify`, which reads shards through.
:func:`open_source` opens what the trainers' data flags
(tfdist.data.options.DataConfig) name: one of these, or a TFDS stream
(tfdist.data.tfds_stream), all with ``features``, ``image_shape``,
``task``, ``num_outputs`` (= ``num_classes``), ``class_names``,
``label_names``, ``has_weights``, ``train_examples``, ``test_examples``,
``train_dataset_fn(...)`` for ``DatasetCreator`` (batches of ``(inputs,
labels)``, or ``(inputs, labels, weights)`` when ``has_weights``: a weight
column, or ``--class_weight``), ``test_batches(batch_size)`` for exact
evaluation (``(inputs, labels)``) and ``reading()`` around the loops that
read; ``inputs`` is always a dict by feature name. Imports tfdist
(console, errors, data and its modules); TensorFlow lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import posixpath
from typing import Callable, Iterator, List, Optional, Union

import numpy as np

from tfdist import console
from tfdist import data as data_lib
from tfdist.data import features as features_lib
from tfdist.data import framing
from tfdist.data import manifest as manifest_lib
from tfdist.data import options
from tfdist.data import records
from tfdist.data import tfds_stream
from tfdist.errors import ConfigError


def split_batches(split: data_lib.Split, batch_size: int) -> Iterator:
  """``({"images": float32 images / 255}, int64 labels)`` of an in-memory
  split, all of it, in order: the last batch may be short."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for start in range(0, len(split), batch_size):
    yield ({data_lib.IMAGE_NAME: tf.cast(
        split.images[start:start + batch_size], tf.float32) / 255.0},
           split.labels[start:start + batch_size])


@dataclasses.dataclass(frozen=True)
class InMemorySource(records.FromSpec):
  """A dataset held in memory (small data's fast path): classification of
  one image; ``class_weights`` (by class index) weight training examples."""
  dataset: data_lib.Dataset
  class_weights: tuple = ()

  @property
  def name(self) -> str:
    return self.dataset.name

  @property
  def spec(self) -> records.RecordSpec:
    """Its features and classes (what records of it would say)."""
    return records.RecordSpec(
        features=tuple(self.dataset.features.values()), label_key="label",
        num_classes=self.dataset.num_classes,
        class_names=tuple(map(str, range(self.dataset.num_classes))),
        class_weights=tuple(self.class_weights))

  @property
  def train_examples(self) -> int:
    return len(self.dataset.train)

  @property
  def test_examples(self) -> int:
    return len(self.dataset.test)

  @property
  def class_counts(self) -> dict:
    """The training split's examples per class name."""
    counts = np.bincount(self.dataset.train.labels,
                         minlength=self.dataset.num_classes)
    return dict(zip(self.class_names, counts.tolist()))

  def train_dataset_fn(self, global_batch_size: int, *,
                       seed: Optional[int] = 0):
    return data_lib.make_dataset_fn(self.dataset.train,
                                    global_batch_size=global_batch_size,
                                    shuffle_seed=seed,
                                    class_weights=self.class_weights)

  def test_batches(self, batch_size: int) -> Iterator:
    return split_batches(self.dataset.test, batch_size)

  def reading(self):
    return contextlib.nullcontext()


@dataclasses.dataclass(frozen=True)
class FileSource(records.FromSpec):
  """Sharded TFRecord files of a train and a test split (``class_counts``:
  the manifest's training examples per class, when it has them)."""
  name: str
  train_files: List[str]
  test_files: List[str]
  spec: records.RecordSpec
  train_examples: int
  test_examples: int
  augment: bool = False
  class_counts: Optional[dict] = None

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
  key = keys.image
  features = records.require_keys(
      path, {"feature 'images'": key, "the label": keys.label},
      image_flags=True)
  try:
    with Image.open(io.BytesIO(features[key][0])) as image:
      channels = len(image.getbands())
      return (image.height, image.width, channels)
  except (OSError, ValueError):
    raise ConfigError(f"{path}: {key!r} holds no PNG or JPEG image; "
                      "for raw pixels write a manifest (python -m "
                      "tfdist.data write) or pass --image_shape") from None


def _spec_without_manifest(path: str, *, num_classes: Optional[int],
                           image_shape: Optional[tuple],
                           keys: manifest_lib.FeatureKeys) -> records.RecordSpec:
  """Image records described by flags: the keys, the classes, the shape of
  the first image (or --image_shape)."""
  if num_classes is None:
    raise ConfigError(f"no {manifest_lib.MANIFEST_NAME} beside {path}: "
                      "pass --num_classes (or write the files with python -m "
                      "tfdist.data write)")
  stored = image_shape or _first_image_shape(path, keys)
  image = features_lib.image_feature(stored, key=keys.image, encoding="auto")
  return records.RecordSpec(features=(image,), label_key=keys.label,
                            num_classes=num_classes,
                            image_shape=tuple(image_shape or stored),
                            class_names=tuple(map(str, range(num_classes))))


def _spec_of(manifest: manifest_lib.Manifest, path: str, *,
             num_classes: Optional[int], image_shape: Optional[tuple],
             keys: Optional[manifest_lib.FeatureKeys] = None
             ) -> records.RecordSpec:
  """What the manifest beside ``path`` says, checked against the flags
  (``keys`` other than the defaults must be the manifest's)."""
  if num_classes is not None and num_classes != manifest.num_classes:
    raise ConfigError(f"--num_classes={num_classes} but the manifest "
                      f"beside {path} says {manifest.num_classes}; "
                      "drop the flag")
  image = manifest.image
  named = {"image_key": (keys.image if keys else None,
                         image.key if image else None),
           "label_key": (keys.label if keys else None, manifest.label_key)}
  for flag, (given, says) in named.items():
    default = getattr(manifest_lib.FeatureKeys(), flag.split("_")[0])
    if given not in (None, default, says):
      raise ConfigError(f"--{flag}={given}: the manifest beside {path} names "
                        f"the records' keys ({says!r}); drop the flag")
  if image_shape and image is None:
    raise ConfigError(f"--image_shape crops an image; the records beside "
                      f"{path} hold {len(manifest.features)} features that "
                      "are not one image: drop the flag")
  if (image is not None and image.encoding == "raw" and image_shape
      and image_shape[2] != image.shape[2]):
    raise ConfigError(f"--image_shape={image_shape}: raw pixels have "
                      f"{image.shape[2]} channels")
  return records.RecordSpec(features=manifest.features,
                            label_key=manifest.label_key,
                            num_classes=manifest.num_classes,
                            image_shape=image_shape, task=manifest.task,
                            class_names=tuple(manifest.class_names),
                            label_names=tuple(manifest.label_names),
                            weight_key=manifest.weight_key)


def open_split(pattern: str, *, flag: str = "records",
               image_shape: Optional[tuple] = None) -> tuple:
  """The files of one split, and its RecordSpec, from their manifest.

  Raises:
    ConfigError: no match, no manifest beside the files, or files that
      are not one split's.
  """
  files = records.list_files(pattern, flag=flag)
  directory = posixpath.dirname(files[0])
  manifest = manifest_lib.read(directory)
  if manifest is None:
    raise ConfigError(f"--{flag}={pattern}: no {manifest_lib.MANIFEST_NAME} "
                      f"beside {files[0]}; write the records with python -m "
                      "tfdist.data write")
  names = {posixpath.basename(f) for f in files}
  split = next((name for name, listed in manifest.splits.items()
                if names <= set(listed.files)), None)
  if split is None:
    raise ConfigError(f"--{flag}={pattern}: the files are not all of one "
                      f"split of {manifest_lib.manifest_path(directory)}; "
                      "name one split's files, e.g. DIR/test-*")
  return files, _spec_of(manifest, files[0], num_classes=None,
                         image_shape=image_shape)


def open_files(train_files: str, test_files: str, *,
               num_classes: Optional[int] = None,
               image_shape: Optional[tuple] = None,
               keys: Optional[manifest_lib.FeatureKeys] = None,
               report: Callable[[str], None] = console.info) -> FileSource:
  """The TFRecord shards of two patterns, checked against their manifest.

  With a manifest beside the files (``python -m tfdist.data write`` writes
  one) no other argument is needed: classes, features, keys and counts
  come from it. Without one the records are images: ``num_classes`` is
  needed, the stored shape is the first image's and the records are
  counted.

  Args:
    train_files, test_files: globs or comma-separated names.
    num_classes: must agree with the manifest when both are given.
    image_shape: the model's input (height, width, channels), when it
      differs from the stored images: they are cropped (or upscaled) to it.
    keys: image records without a manifest: their keys (default
      FeatureKeys()).
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
  if manifest is not None:
    spec = _spec_of(manifest, train[0], num_classes=num_classes,
                    image_shape=image_shape, keys=keys)
  else:
    spec = _spec_without_manifest(train[0], num_classes=num_classes,
                                  image_shape=image_shape,
                                  keys=keys or manifest_lib.FeatureKeys())
  for path in (train[0], test[0]):
    records.check_keys(path, spec)
  return FileSource(
      name=(manifest.source if manifest else "") or "tfrecord",
      train_files=train, test_files=test, spec=spec,
      train_examples=train_examples, test_examples=test_examples,
      class_counts=dict(manifest.class_counts) if manifest else None)


def describe_features(features) -> str:
  """``of shape 28x28x1`` for one image, else each feature's line."""
  image = features_lib.single_image(features)
  if image is not None:
    return f"of shape {'x'.join(map(str, image.shape))}"
  return "with " + "; ".join(f.describe() for f in features.values())


def open_source(config: options.DataConfig, *, seed: int = 0,
                report: Callable[[str], None] = console.info):
  """The source ``config`` names, behind one interface.

  Args:
    config: the data flags.
    seed: of synthetic images.
    report: receives the line that says which data and how much.

  Returns:
    A FileSource, a tfds_stream.TfdsSource, or an InMemorySource (idx,
    synthetic: small data's fast path).
  """
  source = config.source()
  image_shape = config.model_image_shape()
  if source.kind == "tfrecord":
    opened = dataclasses.replace(open_files(
        config.train_files, config.test_files,
        num_classes=config.num_classes or None, image_shape=image_shape,
        keys=config.keys(), report=report), augment=config.augment)
    what = (f"{opened.name} from {len(opened.train_files)} training and "
            f"{len(opened.test_files)} test files")
  elif source.kind == "tfds":
    opened = tfds_stream.open_tfds(config.dataset,
                                   data_dir=config.tfds_data_dir,
                                   image_shape=image_shape,
                                   augment=config.augment)
    what = f"{source.describe()}, streamed"
  else:
    loaded = InMemorySource(data_lib.load(
        source, synthetic_shape=image_shape or data_lib.SYNTHETIC_SHAPE,
        seed=seed))
    return dataclasses.replace(loaded, class_weights=_class_weights(
        config, loaded, source.describe()))
  if config.augment and not any(f.kind == "image"
                                for f in opened.features.values()):
    raise ConfigError("--augment crops and flips images; these records hold "
                      "none: drop --augment")
  opened = dataclasses.replace(opened, spec=dataclasses.replace(
      opened.spec, class_weights=_class_weights(config, opened, opened.name)))
  report(f"data: {what}, {opened.train_examples:,} training and "
         f"{opened.test_examples:,} test examples "
         f"{describe_features(opened.features)}; {describe_task(opened)}")
  return opened


def _class_weights(config: options.DataConfig, source, data: str) -> tuple:
  """--class_weight's weight of each of ``source``'s classes, or ()."""
  return config.class_weights(
      task=source.task, class_names=source.class_names,
      class_counts=getattr(source, "class_counts", None), data=data)


def describe_task(source) -> str:
  """``3 classes`` / ``regression of 2 labels`` / ``multilabel, 5 labels``,
  and the weights."""
  if source.task == "classification":
    text = f"{source.num_outputs} classes"
  else:
    text = (f"{source.task} of {source.num_outputs} label"
            f"{'s' if source.num_outputs > 1 else ''}")
  return text + (", weighted examples" if source.has_weights else "")


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
  sizes, counts), the keys, every label, image and id.

  Returns:
    Files and examples per split, classes and the features (name: kind
    dtype[shape]).
  """
  source = open_files(train_files, test_files, num_classes=num_classes,
                      keys=keys, report=lambda _: None)
  result = {"task": source.task, "num_classes": source.num_classes,
            "features": [f.describe() for f in source.features.values()]}
  for split, files in (("train", source.train_files),
                       ("test", source.test_files)):
    with records.reading(files):
      counted = _check_counts(files, split)
      for _ in records.test_dataset(files, source.spec, batch_size=1024):
        pass  # decodes every image and checks every label
    result[split] = {"files": len(files), "examples": counted}
  return result
