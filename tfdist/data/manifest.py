"""What a set of TFRecord shards holds, written beside them as JSON.

Owns: the keys of an image record (:class:`FeatureKeys`), the manifest
(:class:`Manifest`: the task and its labels or classes, the features of a
record, the label's and the weight's keys, and per split its files with
their example counts and sizes), the checks that it agrees with the files
on disk, and which older manifests still read (image and id records) and
which must be rewritten (tables of the second layout, whose records hold
preprocessed values). Imports tfdist.errors and
tfdist.data.features, and TensorFlow lazily (tf.io.gfile, so manifests on any
filesystem TensorFlow opens, e.g. ``gs://``, are read).
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
from typing import Dict, List, Optional, Tuple

from tfdist.data import features as features_lib
from tfdist.errors import ConfigError

MANIFEST_NAME = "manifest.json"
# The layout written: 3 adds the task, labels and weights and keeps raw
# values in the records; 2 listed features (1, the first, held one image).
FORMAT = 3
TASKS = ("classification", "regression", "multilabel")
REWRITE = ("written by an older tfdist (string columns stored as ids, "
           "statistics rounded): rewrite the records with python -m "
           "tfdist.data write")


@dataclasses.dataclass(frozen=True)
class FeatureKeys:
  """The ``tf.train.Example`` keys of one record.

  The defaults are those of the ImageNet preprocessing of tensorflow/models
  (``build_imagenet_data.py``) and of TFDS's image classification exports:
  ``image/encoded`` (bytes: PNG, JPEG or raw uint8 pixels in HWC order),
  ``image/class/label`` (int64), ``image/format`` (bytes, e.g. ``b"png"``),
  ``image/height`` and ``image/width`` (int64).
  """
  image: str = "image/encoded"
  label: str = "image/class/label"
  format: str = "image/format"
  height: str = "image/height"
  width: str = "image/width"


@dataclasses.dataclass(frozen=True)
class SplitFiles:
  """One split's shards: base names, examples and bytes of each file."""
  files: List[str]
  examples: List[int]
  sizes: List[int]

  @property
  def total(self) -> int:
    return sum(self.examples)


@dataclasses.dataclass(frozen=True)
class Manifest:
  """Everything a reader needs that flags would otherwise say.

  Attributes:
    num_classes: the model's outputs: classification, the classes; else
      the label columns (see :attr:`num_outputs`).
    class_names: classification: the classes (label i is the i-th);
      multilabel: the label columns; regression: none.
    features: of a record (tfdist.data.features.Feature).
    label_key: the label's record key: classification, an int64 class
      index; regression, ``len(label_names)`` floats; multilabel as many 0
      or 1 floats.
    splits: each split's files.
    source: the dataset's name.
    task: one of TASKS.
    label_names: the label column(s) (image datasets: ``label``).
    weight_key: "" or the key of a float weight per example.
    class_counts: classification: the training split's examples per class,
      by class name (empty when the writer did not count them).
  """
  num_classes: int
  class_names: List[str]
  features: Tuple[features_lib.Feature, ...]
  label_key: str
  splits: Dict[str, SplitFiles]
  source: str = ""
  task: str = "classification"
  label_names: List[str] = dataclasses.field(default_factory=lambda: ["label"])
  weight_key: str = ""
  class_counts: Dict[str, int] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f"task {self.task!r} is not one of {', '.join(TASKS)}")

  @property
  def num_outputs(self) -> int:
    """The width of the model's output."""
    return self.num_classes

  @property
  def image(self) -> Optional[features_lib.Feature]:
    """The image feature when it is the records' only feature."""
    return features_lib.single_image(features_lib.by_name(self.features))

  def to_json(self) -> str:
    body = {"format": FORMAT, "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "features": [f.to_json() for f in self.features],
            "label_key": self.label_key, "source": self.source,
            "task": self.task, "label_names": list(self.label_names),
            "weight_key": self.weight_key,
            "class_counts": dict(self.class_counts),
            "splits": {name: dataclasses.asdict(s)
                       for name, s in self.splits.items()},
            "counts": {name: s.total for name, s in self.splits.items()}}
    return json.dumps(body, indent=1, sort_keys=True) + "\n"

  @classmethod
  def from_json(cls, text: str, *, path: str) -> "Manifest":
    try:
      body = json.loads(text)
      body.pop("counts", None)
      layout = body.pop("format", 1)
      if "features" not in body:
        body = _from_image_layout(body)
      old_table = layout < 3 and any(map(_preprocessed, body["features"]))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
      raise _not_a_manifest(path, e) from None
    if old_table:
      raise ConfigError(f"{path}: {REWRITE}")
    try:
      body["features"] = tuple(features_lib.Feature.from_json(f)
                               for f in body["features"])
      features_lib.by_name(body["features"])  # no name twice
      body["splits"] = {name: SplitFiles(**s)
                        for name, s in body["splits"].items()}
      return cls(**body)
    except (ValueError, KeyError, TypeError) as e:
      raise _not_a_manifest(path, e) from None


