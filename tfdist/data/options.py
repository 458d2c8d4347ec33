"""Which data to train on: :class:`DataConfig`, one declaration per setting.

Each field is one data setting; the trainers generate their absl flags from
the fields (tfdist.app), as they do for tfdist.config.TrainConfig.
Checked without TensorFlow. Imports tfdist.errors, tfdist.data (its
choices) and tfdist.data.manifest (the default feature keys).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from tfdist.data import CHOICES
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

  def __post_init__(self):
    if self.data not in CHOICES:
      raise ConfigError(f"--data={self.data!r}: use one of "
                        f"{', '.join(CHOICES)}")
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
    if self.augment and kind in ("idx", "synthetic"):
      raise ConfigError(f"--augment crops streamed images; --data={kind} is "
                        "held in memory: use --data=tfrecord or tfds, or "
                        "drop --augment")

  @property
  def kind(self) -> str:
    """--data with auto resolved as far as the flags tell (auto stays for
    data.resolve_source, which looks on disk)."""
    if self.data == "auto" and self.train_files:
      return "tfrecord"
    return self.data

  def keys(self) -> FeatureKeys:
    return FeatureKeys(image=self.image_key, label=self.label_key)
