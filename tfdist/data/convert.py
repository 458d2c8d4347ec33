"""Writes image datasets as sharded TFRecord files plus a manifest.

Owns: reading the three kinds of image source (MNIST IDX files, a folder of
``CLASS_NAME/*.png|jpg`` images, a TFDS dataset prepared on disk) one example
at a time and encoding each as a ``tf.train.Example``; tfdist.data.shards
writes them, all or nothing. Imports tfdist (data, console, errors,
features) and tfdist.data (manifest, shards); TensorFlow and
tensorflow-datasets lazily.

Images and sizes: without ``image_size`` a folder's or TFDS dataset's
encoded bytes are stored as they are, and every image must have the size of
the first (a ConfigError names the first that differs). With ``image_size=S``
each image is resized so its shorter side is S, centre-cropped to S x S and
re-encoded in its own format (JPEG at quality 95).

Channels: the records' image has the most channels any image has (at most
3): a folder that mixes grayscale and colour images is read as RGB, each
grayscale image repeated in the three channels when decoded (one line
says so; tfdist.serving.predict reads a user's images the same way, see
tfdist.serving.image_files). A folder needs two class folders or more, each with
an image: an empty one would still be a class and shift the ids.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from tfdist import console
from tfdist import data as data_lib
from tfdist.data import features as features_lib
from tfdist.data import manifest as manifest_lib
from tfdist.data import shards
from tfdist.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Folder layouts: split folders, and the names their splits get.
SPLIT_FOLDERS = {"train": "train", "test": "test", "validation": "test",
                 "val": "test"}
JPEG_QUALITY = 95
_CHANNEL_NAMES = {1: "grayscale", 2: "grayscale+alpha", 3: "RGB", 4: "RGBA"}


@dataclasses.dataclass
class Source:
  """A dataset to write: its classes and, per split, (count, examples).

  ``examples()`` yields ``(name, encoded image or uint8 array, label)``;
  ``name`` identifies the example in error messages (a file, or split[i]).
  """
  name: str
  class_names: List[str]
  splits: Dict[str, Tuple[int, Callable[[], Iterator]]]


def mnist_source(directory: str) -> Source:
  """The MNIST IDX files of ``directory`` (checked as the trainers do).

  Read whole by the trainers' own IDX reader: 70,000 small images (55 MB).
  Folders and TFDS datasets, which can be any size, stream.
  """
  dataset = data_lib.load_mnist_idx(directory)

  def examples(split):
    return lambda: ((f"{split}[{i}]", image, label) for i, (image, label)
                    in enumerate(zip(getattr(dataset, split).images,
                                     getattr(dataset, split).labels)))

  return Source("mnist", [str(i) for i in range(dataset.num_classes)],
                {s: (len(getattr(dataset, s)), examples(s))
                 for s in ("train", "test")})


def _class_files(root: str, report: Callable[[str], None]
                 ) -> Tuple[List[str], List[Tuple[str, int]]]:
  """The class folders of ``root`` (sorted) and their image files, each
  with its class id; hidden files and folders (``.*``) are not looked at."""
  classes = sorted(d for d in os.listdir(root) if not d.startswith(".")
                   and os.path.isdir(os.path.join(root, d)))
  if len(classes) < 2:
    raise ConfigError(f"--source={root}: "
                      + (f"one class folder, {classes[0]!r}" if classes
                         else "no class folder")
                      + "; a classifier needs two or more classes: lay the "
                      "images out one folder per class")
  files, skipped = [], []
  for label, name in enumerate(classes):
    listed = sorted(f for f in os.listdir(os.path.join(root, name))
                    if not f.startswith("."))
    images = [f for f in listed if f.lower().endswith(IMAGE_SUFFIXES)]
    if not images:
      raise ConfigError(f"--source={root}: class folder {name!r} holds no "
                        f"{'/'.join(IMAGE_SUFFIXES)} image; add its images "
                        "or remove the folder (it would still be a class)")
    files.extend((os.path.join(root, name, f), label) for f in images)
    skipped.extend(os.path.join(root, name, f) for f in listed
                   if f not in images)
  if skipped:
    report(f"{len(skipped)} files in the class folders of {root} are not "
           f"{'/'.join(IMAGE_SUFFIXES)} images and are left out (first: "
           f"{skipped[0]})")
  return classes, files


def _split_layout(root: str, present: List[str], report) -> tuple:
  """``(classes, {split: files})`` of ``root/train`` and its test folder."""
  tests = [d for d in present if d != "train"]
  if len(tests) != 1:
    raise ConfigError(f"--source={root}: "
                      + (f"{' and '.join(t + '/' for t in tests)}: keep one "
                         "test folder" if tests else
                         "train/ and no test/ (or val/, validation/): add "
                         "the test images, or put the class folders in "
                         "--source itself and let --test_every split them"))
  layout = {split: _class_files(os.path.join(root, folder), report)
            for split, folder in (("train", "train"), ("test", tests[0]))}
  if layout["train"][0] != layout["test"][0]:
    raise ConfigError(f"--source={root}: the split folders have different "
                      "class folders; give each split every class")
  return layout["train"][0], {split: listed
                              for split, (_, listed) in layout.items()}


def folder_source(root: str, *, test_every: int = 10,
                  report: Callable[[str], None] = console.info) -> Source:
  """Images in ``root/CLASS_NAME/*``, or in ``root/{train,test}/CLASS/*``.

  Classes are the folder names, sorted (label i is the i-th name); a
  folder needs at least two, each with an image. Without split folders
  every ``test_every``-th image of each class (sorted by file name) is a
  test example (docs/data.md, Image folders).
  """
  if not os.path.isdir(root):
    raise ConfigError(f"--source={root} is not a directory of class folders")
  present = [d for d in SPLIT_FOLDERS if os.path.isdir(os.path.join(root, d))]
  if "train" in present:
    classes, files = _split_layout(root, present, report)
  else:
    if test_every < 2:
      raise ConfigError(f"--test_every={test_every}: must be >= 2")
    classes, listed = _class_files(root, report)
    rank = {}
    files = {"train": [], "test": []}
    for path, label in listed:
      rank[label] = rank.get(label, -1) + 1
      files["test" if rank[label] % test_every == test_every - 1
            else "train"].append((path, label))

  def examples(listed):
    def read():
      for path, label in listed:
        with open(path, "rb") as f:
          yield path, f.read(), label
    return read

  return Source(os.path.basename(os.path.normpath(root)), classes,
                {split: (len(listed), examples(listed))
                 for split, listed in files.items() if listed})


def tfds_source(name: str, *, data_dir: Optional[str]) -> Source:
  """A TFDS dataset already prepared in ``data_dir`` (never downloads)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    prepared = builder.is_prepared()
  except Exception as e:  # pylint: disable=broad-except
    # TFDS raises many types (DatasetNotFoundError, registry errors ...).
    raise ConfigError(f"--source=tfds:{name}: {type(e).__name__}: "
                      f"{str(e).splitlines()[0][:200]}") from None
  if not prepared:
    raise ConfigError(f"--source=tfds:{name}: not prepared in "
                      f"--tfds_data_dir={data_dir}; prepare it there first "
                      "(this command never downloads)")
  image_key, label_key = builder.info.supervised_keys or ("image", "label")
  splits = [s for s in ("train", "test", "validation") if s in builder.info.splits]

  def examples(split):
    def read():
      ds = builder.as_dataset(split=split, shuffle_files=False, decoders={
          image_key: tfds.decode.SkipDecoding()})
      for i, example in enumerate(ds.as_numpy_iterator()):
        yield f"{name}/{split}[{i}]", example[image_key], example[label_key]
    return read

  names = builder.info.features[label_key].names
  return Source(name.split("/")[0], list(names),
                {("test" if s == "validation" else s):
                 (builder.info.splits[s].num_examples, examples(s))
                 for s in splits if not (s == "validation" and "test" in splits)})


def _image_format(data: bytes, name: str) -> str:
  if data[:2] == b"\xff\xd8":
    return "jpeg"
  if data[:8] == b"\x89PNG\r\n\x1a\n":
    return "png"
  raise ConfigError(f"{name}: not a PNG or JPEG image; remove it or convert it")


def encode_image(tf, name: str, image, *, image_size: Optional[int],
                 encoding: str) -> Tuple[bytes, str, tuple]:
  """``(encoded bytes, format, shape)`` of one image (bytes or an array)."""
  try:
    if isinstance(image, bytes):
      fmt = _image_format(image, name)
      if image_size is None:
        if fmt == "jpeg":
          return image, fmt, tuple(tf.io.extract_jpeg_shape(image).numpy())
        return image, fmt, tuple(tf.io.decode_png(image).shape)
      image = tf.io.decode_image(image, expand_animations=False)
    else:
      fmt = encoding
    if image_size is not None:
      size = tf.cast(tf.shape(image)[:2], tf.float32)
      scaled = tf.cast(tf.math.ceil(size * image_size / tf.reduce_min(size)),
                       tf.int32)
      image = tf.image.resize_with_crop_or_pad(tf.cast(tf.round(tf.clip_by_value(
          tf.image.resize(image, scaled), 0, 255)), tf.uint8),
                                               image_size, image_size)
    image = tf.convert_to_tensor(image)
    if fmt == "raw":
      return image.numpy().tobytes(), fmt, tuple(image.shape)
    encoded = (tf.io.encode_jpeg(image, quality=JPEG_QUALITY) if fmt == "jpeg"
               else tf.io.encode_png(image))
    return encoded.numpy(), fmt, tuple(image.shape)
  except tf.errors.InvalidArgumentError as e:
    raise ConfigError(f"{name}: cannot decode it as an image "
                      f"({e.message.splitlines()[0][:100]}); remove or "
                      "replace it") from None


def _example(tf, keys: manifest_lib.FeatureKeys, encoded: bytes, fmt: str,
             shape: tuple, label: int):
  feature = tf.train.Feature
  return tf.train.Example(features=tf.train.Features(feature={
      keys.image: feature(bytes_list=tf.train.BytesList(value=[encoded])),
      keys.label: feature(int64_list=tf.train.Int64List(value=[int(label)])),
      keys.format: feature(bytes_list=tf.train.BytesList(value=[fmt.encode()])),
      keys.height: feature(int64_list=tf.train.Int64List(value=[shape[0]])),
      keys.width: feature(int64_list=tf.train.Int64List(value=[shape[1]])),
  })).SerializeToString()


class _Shapes:
  """The stored image shape: every image's height and width must agree;
  the channels are the most any image has (at most 3: RGB)."""

  def __init__(self, image_size: Optional[int]):
    self.image_size = image_size
    self.first = None
    self.channels = 1
    self.formats = set()
    self.counts = collections.Counter()  # images by their channels

  def check(self, name: str, shape: tuple, fmt: str) -> None:
    self.formats.add(fmt)
    self.counts[int(shape[2])] += 1
    self.channels = max(self.channels, min(int(shape[2]), 3))
    if self.first is None:
      self.first = (name, tuple(int(x) for x in shape[:2]))
    elif tuple(shape[:2]) != self.first[1]:
      raise ConfigError(
          f"{name}: {shape[0]}x{shape[1]} pixels, but {self.first[0]} has "
          f"{self.first[1][0]}x{self.first[1][1]}; pass --image_size=S to "
          "resize every image to S x S")

  @property
  def shape(self) -> tuple:
    return self.first[1] + (self.channels,)

  def mixed(self) -> Optional[str]:
    """The line that says how images of several channel counts are read
    (every one decoded with ``channels``, as predict decodes them), or
    None when they agree."""
    if len(self.counts) < 2:
      return None
    kinds = ", ".join(f"{count} {_CHANNEL_NAMES.get(c, f'{c}-channel')}"
                      for c, count in sorted(self.counts.items()))
    how = ("grayscale repeated in the three colour channels, an alpha "
           "channel dropped" if self.channels == 3 else
           "an alpha channel added or dropped")
    return (f"the images mix channels ({kinds}): every image is read with "
            f"{self.channels} ({how}); predict reads images so too")

  @property
  def encoding(self) -> str:
    return self.formats.pop() if len(self.formats) == 1 else "auto"


def _serialized(tf, source: Source, split: str, *, keys, encoding: str,
                shapes: _Shapes):
  """The split's examples, encoded and serialized one at a time."""
  num_classes = len(source.class_names)
  _, examples = source.splits[split]

  def serialize():
    for name, image, label in examples():
      if not 0 <= int(label) < num_classes:
        raise ConfigError(f"{name}: label {label} is outside the "
                          f"{num_classes} classes")
      encoded, fmt, shape = encode_image(tf, name, image, encoding=encoding,
                                         image_size=shapes.image_size)
      shapes.check(name, shape, fmt)
      yield _example(tf, keys, encoded, fmt, shape, label)

  return serialize


def write(source: Source, *, out_dir: str, num_shards: int,
          keys: manifest_lib.FeatureKeys = manifest_lib.FeatureKeys(),
          encoding: str = "png", image_size: Optional[int] = None,
          progress_every: int = shards.PROGRESS_EVERY,
          report: Callable[[str], None] = console.info):
  """Writes every split of ``source`` to ``out_dir``; returns the manifest.

  Args:
    source: what to write (see the ``*_source`` functions).
    out_dir: a new or empty directory (any TensorFlow filesystem).
    num_shards: files per split (fewer if a split has fewer examples).
    keys: the feature keys to write.
    encoding: ``png``, ``jpeg`` or ``raw`` for sources of pixel arrays;
      encoded images keep their own format.
    image_size: resize and centre-crop every image to this square size.
    progress_every: a progress line every this many examples.
    report: receives the progress lines.

  Raises:
    ConfigError: bad arguments or a bad example; nothing is left written.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if encoding not in ("png", "jpeg", "raw"):
    raise ConfigError(f"--encoding={encoding}: use png, jpeg or raw")
  if image_size is not None and image_size < 1:
    raise ConfigError(f"--image_size={image_size}: must be >= 1")
  shapes = _Shapes(image_size)

  def manifest(splits):
    mixed = shapes.mixed()
    if mixed:
      report(mixed)
    image = features_lib.image_feature(shapes.shape, key=keys.image,
                                       encoding=shapes.encoding)
    return manifest_lib.Manifest(
        num_classes=len(source.class_names),
        class_names=list(source.class_names), features=(image,),
        label_key=keys.label, splits=splits, source=source.name)

  return shards.write(
      {split: (count, _serialized(tf, source, split, keys=keys,
                                  encoding=encoding, shapes=shapes))
       for split, (count, _) in source.splits.items()},
      out_dir=out_dir, num_shards=num_shards, manifest=manifest,
      progress_every=progress_every, report=report)
