"""Every bad input a new user can make gets one `error:` line and exit 2.

These run the real trainer entry point as a user would; most fail before
TensorFlow is imported, so they cost about a second each.
"""

import gzip
import json
import os
import shutil
import sys

import pytest

from conftest import REPO, child_env, json_lines, run, trainer
from tfdist import data


def _fails_with(done, message):
  lines = [l for l in done.stderr.splitlines() if l.strip()]
  assert done.returncode == 2, done.stderr[-2000:]
  assert "Traceback" not in done.stderr, done.stderr[-2000:]
  assert lines and lines[-1].startswith("error: "), done.stderr[-2000:]
  assert message in lines[-1], lines[-1]
  assert not [l for l in done.stdout.splitlines() if l.startswith("{")]


def _tf_config(cluster, task_type="worker", index=0):
  return json.dumps({"cluster": cluster, "task": {"type": task_type,
                                                  "index": index}})


@pytest.mark.parametrize("tf_config,strategy,message", [
    ("{oops", "multiworker", "TF_CONFIG is not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "multiworker",
     'TF_CONFIG has no "cluster"'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "multiworker",
     'TF_CONFIG has no "task"'),
    (_tf_config({"worker": ["127.0.0.1:1"]}, "ps"), "multiworker",
     "task type 'ps' is not in the cluster"),
    (_tf_config({"worker": ["127.0.0.1:1"]}, "worker", 3), "multiworker",
     "worker index 3 is out of range"),
    (_tf_config({"chief": ["127.0.0.1:1", "127.0.0.1:2"]}, "chief"),
     "multiworker", "at most one chief"),
    (_tf_config({"worker": ["127.0.0.1"]}), "multiworker", "has no port"),
    (_tf_config({"worker": ["127.0.0.1:5", "127.0.0.1:5"]}), "multiworker",
     "both use 127.0.0.1:5"),
    (_tf_config({"worker": ["127.0.0.1:5"], "ps": ["127.0.0.1:6"]}), "ps",
     "the cluster has no chief"),
    (_tf_config({"chief": ["127.0.0.1:5"], "worker": ["127.0.0.1:6"]},
                "chief"), "ps", "the cluster has no ps"),
    (_tf_config({"worker": ["127.0.0.1:5", "127.0.0.1:6"]}), "mirrored",
     "--strategy=mirrored trains on one machine"),
])
def test_bad_tf_config(tf_config, strategy, message, mnist_dir):
  done = run(trainer("mnist", f"--strategy={strategy}",
                     f"--mnist_dir={mnist_dir}"),
             env=child_env(TF_CONFIG=tf_config), timeout=60)
  _fails_with(done, message)


def test_unknown_strategy(mnist_dir):
  done = run(trainer("mnist", "--strategy=horovod", f"--mnist_dir={mnist_dir}"),
             timeout=60)
  _fails_with(done, "--strategy='horovod': use one of mirrored, multiworker, ps")


def test_keras_3_is_refused_with_the_fix(mnist_dir):
  done = run(trainer("mnist", "--strategy=ps", f"--mnist_dir={mnist_dir}"),
             env=child_env(TF_USE_LEGACY_KERAS="0"), timeout=120)
  _fails_with(done, "--strategy=ps needs tf-keras (Keras 2), but tf.keras is "
              "Keras 3")
  assert "TF_USE_LEGACY_KERAS=1" in done.stderr


def _copy_mnist(mnist_dir, tmp_path):
  target = tmp_path / "mnist"
  shutil.copytree(mnist_dir, target, ignore=shutil.ignore_patterns("*.md"))
  return target


def test_mnist_dir_missing(tmp_path):
  done = run(trainer("mnist", f"--mnist_dir={tmp_path / 'nope'}"), timeout=60)
  _fails_with(done, "is not a directory")


def test_mnist_dir_missing_a_file(mnist_dir, tmp_path):
  target = _copy_mnist(mnist_dir, tmp_path)
  os.remove(target / "t10k-labels-idx1-ubyte.gz")
  done = run(trainer("mnist", f"--mnist_dir={target}"), timeout=60)
  _fails_with(done, "t10k-labels-idx1-ubyte.gz is missing")


@pytest.mark.parametrize("header,message", [
    (b"\x00\x00\x08\x01\x00\x00\x27\x10", "magic 2049, expected 2051"),
    (b"\x00\x00\x08", "corrupt IDX header"),
])
def test_mnist_file_with_corrupt_header(mnist_dir, tmp_path, header, message):
  target = _copy_mnist(mnist_dir, tmp_path)
  path = target / "t10k-images-idx3-ubyte.gz"
  with gzip.open(path, "rb") as f:
    data = f.read()
  with gzip.open(path, "wb") as f:
    f.write(header + data[len(header):] if len(header) >= 8 else header)
  done = run(trainer("mnist", f"--mnist_dir={target}"), timeout=60)
  _fails_with(done, message)


