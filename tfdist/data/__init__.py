"""Training and test data: where it comes from, and small data in memory.

Owns where the data comes from (:func:`resolve_source`: TFRecord files,
``--mnist_dir``, a TFDS copy already on disk, or the MNIST sample bundled in
``tfdist/datasets/mnist``), loading small data (MNIST IDX files, synthetic
images) into memory, and that in-memory input pipeline. Files and TFDS
stream instead (tfdist.data.sources, records, window, tfds_stream), behind
the same interface; what each feature is (tfdist.data.features: Feature).
Imports tfdist.errors, console, data.features and data.parsing (the
examples' weights); TensorFlow only inside the functions that need it. The
package may import tfdist.cli, console, tf_startup and errors only: the
model, serving and training build on it (setup.cfg's import-linter
contracts).

Loading returns plain uint8 numpy arrays, checked without TensorFlow, so a bad
``--mnist_dir`` is reported at once. :func:`make_dataset_fn` turns arrays
into the ``dataset_fn(input_context)`` that all three strategies consume.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import os
import socket
import struct
import threading
from typing import Optional

import numpy as np

from tfdist import console
from tfdist.data import features as features_lib
from tfdist.data import parsing
from tfdist.errors import ConfigError

SOURCES = ("tfrecord", "tfds", "idx", "synthetic")
CHOICES = ("auto",) + SOURCES

# Real MNIST shipped inside the package (24,345 training and all 10,000 test
# images, CC BY-SA 3.0; README.md beside the files), so a trainer always has
# data: no network, no directory to point at.
BUNDLED_MNIST_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets",
    "mnist")
# How long a TFDS download may take to reach its server before it fails
# (tensorflow-datasets itself retries for minutes).
NETWORK_PROBE_SECONDS = 5.0

# The four files of the MNIST distribution (gzip-compressed or not).
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
MNIST_SHAPE = (28, 28, 1)
# The feature name of an image dataset's images (the model's input).
IMAGE_NAME = "images"
# Random images' default shape (--data=synthetic without --image_shape).
SYNTHETIC_SHAPE = (28, 28, 1)


@dataclasses.dataclass(frozen=True)
class Split:
  """Images (N, H, W, C) uint8 and labels (N,) int64 of one split."""
  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train and test splits, and the number of classes."""
  train: Split
  test: Split
  num_classes: int
  name: str

  @property
  def image_shape(self) -> tuple:
    return tuple(self.train.images.shape[1:])

  @property
  def features(self) -> dict:
    """One feature: the images (tfdist.data.features)."""
    image = features_lib.image_feature(self.image_shape, name=IMAGE_NAME,
                                       encoding="raw")
    return {image.name: image}


def _idx_path(directory: str, stem: str) -> str:
  for candidate in (stem + ".gz", stem):
    path = os.path.join(directory, candidate)
    if os.path.exists(path):
      return path
  raise ConfigError(f"--mnist_dir={directory}: {stem}.gz is missing; the "
                    "directory needs the four MNIST IDX files "
                    f"({', '.join(f + '.gz' for f in IDX_FILES.values())})")


def read_idx(path: str, *, expect_magic: int) -> np.ndarray:
  """Reads one IDX file (gzip or raw) into a uint8 array, checking its header.

  Raises:
    ConfigError: bad magic number, wrong dimensions, or a file shorter than
      its header says; the message names the file.
  """
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:
    raise ConfigError(f"{path}: cannot read it ({e}); replace it with the "
                      "original MNIST file")
  ndim = 3 if expect_magic == _IMAGES_MAGIC else 1
  header_size = 4 + 4 * ndim
  if len(data) < header_size:
    raise ConfigError(f"{path}: corrupt IDX header ({len(data)} bytes); "
                      "replace it with the original MNIST file")
  magic, *dims = struct.unpack(f">{1 + ndim}i", data[:header_size])
  if magic != expect_magic:
    raise ConfigError(f"{path}: corrupt IDX header (magic {magic}, expected "
                      f"{expect_magic}); replace it with the original MNIST "
                      "file")
  if any(d <= 0 for d in dims) or (ndim == 3 and dims[1:] != [28, 28]):
    raise ConfigError(f"{path}: corrupt IDX header (dimensions {dims}); "
                      "replace it with the original MNIST file")
  expected = int(np.prod(dims))
  if len(data) - header_size != expected:
    raise ConfigError(f"{path}: the header announces {expected} bytes of data "
                      f"but the file holds {len(data) - header_size}; replace "
                      "it with the original MNIST file")
  return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def load_mnist_idx(directory: str) -> Dataset:
  """Loads MNIST from a directory holding the four IDX files."""
  if not os.path.isdir(directory):
    raise ConfigError(f"--mnist_dir={directory} is not a directory; point it "
                      "at the folder with the four MNIST IDX files, or drop "
                      "it to train on the bundled MNIST sample")
  splits = {}
  for split in ("train", "test"):
    images = read_idx(_idx_path(directory, IDX_FILES[(split, "images")]),
                      expect_magic=_IMAGES_MAGIC)
    labels = read_idx(_idx_path(directory, IDX_FILES[(split, "labels")]),
                      expect_magic=_LABELS_MAGIC)
    if len(images) != len(labels):
      raise ConfigError(f"--mnist_dir={directory}: {split} has {len(images)} "
                        f"images but {len(labels)} labels; use matching files")
    if labels.max() > 9:
      raise ConfigError(f"--mnist_dir={directory}: {split} labels go up to "
                        f"{labels.max()}, MNIST has 10 classes")
    splits[split] = Split(images[..., None], labels.astype(np.int64))
  return Dataset(splits["train"], splits["test"], num_classes=10,
                 name="mnist")


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
  """A TFDS dataset the trainers know, described without TensorFlow."""
  tfds_name: str
  image_shape: tuple
  # The server its download comes from: probed before TFDS tries it.
  download_host: str = "storage.googleapis.com"
  test_split: str = "test"
  # Images of varying size are centre-cropped to image_shape on loading.
  crop: bool = False