def _not_a_manifest(path: str, error: Exception) -> ConfigError:
  return ConfigError(f"{path}: not a tfdist manifest ({type(error).__name__}: "
                     f"{error}); rewrite it with python -m tfdist.data write")


def _preprocessed(feature: dict) -> bool:
  """A feature of the second layout's tables: an id made from strings (its
  vocabulary), or numbers stored with their statistics (standardised by
  the model functions of that time)."""
  return bool(feature.get("vocabulary") and feature.get("kind") == "id"
              or feature.get("mean") or feature.get("std"))


def _from_image_layout(body: dict) -> dict:
  """A manifest of the first layout (one image: image_shape, encoding and
  keys) in the current one."""
  keys = FeatureKeys(**body.pop("keys"))
  image = features_lib.image_feature(
      body.pop("image_shape"), key=keys.image, encoding=body.pop("encoding"))
  return dict(body, features=[image.to_json()], label_key=keys.label)


def manifest_path(directory: str) -> str:
  join = posixpath.join if "://" in directory else os.path.join
  return join(directory, MANIFEST_NAME)


def read(directory: str) -> Optional[Manifest]:
  """The manifest in ``directory``, or None if it has none."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = manifest_path(directory)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path, "r") as f:
    return Manifest.from_json(f.read(), path=path)


def check_files(manifest: Manifest, split: str, files: List[str],
                *, directory: str) -> SplitFiles:
  """Checks that ``files`` are the split's shards, whole; returns the split.

  Cheap (one stat per file), so every reader runs it: a missing, extra or
  truncated shard is reported before training starts.

  Raises:
    ConfigError: naming the manifest and the first file that disagrees.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  where = manifest_path(directory)
  if split not in manifest.splits:
    raise ConfigError(f"{where} has no {split!r} split (it has "
                      f"{', '.join(sorted(manifest.splits))}); point "
                      f"--{split}_files at that split's shards")
  expected = manifest.splits[split]
  names = [posixpath.basename(f) for f in files]
  if sorted(names) != sorted(expected.files):
    missing = sorted(set(expected.files) - set(names))
    extra = sorted(set(names) - set(expected.files))
    raise ConfigError(
        f"{where} disagrees with the {split} files: "
        + (f"missing {', '.join(missing[:5])}" if missing else "")
        + ("; " if missing and extra else "")
        + (f"not listed {', '.join(extra[:5])}" if extra else "")
        + "; rewrite the shards and manifest together")
  sizes = dict(zip(expected.files, expected.sizes))
  for path, name in zip(files, names):
    size = tf.io.gfile.stat(path).length
    if size != sizes[name]:
      raise ConfigError(f"{path}: {size} bytes, {where} says {sizes[name]}: "
                        "the file is truncated or was rewritten; rewrite the "
                        "shards and manifest together")
  return expected
