"""TFRecord input: real MNIST converted to shards, read as the trainers will.

The converter runs as a process for the shared shards (conftest's
mnist_records: its JSON line, its files), through its main in this process
for the raw ones (main_here: no TensorFlow start per case); the pipelines
run in this process with simulated input contexts, one per worker, and the
tests compare what each pipeline actually read with the files' contents.
"""

import collections
import importlib
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from conftest import run

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tensorflow as tf  # pylint: disable=wrong-import-position

from tfdist import cli  # pylint: disable=wrong-import-position
from tfdist import data as data_lib  # pylint: disable=wrong-import-position
from tfdist.data import records  # pylint: disable=wrong-import-position
from tfdist.data import sources  # pylint: disable=wrong-import-position
from tfdist.errors import ConfigError  # pylint: disable=wrong-import-position
from tfdist.model import models  # pylint: disable=wrong-import-position
from tfdist.training import measurement  # pylint: disable=wrong-import-position


with mock.patch.dict(os.environ):  # its environment defaults stay its own
  _DATA_MAIN = importlib.import_module("tfdist.data.__main__")


def main_here(capfd, *argv) -> subprocess.CompletedProcess:
  """``python -m tfdist.data ARGV`` run in this process, which imports
  TensorFlow anyway (no TensorFlow start per case), as its process would
  (tfdist.cli.run: an error is one line and a status); ``capfd`` holds its
  output."""
  capfd.readouterr()
  with mock.patch.dict(os.environ):
    status = cli.run(lambda: _DATA_MAIN.main(list(argv)))
  out, err = capfd.readouterr()
  return subprocess.CompletedProcess(argv, status, out, err)


def write(*flags, timeout=180):
  return run([sys.executable, "-m", "tfdist.data", "write", *flags],
             timeout=timeout)


def verify(train_files, test_files, *flags):
  return run([sys.executable, "-m", "tfdist.data", "verify",
              f"--train_files={train_files}", f"--test_files={test_files}",
              *flags], timeout=180)


def fingerprints(batches):
  """A multiset of (image bytes, label) of float batches (their inputs a
  dict, or the images alone)."""
  seen = collections.Counter()
  for images, labels in batches:
    if isinstance(images, dict):
      images = images["images"]
    pixels = np.round(np.asarray(images) * 255).astype(np.uint8)
    for image, label in zip(pixels, np.asarray(labels)):
      seen[(image.tobytes(), int(label))] += 1
  return seen


def first_epoch(dataset, examples: int):
  """The first ``examples`` examples of a batched dataset, as one batch."""
  images, labels, count = [], [], 0
  for x, y in dataset:
    images.append(x["images"].numpy())
    labels.append(y.numpy())
    count += len(y)
    if count >= examples:
      break
  return [(np.concatenate(images)[:examples],
           np.concatenate(labels)[:examples])]


def read_pipelines(fn, num_pipelines: int, examples_of):
  """What each simulated worker read in its first epoch, and its log line."""
  read, lines = [], []
  for i in range(num_pipelines):
    context = tf.distribute.InputContext(
        num_input_pipelines=num_pipelines, input_pipeline_id=i,
        num_replicas_in_sync=num_pipelines)
    dataset = fn(lambda line: lines.append(line))(context)
    read.append(fingerprints(first_epoch(dataset, examples_of(lines[-1], i))))
  return read, lines


def listed_files(line: str, directory: str):
  return [os.path.join(directory, name)
          for name in line.split(": ", 1)[1].split(", ")]


def test_mnist_converts_to_shards_with_a_manifest(mnist_dir, mnist_records):
  out, printed, log = mnist_records
  mnist = data_lib.load_mnist_idx(mnist_dir)
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  assert printed["counts"] == {"train": len(mnist.train),
                               "test": len(mnist.test)}
  assert manifest["counts"] == printed["counts"]
  assert manifest["features"] == [{
      "name": "images", "kind": "image", "shape": [28, 28, 1],
      "key": "image/encoded", "encoding": "png"}]
  assert manifest["label_key"] == "image/class/label"
  assert manifest["num_classes"] == 10
  for split, split_files in manifest["splits"].items():
    assert len(split_files["files"]) == 4
    for name, count in zip(split_files["files"], split_files["examples"]):
      path = os.path.join(out, name)
      assert sum(1 for _ in tf.data.TFRecordDataset(path)) == count
  assert not [f for f in os.listdir(out) if "partial" in f]
  assert "write train: 5000/" in log  # progress lines
  assert not [l for l in log.splitlines() if l.startswith("error:")]


