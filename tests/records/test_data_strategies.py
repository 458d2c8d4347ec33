"""The trainers stream real MNIST from TFRecord shards under every strategy.

Real processes started by the real launcher, as the README shows, on the
bundled MNIST converted once to 4 PNG shards per split (conftest's
``mnist_records``); accuracy is measured on all 10,000 test images, read
from the test shards.
"""

import json
import os
import re

import pytest

from conftest import SPECS, json_lines, launch, run, trainer

MIN_ACCURACY = 0.90
# "[worker-1] tfdist: input pipeline 1 of 2 shards by file, ...; it reads 2
# files: a, b"
_READS = re.compile(r"^\[(worker-\d)\] tfdist: input pipeline \d+ of 2 "
                    r"shards by file.* it reads \d+ files: (.*)$", re.M)


def _file_flags(out):
  return ("--data=tfrecord", f"--train_files={out}/train-*",
          f"--test_files={out}/test-*")


def _train_files(out):
  with open(os.path.join(out, "manifest.json")) as f:
    return set(json.load(f)["splits"]["train"]["files"])


def _launched(out, spec, strategy):
  done = run(launch(os.path.join(SPECS, spec),
                    trainer("mnist", f"--strategy={strategy}", "--epochs=3",
                            *_file_flags(out))), timeout=440)
  assert done.returncode == 0, done.stdout[-4000:]
  return done


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_mirrored_from_shards(mnist_records):
  out, _, _ = mnist_records
  done = run(trainer("mnist", "--strategy=mirrored", "--epochs=3",
                     *_file_flags(out)), timeout=400)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json_lines(done.stdout)[-1]
  assert (result["num_replicas"], result["global_batch_size"]) == (2, 200)
  assert result["test_accuracy"] >= MIN_ACCURACY
  assert "data: mnist from 4 training and 4 test files, 24,345 training " \
         "and 10,000 test examples" in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_multiworker_workers_read_disjoint_files_covering_all(mnist_records):
  out, _, _ = mnist_records
  done = _launched(out, "two_workers.json", "multiworker")
  read = {worker: set(names.split(", "))
          for worker, names in _READS.findall(done.stdout)}
  assert set(read) == {"worker-0", "worker-1"}, done.stdout[-4000:]
  assert not read["worker-0"] & read["worker-1"]
  assert read["worker-0"] | read["worker-1"] == _train_files(out)
  results = [json_lines(done.stdout, f"[worker-{i}] ")[-1] for i in (0, 1)]
  for result in results:
    assert result["test_accuracy"] >= MIN_ACCURACY
  assert results[0]["weights_digest"] == results[1]["weights_digest"]


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_ps_chief_two_workers_one_ps_from_shards(mnist_records):
  out, _, _ = mnist_records
  done = _launched(out, "chief_two_workers_ps.json", "ps")
  (result,) = json_lines(done.stdout, "[chief-0] ")
  assert result["num_replicas"] == 2
  assert result["test_accuracy"] >= MIN_ACCURACY
  assert result["variable_devices"] == ["/job:ps/replica:0/task:0/device:CPU:0"]


@pytest.mark.timeout(120)
def test_no_file_matches_is_one_error_line(tmp_path):
  done = run(trainer("mnist", "--data=tfrecord",
                     f"--train_files={tmp_path}/train-*",
                     f"--test_files={tmp_path}/test-*"), timeout=100)
  assert done.returncode == 2
  errors = [l for l in done.stderr.splitlines() if l.startswith("error:")]
  assert errors == [f"error: --train_files={tmp_path}/train-*: no file "
                    f"matches {tmp_path}/train-*; check the path (python -m "
                    "tfdist.data write creates shards)"], done.stderr
  assert "Traceback" not in done.stderr and not done.stdout.strip()
  assert os.listdir(tmp_path) == []


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_evaluator_and_epoch_evaluations_read_every_test_record(
    mnist_records, tmp_path):
  out, _, _ = mnist_records
  done = run(launch(os.path.join(SPECS, "chief_two_workers_evaluator.json"),
                    trainer("mnist", "--strategy=multiworker", "--epochs=2",
                            "--steps_per_epoch=60", "--eval_every_epoch",
                            f"--model_dir={tmp_path / 'model'}",
                            *_file_flags(out))), timeout=440)
  assert done.returncode == 0, done.stdout[-4000:]
  (chief,) = json_lines(done.stdout, "[chief-0] ")
  (evaluation,) = json_lines(done.stdout, "[evaluator-0] ")
  assert evaluation["step"] == chief["global_step"] == 120
  # The same weights and all 10,000 test records, read from the shards by
  # the evaluator task, the chief's epoch monitor and its final figure.
  assert evaluation["test_accuracy"] == chief["test_accuracy"]
  assert chief["accuracy_curve"][-1][-1] == chief["test_accuracy"]
  assert chief["test_accuracy"] >= 0.85
