"""Prepares a small TFDS dataset on disk, offline: ``python tiny_tfds.py DIR``.

For the converter's TFDS source: real TFDS files (dataset_info.json, its
TFRecord shards) that tfds.builder finds by name in ``DIR`` without the
builder's code. Images are seeded noise, labels cycle over three classes.
"""

import sys

import numpy as np
import tensorflow_datasets as tfds


class TinyDigits(tfds.core.GeneratorBasedBuilder):
  """30 training and 9 test images, 28x28x1, three classes."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, supervised_keys=("image", "label"),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 1)),
            "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {"train": self._generate_examples(30),
            "test": self._generate_examples(9)}

  def _generate_examples(self, n):
    rng = np.random.default_rng(n)
    for i in range(n):
      yield i, {"image": rng.integers(0, 255, (28, 28, 1), dtype=np.uint8),
                "label": i % 3}


if __name__ == "__main__":
  TinyDigits(data_dir=sys.argv[1]).download_and_prepare()