# Their image shapes are known before any download, so a model can reject a
# shape it cannot take at once. imagenette's 160px build scales the shorter
# side to 160 px: a centre crop makes every image 160x160.
TFDS_DATASETS = {
    "mnist": TfdsDataset("mnist", MNIST_SHAPE),
    "cifar10": TfdsDataset("cifar10", (32, 32, 3),
                           download_host="www.cs.toronto.edu"),
    "imagenette": TfdsDataset("imagenette/160px-v2", (160, 160, 3),
                              download_host="s3.amazonaws.com",
                              test_split="validation", crop=True),
}


def tfds_dataset(name: str) -> TfdsDataset:
  """The known dataset called ``name``; ConfigError for any other name."""
  if name not in TFDS_DATASETS:
    raise ConfigError(f"--dataset={name!r}: use one of "
                      f"{', '.join(TFDS_DATASETS)}")
  return TFDS_DATASETS[name]


def _known(name: str) -> TfdsDataset:
  return TFDS_DATASETS.get(name, TfdsDataset(name, ()))


def tfds_data_dir(data_dir: Optional[str] = None) -> str:
  """Where tensorflow-datasets keeps its datasets: ``data_dir``, else
  $TFDS_DATA_DIR, else ~/tensorflow_datasets (TFDS's own default)."""
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR")
                            or os.path.join("~", "tensorflow_datasets"))


def tfds_on_disk(name: str, data_dir: Optional[str] = None) -> bool:
  """True if TFDS has prepared ``name`` under its data dir: loading it
  needs no network. Looks at files only (no TFDS import)."""
  root = os.path.join(tfds_data_dir(data_dir), _known(name).tfds_name)
  return bool(glob.glob(os.path.join(root, "*", "dataset_info.json")))


def check_reachable(host: str, *, port: int = 443,
                    timeout: float = NETWORK_PROBE_SECONDS) -> None:
  """Raises ConnectionError unless ``host:port`` accepts a TCP connection
  within ``timeout`` seconds (name resolution included, which has no
  timeout of its own: it runs in a thread that is abandoned)."""
  failure = [f"no answer within {timeout:g} s"]

  def connect():
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      failure.clear()
    except OSError as e:
      failure[0] = str(e) or type(e).__name__

  probe = threading.Thread(target=connect, daemon=True)
  probe.start()
  probe.join(timeout)
  if failure:
    raise ConnectionError(f"cannot reach {host}:{port} ({failure[0]})")


def synthetic(*, image_shape=SYNTHETIC_SHAPE, num_classes: int = 10,
              train_examples: int = 4096, test_examples: int = 1024,
              seed: int = 0) -> Dataset:
  """Random images whose class is learnable: a per-class mean pattern + noise.

  For throughput runs and tests that must not depend on any file.
  """
  rng = np.random.default_rng(seed)
  prototypes = rng.uniform(0, 255, size=(num_classes,) + tuple(image_shape))

  def make(n):
    labels = rng.integers(0, num_classes, size=n)
    noise = rng.normal(0, 60, size=(n,) + tuple(image_shape))
    images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
    return Split(images, labels.astype(np.int64))

  return Dataset(make(train_examples), make(test_examples),
                 num_classes=num_classes, name="synthetic")


@dataclasses.dataclass(frozen=True)
class Source:
  """Where a trainer's data comes from; see :func:`resolve_source`.

  Attributes:
    kind: one of SOURCES.
    mnist_dir: kind ``idx``: the directory of the four IDX files.
    tfds_name: kind ``tfds``: a key of TFDS_DATASETS.
    tfds_data_dir: kind ``tfds``: TFDS's data dir (None: its default).
  """
  kind: str
  mnist_dir: Optional[str] = None
  tfds_name: str = "mnist"
  tfds_data_dir: Optional[str] = None

  def describe(self) -> str:
    if self.kind in ("synthetic", "tfrecord"):
      return {"synthetic": "synthetic images",
              "tfrecord": "TFRecord files"}[self.kind]
    if self.kind == "tfds":
      return (f"{self.tfds_name} from tensorflow-datasets in "
              f"{tfds_data_dir(self.tfds_data_dir)}")
    if os.path.abspath(self.mnist_dir) == BUNDLED_MNIST_DIR:
      return "the MNIST sample bundled with tfdist"
    return f"MNIST from {self.mnist_dir}"


