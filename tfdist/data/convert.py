"""Writes image datasets as sharded TFRecord files plus a manifest.

Owns: reading the three kinds of source (MNIST IDX files, a folder of
``CLASS_NAME/*.png|jpg`` images, a TFDS dataset prepared on disk) one example
at a time, and writing the shards atomically: examples go round-robin to
temporary files that are renamed only once every split is complete, then the
manifest is written last. A failure removes the temporary files: nothing
half-written is left. Imports tfdist (data, console, errors); TensorFlow and
tensorflow-datasets lazily.

Images and sizes: without ``image_size`` a folder's or TFDS dataset's
encoded bytes are stored as they are, and every image must have the size of
the first (a ConfigError names the first that differs). With ``image_size=S``
each image is resized so its shorter side is S, centre-cropped to S x S and
re-encoded in its own format (JPEG at quality 95).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from tfdist import console
from tfdist import data as data_lib
from tfdist.data import manifest as manifest_lib
from tfdist.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Folder layouts: split folders, and the names their splits get.
SPLIT_FOLDERS = {"train": "train", "test": "test", "validation": "test",
                 "val": "test"}
PROGRESS_EVERY = 10_000
JPEG_QUALITY = 95


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


def _class_files(root: str) -> Tuple[List[str], List[Tuple[str, int]]]:
  classes = sorted(d for d in os.listdir(root)
                   if os.path.isdir(os.path.join(root, d)))
  files = [(os.path.join(root, c, f), label)
           for label, c in enumerate(classes)
           for f in sorted(os.listdir(os.path.join(root, c)))
           if f.lower().endswith(IMAGE_SUFFIXES)]
  if not classes or not files:
    raise ConfigError(f"--source={root}: no CLASS_NAME/*.png|jpg images in "
                      "it; lay the images out one folder per class")
  return classes, files


def folder_source(root: str, *, test_every: int = 10) -> Source:
  """Images in ``root/CLASS_NAME/*``, or in ``root/{train,test}/CLASS/*``.

  Classes are the folder names, sorted (label i is the i-th name). Without
  split folders every ``test_every``-th image of each class (sorted by file
  name) is a test example.
  """
  if not os.path.isdir(root):
    raise ConfigError(f"--source={root} is not a directory of class folders")
  present = [d for d in SPLIT_FOLDERS if os.path.isdir(os.path.join(root, d))]
  if "train" in present:
    layout = {SPLIT_FOLDERS[d]: _class_files(os.path.join(root, d))
              for d in present}
    names = {tuple(classes) for classes, _ in layout.values()}
    if len(names) > 1:
      raise ConfigError(f"--source={root}: the split folders have different "
                        "class folders; give each split every class")
    classes = layout["train"][0]
    files = {split: listed for split, (_, listed) in layout.items()}
  else:
    if test_every < 2:
      raise ConfigError(f"--test_every={test_every}: must be >= 2")
    classes, listed = _class_files(root)
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
  """The stored image shape: every image's height and width must agree."""

  def __init__(self, image_size: Optional[int]):
    self.image_size = image_size
    self.first = None
    self.channels = 1
    self.formats = set()

  def check(self, name: str, shape: tuple, fmt: str) -> None:
    self.formats.add(fmt)
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

  @property
  def encoding(self) -> str:
    return self.formats.pop() if len(self.formats) == 1 else "auto"


def _write_split(tf, source: Source, split: str, *, out_dir: str,
                 num_shards: int, keys, encoding: str, shapes: _Shapes,
                 temps: list, progress_every: int, report):
  count, examples = source.splits[split]
  n = max(1, min(num_shards, count))
  names = [f"{split}-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]
  paths = [posixpath.join(out_dir, name) for name in names]
  temps.extend((posixpath.join(out_dir, f".{name}.partial"), path)
               for name, path in zip(names, paths))
  writers = [tf.io.TFRecordWriter(temp) for temp, _ in temps[-n:]]
  counts = [0] * n
  num_classes = len(source.class_names)
  try:
    # Round-robin: every shard gets every class, even from a folder sorted
    # by class, and no shard is held in memory.
    for i, (name, image, label) in enumerate(examples()):
      if not 0 <= int(label) < num_classes:
        raise ConfigError(f"{name}: label {label} is outside the "
                          f"{num_classes} classes")
      encoded, fmt, shape = encode_image(tf, name, image, encoding=encoding,
                                         image_size=shapes.image_size)
      shapes.check(name, shape, fmt)
      writers[i % n].write(_example(tf, keys, encoded, fmt, shape, label))
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


def write(source: Source, *, out_dir: str, num_shards: int,
          keys: manifest_lib.FeatureKeys = manifest_lib.FeatureKeys(),
          encoding: str = "png", image_size: Optional[int] = None,
          progress_every: int = PROGRESS_EVERY,
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
  if num_shards < 1:
    raise ConfigError(f"--shards={num_shards}: must be >= 1")
  if encoding not in ("png", "jpeg", "raw"):
    raise ConfigError(f"--encoding={encoding}: use png, jpeg or raw")
  if image_size is not None and image_size < 1:
    raise ConfigError(f"--image_size={image_size}: must be >= 1")
  if tf.io.gfile.exists(manifest_lib.manifest_path(out_dir)):
    raise ConfigError(f"--out_dir={out_dir} already holds a dataset "
                      f"({manifest_lib.MANIFEST_NAME}); choose a new "
                      "directory or remove it")
  created = not tf.io.gfile.exists(out_dir)
  temps, renamed = [], []
  shapes = _Shapes(image_size)
  try:
    tf.io.gfile.makedirs(out_dir)
    splits = {split: _write_split(
        tf, source, split, out_dir=out_dir, num_shards=num_shards, keys=keys,
        encoding=encoding, shapes=shapes, temps=temps,
        progress_every=progress_every, report=report)
              for split in source.splits}
    manifest = manifest_lib.Manifest(
        num_classes=len(source.class_names),
        class_names=list(source.class_names), image_shape=shapes.shape,
        encoding=shapes.encoding, keys=keys, splits=splits,
        source=source.name)
    for temp, path in temps:
      tf.io.gfile.rename(temp, path, overwrite=True)
      renamed.append(path)
    # Last, and atomically: a directory with a manifest is complete.
    partial = posixpath.join(out_dir, ".manifest.json.partial")
    with tf.io.gfile.GFile(partial, "w") as f:
      f.write(manifest.to_json())
    temps.append((partial, None))
    tf.io.gfile.rename(partial, manifest_lib.manifest_path(out_dir),
                       overwrite=True)
    return manifest
  except BaseException:
    _discard(tf, [temp for temp, _ in temps] + renamed)
    if created and tf.io.gfile.exists(out_dir) and not tf.io.gfile.listdir(out_dir):
      tf.io.gfile.rmtree(out_dir)
    raise
