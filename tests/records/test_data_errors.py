"""Bad TFRecord input: one ``error:`` line naming the file or key, status 2.

Shards are written from real MNIST digits, copied per test and damaged:
truncated, stripped of their manifest, relabelled, or listed wrongly.
``python -m tfdist.data`` runs as a process where the process is what is
claimed (a good verify, one bad input's line and status); the other cases
run its ``main`` in this process, which imports TensorFlow anyway: no
TensorFlow start per case.
"""

import functools
import json
import os
import shutil
import sys

import pytest

from conftest import run
from test_data_files import main_here
from test_data_files import write as write_process

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tensorflow as tf  # pylint: disable=wrong-import-position

from tfdist import data as data_lib  # pylint: disable=wrong-import-position
from tfdist.data import features  # pylint: disable=wrong-import-position
from tfdist.data import records  # pylint: disable=wrong-import-position
from tfdist.data import sources  # pylint: disable=wrong-import-position
from tfdist.errors import ConfigError  # pylint: disable=wrong-import-position


@pytest.fixture
def in_process(capfd):
  return functools.partial(main_here, capfd)


@pytest.fixture(scope="module")
def shards(mnist_dir, tmp_path_factory):
  """60 MNIST digits as PNG folders, written to 2 + 2 shards."""
  root = tmp_path_factory.mktemp("errors")
  mnist = data_lib.load_mnist_idx(mnist_dir)
  for digit in range(10):
    for i, image in enumerate(mnist.test.images[mnist.test.labels == digit][:6]):
      os.makedirs(root / "digits" / str(digit), exist_ok=True)
      with open(root / "digits" / str(digit) / f"{i}.png", "wb") as f:
        f.write(tf.io.encode_png(image).numpy())
  result = write_process(f"--source={root / 'digits'}",
                         f"--out_dir={root / 'out'}", "--shards=2",
                         "--test_every=3")
  assert result.returncode == 0, result.stderr
  return root


@pytest.fixture
def copy(shards, tmp_path):
  shutil.copytree(shards / "out", tmp_path / "out")
  return tmp_path / "out"


def one_error(result) -> str:
  """The single error line of a failed run (status 2, no traceback)."""
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
  assert result.stderr.strip().splitlines()[-1] == errors[0]
  return errors[0]


def _verify_flags(directory, train="train-*", test="test-*"):
  return ("verify", f"--train_files={directory}/{train}",
          f"--test_files={directory}/{test}")


def verify_process(directory, *flags, **patterns):
  return run([sys.executable, "-m", "tfdist.data",
              *_verify_flags(directory, **patterns), *flags], timeout=180)


def edit_manifest(directory, change):
  path = os.path.join(directory, "manifest.json")
  manifest = json.load(open(path))
  change(manifest)
  with open(path, "w") as f:
    json.dump(manifest, f)


def truncate(path):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size - 100)


def test_the_shards_verify(shards):
  result = verify_process(shards / "out")
  assert result.returncode == 0, result.stderr
  assert '"train": {"files": 2, "examples": 40}' in result.stdout


def test_no_file_matches(copy):
  line = one_error(verify_process(copy, train="nothing-*.tfrecord"))
  assert line.startswith(f"error: --train_files={copy}/nothing-*.tfrecord: "
                         "no file matches")


def test_truncated_file_listed_in_a_manifest(copy, in_process):
  truncate(copy / "train-00001-of-00002.tfrecord")
  line = one_error(in_process(*_verify_flags(copy)))
  assert line.startswith(f"error: {copy}/train-00001-of-00002.tfrecord: ")
  assert "truncated" in line


