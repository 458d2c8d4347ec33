"""The converter's other sources: image folders (PNG, JPEG) and TFDS.

Each converts through ``python -m tfdist.data``'s main in this process,
which imports TensorFlow anyway (the folder checks through
tfdist.data.convert); the shards are then read back through the training
and evaluation pipelines and compared pixel for pixel with the source
images. A folder that cannot mean its classes (one class, an empty class
folder, two test folders) is one line before TensorFlow, in a real process.
"""

import collections
import dataclasses
import json
import os
import re
import sys

import numpy as np
import pytest

from conftest import REPO, json_lines, run
from test_data_files import fingerprints, main_here, write

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tensorflow as tf  # pylint: disable=wrong-import-position

from tfdist import data as data_lib  # pylint: disable=wrong-import-position
from tfdist.data import convert  # pylint: disable=wrong-import-position
from tfdist.data import sources  # pylint: disable=wrong-import-position
from tfdist.data import tfds_stream  # pylint: disable=wrong-import-position
from tfdist.errors import ConfigError  # pylint: disable=wrong-import-position
from tfdist.model import models  # pylint: disable=wrong-import-position

HERE = os.path.join(REPO, "tests")  # the suite's helper programs


def save(path, image, encode):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(encode(image).numpy())


def expected(batches):
  return fingerprints([(np.stack(images) / 255.0, labels)
                       for images, labels in batches])


def test_png_folder_converts_and_reads(mnist_dir, tmp_path, capfd):
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
  result = main_here(capfd, "write", f"--source={tmp_path / 'digits'}",
                     f"--out_dir={out}", "--shards=2", "--test_every=5")
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
def test_jpeg_folder_converts_and_reads_at_another_size(tmp_path, capfd):
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
  result = main_here(capfd, "write", f"--source={tmp_path / 'jpegs'}",
                     f"--out_dir={out}", "--shards=3")
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
def test_images_of_several_sizes_need_image_size(tmp_path, capfd):
  rng = np.random.default_rng(1)
  for label, shape in enumerate([(40, 40, 3), (48, 40, 3)]):
    for i in range(3):
      save(str(tmp_path / "mixed" / f"c{label}" / f"{i}.jpg"),
           rng.integers(0, 256, shape, dtype=np.uint8), tf.io.encode_jpeg)
  out = tmp_path / "records"
  result = main_here(capfd, "write", f"--source={tmp_path / 'mixed'}",
                     f"--out_dir={out}", "--test_every=3")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"error: {tmp_path / 'mixed' / 'c1' / '0.jpg'}: 48x40 pixels")
  assert "--image_size" in result.stderr and not out.exists()
  result = main_here(capfd, "write", f"--source={tmp_path / 'mixed'}",
                     f"--out_dir={out}", "--test_every=3", "--image_size=36")
  assert result.returncode == 0, result.stderr
  assert json_lines(result.stdout)[-1]["features"] == [
      "images: image float32[36,36,3]"]
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  assert sum(len(y) for _, y in source.test_batches(4)) == 2


@pytest.mark.slow
def test_prepared_tfds_dataset_converts(tmp_path, capfd):
  data_dir = str(tmp_path / "tfds")
  prepared = run([sys.executable, os.path.join(HERE, "tiny_tfds.py"),
                  data_dir], timeout=300)
  assert prepared.returncode == 0, prepared.stderr[-2000:]
  out = str(tmp_path / "records")
  result = main_here(capfd, "write", "--source=tfds:tiny_digits",
                     f"--tfds_data_dir={data_dir}", f"--out_dir={out}",
                     "--shards=2")
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
  missing = main_here(capfd, "write", "--source=tfds:tiny_digits",
                      f"--tfds_data_dir={tmp_path / 'nowhere'}",
                      f"--out_dir={tmp_path / 'x'}")
  assert missing.returncode == 2 and not (tmp_path / "x").exists()
  assert missing.stderr.strip().splitlines()[-1].startswith(
      "error: --source=tfds:tiny_digits")