@pytest.mark.parametrize("num_pipelines", [2, 3])
def test_file_sharding_reads_disjoint_files_covering_all(mnist_records,
                                                         num_pipelines):
  out, _, _ = mnist_records
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  counts = dict(zip(manifest["splits"]["train"]["files"],
                    manifest["splits"]["train"]["examples"]))
  read, lines = read_pipelines(
      lambda report: source.train_dataset_fn(
          10 * num_pipelines, seed=3, report=report),
      num_pipelines,
      lambda line, _: sum(counts[os.path.basename(f)]
                          for f in listed_files(line, out)))
  assert all("shards by file" in line for line in lines), lines
  reported = [listed_files(line, out) for line in lines]
  flat = [f for files in reported for f in files]
  assert len(flat) == len(set(flat)) and sorted(flat) == source.train_files
  # What each pipeline read in one epoch is exactly the files it reported.
  for files, got in zip(reported, read):
    expected = fingerprints(records.test_dataset(files, source.spec,
                                                 batch_size=1000))
    assert got == expected


def test_fewer_files_than_pipelines_shards_by_record(mnist_records):
  out, _, _ = mnist_records
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  two = source.test_files[:2]
  total = sum(1 for _ in tf.data.TFRecordDataset(two))
  read, lines = read_pipelines(
      lambda report: records.train_dataset_fn(
          two, source.spec, global_batch_size=30, seed=5, report=report),
      3, lambda _, i: len(range(i, total, 3)))
  assert all("shards by record" in line and "2 files are fewer than 3 "
             "pipelines" in line for line in lines), lines
  together = sum(read, collections.Counter())
  # Every example of the two files exactly once over the three pipelines.
  assert together == fingerprints(records.test_dataset(two, source.spec,
                                                       batch_size=1000))
  assert sum(together.values()) == total


def test_test_batches_hold_every_test_example_once(mnist_dir, mnist_records):
  out, _, _ = mnist_records
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  mnist = data_lib.load_mnist_idx(mnist_dir)
  sizes, labels = [], []
  for inputs, batch_labels in source.test_batches(999):
    assert list(inputs) == ["images"] and inputs["images"].dtype == tf.float32
    sizes.append(len(batch_labels))
    labels.extend(batch_labels.numpy())
  assert sum(sizes) == source.test_examples == len(mnist.test)
  assert sizes[-1] == len(mnist.test) % 999  # the short last batch is kept
  assert np.array_equal(np.bincount(labels), np.bincount(mnist.test.labels))
  assert fingerprints(source.test_batches(1000)) == fingerprints(
      sources.split_batches(mnist.test, 1000))


def test_softmax_trains_from_the_shards(mnist_records):
  out, _, _ = mnist_records
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  tf.keras.utils.set_random_seed(0)
  strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
  with strategy.scope():
    model = models.softmax_regression(source.features, source.num_classes)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.5),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
  batch = 100
  # As the trainers feed the in-memory path: a DatasetCreator of dataset_fn.
  data = tf.keras.utils.experimental.DatasetCreator(
      source.train_dataset_fn(batch, seed=0))
  with source.reading():
    model.fit(data, epochs=2, steps_per_epoch=source.train_examples // batch,
              verbose=0)
  accuracy = measurement.accuracy(model, source.test_batches(1000))
  assert accuracy >= 0.88, accuracy


def test_raw_pixels_read_as_the_in_memory_split(mnist_dir, tmp_path, capfd):
  out = str(tmp_path / "raw")
  result = main_here(capfd, "write", f"--source={mnist_dir}",
                     f"--out_dir={out}", "--shards=4", "--encoding=raw")
  assert result.returncode == 0, result.stderr
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  assert source.spec.features[0].encoding == "raw"
  mnist = data_lib.load_mnist_idx(mnist_dir)
  assert fingerprints(source.test_batches(999)) == fingerprints(
      sources.split_batches(mnist.test, 1000))
  inputs, labels = next(iter(source.train_dataset_fn(64, seed=0)(
      tf.distribute.InputContext())))
  assert inputs["images"].shape == (64, 28, 28, 1) and labels.shape == (64,)
  # Raw batches are checked as a whole: a label past the classes names its
  # file.
  manifest_path = os.path.join(out, "manifest.json")
  manifest = json.load(open(manifest_path))
  manifest["num_classes"], manifest["class_names"] = 5, list("01234")
  with open(manifest_path, "w") as f:
    json.dump(manifest, f)
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  with pytest.raises(ConfigError, match=f"^{out}/test-0000[0-3]-of-00004"
                     r".tfrecord: label [5-9] is outside the 5 classes"):
    for _ in source.test_batches(999):
      pass