def test_truncated_mnist_file(mnist_dir, tmp_path):
  target = _copy_mnist(mnist_dir, tmp_path)
  path = target / "train-labels-idx1-ubyte.gz"
  with gzip.open(path, "rb") as f:
    data = f.read()
  with gzip.open(path, "wb") as f:
    f.write(data[:-100])
  done = run(trainer("mnist", f"--mnist_dir={target}"), timeout=60)
  _fails_with(done, "the header announces 24345 bytes of data but the file "
              "holds 24245")


def test_model_dir_not_writable(mnist_dir, tmp_path):
  # A path below a regular file: unwritable even for root, which ignores
  # permission bits.
  blocker = tmp_path / "a_file"
  blocker.write_text("keep me")
  done = run(trainer("mnist", f"--mnist_dir={mnist_dir}",
                     f"--model_dir={blocker}/model"), timeout=60)
  _fails_with(done, f"--model_dir={blocker}/model is not writable")
  assert blocker.read_text() == "keep me"


@pytest.mark.parametrize("flag,message", [
    ("--batch_size=0", "--batch_size=0: must be at least 1"),
    ("--checkpoint_every_steps=-1", "--checkpoint_every_steps=-1: must be 0"),
    ("--keep_checkpoints=0", "--keep_checkpoints=0: must be at least 1"),
    ("--preemption_check_steps=0",
     "--preemption_check_steps=0: must be at least 1"),
    ("--model_dir=", "--model_dir='': name a directory"),
    ("--export_dir=", "--export_dir='': name a directory"),
])
def test_bad_flag_value(flag, message, mnist_dir):
  done = run(trainer("mnist", f"--mnist_dir={mnist_dir}", flag), timeout=60)
  _fails_with(done, message)


# --- Where the data comes from ----------------------------------------------


def _no_tfds(tmp_path):
  """A child environment whose TFDS data dir is empty."""
  return child_env(TFDS_DATA_DIR=tmp_path / "tfds")


def test_default_data_is_the_bundled_sample(tmp_path):
  done = run(trainer("mnist", "--epochs=1", "--steps_per_epoch=20"),
             env=_no_tfds(tmp_path), timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert ("tfdist: data: the MNIST sample bundled with tfdist, 24,345 "
          "training and 10,000 test examples") in done.stderr
  [result] = json_lines(done.stdout)
  assert result["steps"] == 20


def test_mnist_dir_given_is_used(mnist_dir, tmp_path):
  target = _copy_mnist(mnist_dir, tmp_path)
  done = run(trainer("mnist", f"--mnist_dir={target}", "--epochs=1",
                     "--steps_per_epoch=20"), env=_no_tfds(tmp_path),
             timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert f"tfdist: data: MNIST from {target}, 24,345 training" in done.stderr


def test_tfds_copy_on_disk_comes_before_the_bundled_sample(tmp_path):
  # Resolution only looks at files: a prepared TFDS dataset directory.
  assert data.resolve_source(tfds_data_dir=str(tmp_path)).mnist_dir == (
      data.BUNDLED_MNIST_DIR)
  prepared = tmp_path / "mnist" / "3.0.1"
  prepared.mkdir(parents=True)
  (prepared / "dataset_info.json").write_text("{}")
  source = data.resolve_source(tfds_data_dir=str(tmp_path))
  assert (source.kind, source.tfds_data_dir) == ("tfds", str(tmp_path))
  # --mnist_dir first, and --data=synthetic whatever is on disk.
  assert data.resolve_source(mnist_dir="d", tfds_data_dir=str(tmp_path)) == (
      data.Source("idx", mnist_dir="d"))
  assert data.resolve_source("synthetic").kind == "synthetic"


@pytest.mark.parametrize("module,flags,name", [
    ("mnist", ("--data=tfds",), "mnist"),
    ("inception", ("--dataset=cifar10", "--width=0.125"), "cifar10"),
])
def test_tfds_download_without_network_fails_at_once(tmp_path, module, flags,
                                                     name):
  # tests/offline.py runs the trainer with every connection beyond loopback
  # failing, as on a machine without network, whatever this one has.
  done = run([sys.executable, os.path.join(REPO, "tests", "offline.py"),
              f"trainers.{module}", *flags], env=_no_tfds(tmp_path),
             timeout=60)
  host = data.TFDS_DATASETS[name].download_host
  _fails_with(done, f"tensorflow-datasets could not load {name!r} "
              f"(ConnectionError: cannot reach {host}:443")
  assert ("without network use --mnist_dir=DIR, --data=tfrecord or "
          "--data=synthetic") in done.stderr
  assert "Retrying" not in done.stderr