def resolve_source(choice: str = "auto", *, mnist_dir: Optional[str] = None,
                   tfds_name: str = "mnist",
                   tfds_data_dir: Optional[str] = None) -> Source:
  """The data a trainer's flags ask for, without network or TensorFlow.

  ``auto`` (the default) resolves, in order, to: ``mnist_dir`` if given; a
  dataset other than MNIST (named explicitly, only TFDS has it) through
  TFDS; a TFDS copy of MNIST already on disk; the bundled MNIST sample.
  Only an explicit TFDS choice may download.
  """
  if choice not in CHOICES:
    raise ConfigError(f"--data={choice!r}: use one of {', '.join(CHOICES)}")
  tfds = Source("tfds", tfds_name=tfds_name, tfds_data_dir=tfds_data_dir)
  if choice == "auto":
    if mnist_dir:
      return Source("idx", mnist_dir=mnist_dir)
    if tfds_name != "mnist" or tfds_on_disk(tfds_name, tfds_data_dir):
      return tfds
    return Source("idx", mnist_dir=BUNDLED_MNIST_DIR)
  if choice == "tfrecord":
    return Source("tfrecord")
  if choice == "idx":
    if not mnist_dir:
      raise ConfigError("--data=idx needs --mnist_dir=DIR (the folder of the "
                        "four MNIST IDX files); without --data the bundled "
                        "MNIST sample is used")
    return Source("idx", mnist_dir=mnist_dir)
  return tfds if choice == "tfds" else Source("synthetic")


def load(source: Source, *, synthetic_shape=SYNTHETIC_SHAPE,
         seed: int = 0) -> Dataset:
  """Loads an in-memory ``source`` (idx, synthetic); says in one line which
  data and how much. Files and TFDS stream instead (tfdist.data.sources)."""
  if source.kind == "synthetic":
    dataset = synthetic(image_shape=synthetic_shape, seed=seed)
  elif source.kind != "idx":
    raise ValueError(f"{source.kind} data streams: see sources.open_source")
  else:
    dataset = load_mnist_idx(source.mnist_dir)
  console.info(f"data: {source.describe()}, {len(dataset.train):,} training "
               f"and {len(dataset.test):,} test examples")
  return dataset


def make_dataset_fn(split: Split, *, global_batch_size: int,
                    shuffle_seed: Optional[int] = 0, class_weights=()):
  """Returns ``dataset_fn(input_context)`` for ``DatasetCreator``: batches
  of ``({"images": float32 images}, labels)``, with each example's weight
  third when ``class_weights`` are given.

  The same function serves all three strategies: Keras calls it once per
  input pipeline (one per worker under multiworker, on each worker under ps).

  Args:
    split: the training split.
    global_batch_size: examples per step over all replicas.
    shuffle_seed: base seed; None draws a fresh seed per pipeline (under ps,
      where pipelines cannot tell each other apart and should differ).
    class_weights: () or each class's weight, by class index.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images, labels = split.images, split.labels

  def dataset_fn(input_context):
    batch = input_context.get_per_replica_batch_size(global_batch_size)
    # Each worker reads a disjoint 1/N of the examples (every N-th from its
    # id, as Dataset.shard): N workers see the whole training set once per
    # epoch, not N times. Sliced here, so no worker reads and drops the
    # others' examples.
    shard = slice(input_context.input_pipeline_id, None,
                  input_context.num_input_pipelines)
    shard_images, shard_labels = (tf.constant(images[shard]),
                                  tf.constant(labels[shard]))
    seed = (None if shuffle_seed is None
            else shuffle_seed + input_context.input_pipeline_id)
    # Shuffle and batch indices, then gather whole batches: per-batch ops,
    # not per-example ones, which cost more than a softmax step (tfdist.bench
    # notes). The same seed gives the same order as shuffling the examples.
    # (The static shape: under ps this runs inside a tf.function.)
    ds = tf.data.Dataset.range(shard_labels.shape[0]).shuffle(
        len(images), seed=seed, reshuffle_each_iteration=True)
    # repeat() before batch(): steps_per_epoch, not the data, ends an epoch,
    # so no worker runs dry a step before the others (a collective hang).
    ds = ds.repeat().batch(batch, drop_remainder=True)

    def gather(indices):
      # Scale after batching: one vectorised op per batch.
      images = tf.cast(tf.gather(shard_images, indices), tf.float32) / 255.0
      labels = tf.gather(shard_labels, indices)
      if not class_weights:
        return {IMAGE_NAME: images}, labels
      return {IMAGE_NAME: images}, labels, parsing.weights_of(
          tf, labels, class_weights=class_weights)

    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)

  return dataset_fn
