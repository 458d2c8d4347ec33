"""Which data to train on: :class:`DataConfig`, one declaration per setting.

Each field is one data setting; the trainers generate their absl flags from
the fields (tfdist.app), as they do for tfdist.training.config.TrainConfig.
Checked without TensorFlow (where the data comes from, too: :meth:`DataConfig.source`).
Imports tfdist.errors, tfdist.data (its sources) and tfdist.data.manifest
(the default feature keys).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Mapping, Optional, Sequence, Tuple

from tfdist import data as data_lib
from tfdist.data.manifest import FeatureKeys
from tfdist.errors import ConfigError


def _setting(default, help_text: str):
  return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
  """The trainers' data; every field is a flag of the same name."""
  data: str = _setting(
      "auto", "tfrecord (--train_files/--test_files), tfds (streams a "
      "prepared TFDS copy; downloads if there is none), idx (--mnist_dir), "
      "synthetic; auto = tfrecord with --train_files, else --mnist_dir, "
      "else TFDS MNIST on disk, else the bundled MNIST sample.")
  mnist_dir: Optional[str] = _setting(
      None, "Directory with the four MNIST IDX files (held in memory).")
  tfds_data_dir: Optional[str] = _setting(
      None, "tensorflow-datasets data_dir (default ~/tensorflow_datasets).")
  train_files: Optional[str] = _setting(
      None, "--data=tfrecord: training shards, a glob or a comma-separated "
      "list (any filesystem TensorFlow opens, e.g. gs://).")
  test_files: Optional[str] = _setting(
      None, "--data=tfrecord: test shards, as --train_files.")
  image_key: str = _setting(
      FeatureKeys.image, "--data=tfrecord: feature holding the PNG, JPEG "
      "or raw uint8 image.")
  label_key: str = _setting(
      FeatureKeys.label, "--data=tfrecord: feature holding the int64 label.")
  num_classes: int = _setting(
      0, "--data=tfrecord without a manifest.json beside the files: the "
      "number of classes (0 = from the manifest).")
  augment: bool = _setting(
      False, "Streamed data (tfrecord, tfds): random crop and left-right "
      "flip of the training images instead of a centre crop.")
  dataset: str = _setting(
      "mnist", f"The TFDS dataset ({', '.join(data_lib.TFDS_DATASETS)}) of --data="
      "tfds, and of auto when it is not mnist; mnist from --mnist_dir.")
  image_shape: str = _setting(
      "", "height,width,channels of the model's images: of --data=synthetic "
      "(default 28,28,1); for --data=tfrecord and tfds the stored images are "
      "cropped (or upscaled) to it (default: their own shape).")
  class_weight: str = _setting(
      "", "Classification: weight each training example by its class: "
      "balanced (n / (classes x the class's examples), from the training "
      "split's counts) or a JSON object {\"class name\": weight} (classes "
      "left out weigh 1). Multiplies a weight column's weights; test metrics "
      "are not weighted.")

  def __post_init__(self):
    if self.data not in data_lib.CHOICES:
      raise ConfigError(f"--data={self.data!r}: use one of "
                        f"{', '.join(data_lib.CHOICES)}")
    kind = self.kind
    if kind == "tfrecord":
      for flag in ("train_files", "test_files"):
        if not getattr(self, flag):
          raise ConfigError(f"--data=tfrecord needs --{flag}=PATTERN (a glob "
                            "or comma-separated TFRecord files)")
    else:
      for flag in ("train_files", "test_files", "num_classes"):
        if getattr(self, flag):
          raise ConfigError(f"--{flag} reads TFRecord files: add "
                            "--data=tfrecord or drop it")
    if self.num_classes < 0:
      raise ConfigError(f"--num_classes={self.num_classes}: must be 1 or "
                        "more (0 = from the manifest)")
    self.model_image_shape()  # checks --image_shape
    self._class_weight_setting()  # checks --class_weight
    if self.dataset != "mnist" and kind in ("synthetic", "tfrecord"):
      reads = {"synthetic": "makes random images of --image_shape",
               "tfrecord": "reads --train_files"}[kind]
      raise ConfigError(f"--dataset names a TFDS dataset; --data={kind} "
                        f"{reads}: drop one of them")

  def model_image_shape(self) -> Optional[tuple]:
    """--image_shape as (height, width, channels), or None if unset."""
    if not self.image_shape:
      return None
    try:
      shape = tuple(int(part) for part in self.image_shape.split(","))
    except ValueError:
      shape = ()
    if len(shape) != 3 or min(shape) < 1:
      raise ConfigError(f"--image_shape={self.image_shape!r}: give height,"
                        "width,channels as three positive integers, e.g. "
                        "32,32,3")
    return shape

  def source(self) -> data_lib.Source:
    """Where the data comes from (tfdist.data.resolve_source: it looks on
    disk, without TensorFlow), checked against --dataset and
    --image_shape."""
    source = data_lib.resolve_source(self.kind, mnist_dir=self.mnist_dir,
                            tfds_name=self.dataset,
                            tfds_data_dir=self.tfds_data_dir)
    if self.augment and source.kind in ("idx", "synthetic"):
      raise ConfigError(f"--augment crops streamed images; "
                        f"{source.describe()} is held in memory: use "
                        "--data=tfrecord or tfds, or drop --augment")
    if source.kind in ("idx", "tfds"):
      data_lib.tfds_dataset(self.dataset)  # a name it knows
    if source.kind == "idx" and self.dataset != "mnist":
      raise ConfigError(f"--mnist_dir holds MNIST, not {self.dataset}; drop "
                        f"--mnist_dir to load {self.dataset} through TFDS")
    if source.kind == "idx" and self.image_shape:
      raise ConfigError("--image_shape: MNIST from --mnist_dir is held in "
                        "memory at 28x28x1; convert it (python -m tfdist.data "
                        "write) and add --data=tfrecord, or drop the flag")
    return source

  def known_image_shape(self) -> Optional[tuple]:
    """The model's image shape where the flags tell it without reading
    any file (None for TFRecord files without --image_shape)."""
    source = self.source()
    if source.kind == "synthetic":
      return self.model_image_shape() or data_lib.SYNTHETIC_SHAPE
    if source.kind == "idx":
      return data_lib.MNIST_SHAPE
    if source.kind == "tfds":
      return self.model_image_shape() or data_lib.tfds_dataset(self.dataset).image_shape
    return self.model_image_shape()

  @property
  def kind(self) -> str:
    """--data with auto resolved as far as the flags tell (auto stays for
    data.resolve_source, which looks on disk)."""
    if self.data == "auto" and self.train_files:
      return "tfrecord"
    return self.data

  def _class_weight_setting(self):
    """--class_weight as "balanced", a {class name: weight} dict, or None."""
    if not self.class_weight or self.class_weight == "balanced":
      return self.class_weight or None
    try:
      mapping = json.loads(self.class_weight)
    except ValueError:
      mapping = None
    if not isinstance(mapping, dict) or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool)
        and math.isfinite(w) and w >= 0 for w in mapping.values()):
      raise ConfigError(f"--class_weight={self.class_weight}: use balanced "
                        "or a JSON object of weights >= 0 by class name, e.g. "
                        "'{\"malignant\": 2}'")
    return mapping

  def class_weights(self, *, task: str, class_names: Sequence[str],
                    class_counts: Optional[Mapping[str, int]],
                    data: str) -> Tuple[float, ...]:
    """Each class's weight (by class index) of --class_weight, or () when
    unset.

    Args:
      task: the data's task (only classification weights classes).
      class_names: the classes, in index order.
      class_counts: the training split's examples per class name (None or
        empty when the data does not say: balanced then cannot be
        computed).
      data: what the data is, for the error lines.
    """
    setting = self._class_weight_setting()
    if setting is None:
      return ()
    if task != "classification":
      raise ConfigError(f"--class_weight weights classes; {data} is "
                        f"{task}: drop the flag, or weight examples with a "
                        "weight column (python -m tfdist.data write "
                        "--weight=COLUMN)")
    if setting == "balanced":
      if not class_counts or any(not class_counts.get(c)
                                 for c in class_names):
        raise ConfigError(f"--class_weight=balanced needs the training "
                          f"split's count of every class, which {data} does "
                          "not give; write the records with python -m "
                          "tfdist.data write, or give the weights as JSON")
      total = sum(class_counts[c] for c in class_names)
      return tuple(total / (len(class_names) * class_counts[c])
                   for c in class_names)
    unknown = sorted(set(setting) - set(class_names))
    if unknown:
      shown = ", ".join(class_names[:10])
      raise ConfigError(f"--class_weight: {unknown[0]!r} is no class of "
                        f"{data} (its classes: {shown}"
                        f"{', ...' if len(class_names) > 10 else ''})")
    return tuple(float(setting.get(c, 1.0)) for c in class_names)

  def keys(self) -> FeatureKeys:
    return FeatureKeys(image=self.image_key, label=self.label_key)