def test_truncated_file_without_a_manifest(copy, in_process):
  os.remove(copy / "manifest.json")
  bad = str(copy / "train-00000-of-00002.tfrecord")
  truncate(bad)
  line = one_error(in_process(*_verify_flags(copy), "--num_classes=10"))
  assert line.startswith(f"error: {bad}: truncated or corrupt TFRecord")
  # The training pipeline reports it the same way, on its first read.
  spec = records.RecordSpec(
      features=(features.image_feature((28, 28, 1), key="image/encoded",
                                       encoding="png"),),
      label_key="image/class/label", num_classes=10)
  files = records.list_files(f"{copy}/train-*")
  dataset = records.train_dataset_fn(files, spec, global_batch_size=8,
                                     report=lambda _: None)(
                                         tf.distribute.InputContext())
  with pytest.raises(ConfigError, match=f"^{bad}: truncated"):
    with records.reading(files):
      for _ in dataset.take(100):
        pass


def test_record_without_the_feature_lists_its_keys(copy, in_process):
  # With a manifest, the manifest names the keys: a flag that disagrees.
  line = one_error(in_process(*_verify_flags(copy), "--image_key=image/png"))
  assert line == (
      f"error: --image_key=image/png: the manifest beside {copy}/train-"
      "00000-of-00002.tfrecord names the records' keys ('image/encoded'); "
      "drop the flag")
  # Without one, the flags name them: a key the records lack.
  os.remove(copy / "manifest.json")
  line = one_error(in_process(*_verify_flags(copy), "--num_classes=10",
                              "--image_key=image/png"))
  assert line == (
      f"error: {copy}/train-00000-of-00002.tfrecord: its records have no "
      "'image/png' for feature 'images' (they have image/class/label, "
      "image/encoded, image/format, image/height, image/width); name the "
      "right keys with --image_key/--label_key")


def test_label_outside_the_manifests_classes(copy, in_process):
  def five_classes(manifest):
    manifest["num_classes"] = 5
    manifest["class_names"] = manifest["class_names"][:5]
  edit_manifest(copy, five_classes)
  line = one_error(in_process(*_verify_flags(copy)))
  assert line.startswith(f"error: {copy}/train-0000")
  assert ": label 5 is outside the 5 classes of the manifest" in line


def test_manifest_missing_a_file(copy, in_process):
  os.remove(copy / "test-00001-of-00002.tfrecord")
  line = one_error(in_process(*_verify_flags(copy)))
  assert line.startswith(f"error: {copy}/manifest.json disagrees with the "
                         "test files: missing test-00001-of-00002.tfrecord")


def test_manifest_with_a_wrong_count(copy, in_process):
  def one_more(manifest):
    manifest["splits"]["train"]["examples"][0] += 1
  edit_manifest(copy, one_more)
  line = one_error(in_process(*_verify_flags(copy)))
  assert line == (f"error: {copy}/train-00000-of-00002.tfrecord: 20 records, "
                  f"{copy}/manifest.json says 21; rewrite the shards and "
                  "manifest together")


def test_open_files_reports_without_reading(copy):
  os.remove(copy / "manifest.json")
  with pytest.raises(ConfigError, match="pass --num_classes"):
    sources.open_files(f"{copy}/train-*", f"{copy}/test-*")


def test_converter_leaves_nothing_on_a_bad_image(shards, tmp_path, in_process):
  shutil.copytree(shards / "digits", tmp_path / "digits")
  bad = tmp_path / "digits" / "7" / "5.png"
  bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really")
  out = tmp_path / "out"
  line = one_error(in_process("write", f"--source={tmp_path / 'digits'}",
                              f"--out_dir={out}", "--shards=2"))
  assert line.startswith(f"error: {bad}: cannot decode it as an image")
  assert not out.exists()


def test_converter_keeps_an_existing_dataset(shards, in_process):
  before = sorted(os.listdir(shards / "out"))
  line = one_error(in_process("write", f"--source={shards / 'digits'}",
                              f"--out_dir={shards / 'out'}"))
  assert line.startswith(f"error: --out_dir={shards / 'out'} already holds")
  assert sorted(os.listdir(shards / "out")) == before
