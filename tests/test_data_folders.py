"""The converter's other sources: image folders (PNG, JPEG) and TFDS.

Each converts in a real process; the shards are then read back through the
training and evaluation pipelines and compared pixel for pixel with the
source images.
"""

import collections
import dataclasses
import json
import os
import sys

import numpy as np
import pytest

from conftest import json_lines, run
from test_data_files import fingerprints, write

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tensorflow as tf  # pylint: disable=wrong-import-position

from tfdist import data as data_lib  # pylint: disable=wrong-import-position
from tfdist import models  # pylint: disable=wrong-import-position
from tfdist.data import sources  # pylint: disable=wrong-import-position
from tfdist.data import tfds_stream  # pylint: disable=wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))


def save(path, image, encode):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(encode(image).numpy())


def expected(batches):
  return fingerprints([(np.stack(images) / 255.0, labels)
                       for images, labels in batches])


def test_png_folder_converts_and_reads(mnist_dir, tmp_path):
  mnist = data_lib.load_mnist_idx(mnist_dir)
  # Digits 0, 1, 2 in folders whose sorted names give labels 2, 0, 1.
  names = {0: "zero", 1: "one", 2: "two"}
  label_of = {"one": 0, "two": 1, "zero": 2}
  train, test = collections.defaultdict(list), collections.defaultdict(list)
  for digit, name in names.items():
    images = mnist.test.images[mnist.test.labels == digit][:20]
    for i, image in enumerate(images):
      save(str(tmp_path / "digits" / name / f"{i:03d}.png"), image,
           tf.io.encode_png)
      # --test_every=5: the 5th, 10th, ... image of each class is a test one.
      (test if i % 5 == 4 else train)[label_of[name]].append(image)
  out = str(tmp_path / "records")
  result = write(f"--source={tmp_path / 'digits'}", f"--out_dir={out}",
                 "--shards=2", "--test_every=5")
  assert result.returncode == 0, result.stderr
  assert json_lines(result.stdout)[-1]["counts"] == {"train": 48, "test": 12}
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  assert source.class_names == ["one", "two", "zero"]
  assert (source.image_shape, source.num_classes) == ((28, 28, 1), 3)
  assert source.spec.features[0].encoding == "png"
  assert fingerprints(source.test_batches(5)) == expected(
      [(images, [label] * len(images)) for label, images in test.items()])
  dataset = source.train_dataset_fn(16, seed=0)(tf.distribute.InputContext())
  batches = iter(dataset)
  epoch = [next(batches) for _ in range(3)]  # 48 = one epoch
  assert fingerprints(epoch) == expected(
      [(images, [label] * len(images)) for label, images in train.items()])


@pytest.mark.slow
def test_jpeg_folder_converts_and_reads_at_another_size(tmp_path):
  rng = np.random.default_rng(0)
  prototypes = rng.integers(0, 256, (4, 40, 40, 3))
  originals = []
  for label in range(4):
    for i in range(10):
      image = np.clip(prototypes[label] + rng.normal(0, 30, (40, 40, 3)), 0,
                      255).astype(np.uint8)
      path = str(tmp_path / "jpegs" / f"class{label}" / f"{i}.jpg")
      save(path, image, lambda x: tf.io.encode_jpeg(x, quality=90))
      originals.append((path, label))
  out = str(tmp_path / "records")
  result = write(f"--source={tmp_path / 'jpegs'}", f"--out_dir={out}",
                 "--shards=3")
  assert result.returncode == 0, result.stderr
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  (image,) = manifest["features"]
  assert (image["shape"], image["encoding"]) == ([40, 40, 3], "jpeg")
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*",
                              image_shape=(32, 32, 3))
  # Test images: the centre 32x32 of each stored JPEG (bytes kept as is).
  test = [(path, label) for path, label in originals
          if int(os.path.basename(path)[0]) % 10 == 9]
  centre = [(tf.io.decode_jpeg(open(p, "rb").read())[4:36, 4:36].numpy(),
             label) for p, label in test]
  assert fingerprints(source.test_batches(3)) == expected(
      [([image for image, _ in centre], [label for _, label in centre])])
  dataset = dataclasses.replace(source, augment=True).train_dataset_fn(
      8, seed=0)(
      tf.distribute.InputContext())
  inputs, labels = next(iter(dataset))
  assert inputs["images"].shape == (8, 32, 32, 3) and labels.shape == (8,)
  model = models.softmax_regression(source.features, source.num_classes)
  model.compile(optimizer="sgd", loss=tf.keras.losses.
                SparseCategoricalCrossentropy(from_logits=True))
  history = model.fit(dataset, epochs=1, steps_per_epoch=4, verbose=0)
  assert np.isfinite(history.history["loss"][-1])