def _digits(root, layout, mnist_dir):
  """Real MNIST test digits as PNG files: ``layout`` maps a class folder
  (a path under ``root``) to its number of images (0: an empty folder)."""
  mnist = data_lib.load_mnist_idx(mnist_dir)
  for i, (folder, count) in enumerate(layout.items()):
    os.makedirs(root / folder, exist_ok=True)
    for j, image in enumerate(mnist.test.images[mnist.test.labels == i][:count]):
      save(str(root / folder / f"{j}.png"), image, tf.io.encode_png)


@pytest.mark.parametrize("layout, message", [
    ({"seven": 3}, "one class folder, 'seven'; a classifier needs two or more"),
    ({"seven": 3, "eight": 0}, "class folder 'eight' holds no "
     ".png/.jpg/.jpeg image; add its images or remove the folder"),
    ({"train/a": 2, "train/b": 2, "test/a": 1, "test/b": 1, "val/a": 1,
      "val/b": 1}, "test/ and val/: keep one test folder"),
    ({"train/a": 2, "train/b": 2}, "train/ and no test/ (or val/, "
     "validation/)"),
])
def test_a_folder_that_cannot_mean_its_classes_is_one_line(
    layout, message, mnist_dir, tmp_path):
  _digits(tmp_path / "digits", layout, mnist_dir)
  with pytest.raises(ConfigError, match=re.escape(message)):
    convert.folder_source(str(tmp_path / "digits"), report=print)


def test_an_empty_class_folder_fails_before_tensorflow(mnist_dir, tmp_path):
  _digits(tmp_path / "digits", {"seven": 3, "eight": 0}, mnist_dir)
  out = tmp_path / "records"
  result = write(f"--source={tmp_path / 'digits'}", f"--out_dir={out}")
  assert result.returncode == 2 and not out.exists()
  # One line and nothing else: TensorFlow, which logs as it starts, never
  # started.
  assert result.stderr.strip().splitlines() == [
      f"error: --source={tmp_path / 'digits'}: class folder 'eight' holds no "
      ".png/.jpg/.jpeg image; add its images or remove the folder (it would "
      "still be a class)"]


def test_hidden_and_other_files_are_left_out_and_said(mnist_dir, tmp_path):
  root = tmp_path / "digits"
  _digits(root, {"a": 3, "b": 3, ".ipynb_checkpoints": 0}, mnist_dir)
  (root / "a" / "notes.txt").write_text("not an image")
  (root / "b" / ".DS_Store").write_bytes(b"\0")
  said = []
  source = convert.folder_source(str(root), test_every=3, report=said.append)
  assert source.class_names == ["a", "b"]
  assert {s: count for s, (count, _) in source.splits.items()} == {
      "train": 4, "test": 2}
  assert said == [f"1 files in the class folders of {root} are not "
                  f".png/.jpg/.jpeg images and are left out (first: "
                  f"{root / 'a' / 'notes.txt'})"]


def test_grayscale_and_colour_read_as_rgb_and_said(mnist_dir, tmp_path):
  mnist = data_lib.load_mnist_idx(mnist_dir)
  root = tmp_path / "digits"
  gray = mnist.test.images[:4]
  # Class "a": grayscale; class "b": the same digits in colour (RGB).
  colour = np.concatenate([gray, gray // 2, 255 - gray], axis=-1)
  for i in range(4):
    save(str(root / "a" / f"{i}.png"), gray[i], tf.io.encode_png)
    save(str(root / "b" / f"{i}.png"), colour[i], tf.io.encode_png)
  said = []
  manifest = convert.write(convert.folder_source(str(root), test_every=2),
                           out_dir=str(tmp_path / "out"), num_shards=1,
                           report=said.append)
  assert manifest.features[0].shape == (28, 28, 3)
  assert said[-1] == ("the images mix channels (4 grayscale, 4 RGB): every "
                      "image is read with 3 (grayscale repeated in the three "
                      "colour channels, an alpha channel dropped); predict "
                      "reads images so too")
  source = sources.open_files(f"{tmp_path}/out/train-*",
                              f"{tmp_path}/out/test-*")
  test = [(np.repeat(gray[i], 3, axis=-1), 0) for i in (1, 3)] + [
      (colour[i], 1) for i in (1, 3)]
  assert fingerprints(source.test_batches(4)) == expected(
      [([image for image, _ in test], [label for _, label in test])])