@pytest.mark.slow
def test_images_of_several_sizes_need_image_size(tmp_path):
  rng = np.random.default_rng(1)
  for label, shape in enumerate([(40, 40, 3), (48, 40, 3)]):
    for i in range(3):
      save(str(tmp_path / "mixed" / f"c{label}" / f"{i}.jpg"),
           rng.integers(0, 256, shape, dtype=np.uint8), tf.io.encode_jpeg)
  out = tmp_path / "records"
  result = write(f"--source={tmp_path / 'mixed'}", f"--out_dir={out}",
                 "--test_every=3")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"error: {tmp_path / 'mixed' / 'c1' / '0.jpg'}: 48x40 pixels")
  assert "--image_size" in result.stderr and not out.exists()
  result = write(f"--source={tmp_path / 'mixed'}", f"--out_dir={out}",
                 "--test_every=3", "--image_size=36")
  assert result.returncode == 0, result.stderr
  assert json_lines(result.stdout)[-1]["features"] == [
      "images: image float32[36,36,3]"]
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  assert sum(len(y) for _, y in source.test_batches(4)) == 2


@pytest.mark.slow
def test_prepared_tfds_dataset_converts(tmp_path):
  data_dir = str(tmp_path / "tfds")
  prepared = run([sys.executable, os.path.join(HERE, "tiny_tfds.py"),
                  data_dir], timeout=300)
  assert prepared.returncode == 0, prepared.stderr[-2000:]
  out = str(tmp_path / "records")
  result = write("--source=tfds:tiny_digits", f"--tfds_data_dir={data_dir}",
                 f"--out_dir={out}", "--shards=2")
  assert result.returncode == 0, result.stderr
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  assert source.class_names == ["a", "b", "c"]
  assert (source.train_examples, source.test_examples) == (30, 9)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  original = tfds.builder("tiny_digits", data_dir=data_dir).as_dataset(
      split="test", as_supervised=True, batch_size=9)
  assert fingerprints(source.test_batches(4)) == fingerprints(
      (images.numpy() / 255.0, labels) for images, labels in original)
  # The same prepared files streamed, no conversion: every test example
  # once; two pipelines (one shard: by record) share each epoch's 30.
  stream = tfds_stream.open_tfds("tiny_digits", data_dir=data_dir)
  assert (stream.image_shape, stream.num_classes) == ((28, 28, 1), 3)
  assert fingerprints(stream.test_batches(4)) == fingerprints(
      source.test_batches(4))
  epoch = collections.Counter()
  for pipeline in (0, 1):
    batches = stream.train_dataset_fn(5, seed=0)(
        tf.distribute.InputContext(2, pipeline, 1)).take(3)
    epoch += fingerprints(batches)
  train = tfds.builder("tiny_digits", data_dir=data_dir).as_dataset(
      split="train", as_supervised=True, batch_size=30)
  assert epoch == fingerprints(
      (images.numpy() / 255.0, labels) for images, labels in train)
  missing = write("--source=tfds:tiny_digits", "--tfds_data_dir=" +
                  str(tmp_path / "nowhere"), f"--out_dir={tmp_path / 'x'}")
  assert missing.returncode == 2 and not (tmp_path / "x").exists()
  assert missing.stderr.strip().splitlines()[-1].startswith(
      "error: --source=tfds:tiny_digits")
