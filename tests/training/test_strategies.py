"""Softmax regression trains on real MNIST under all three strategies.

Real TensorFlow processes talking gRPC over loopback, started by the real
launcher exactly as the README shows; accuracy is measured on the real
10,000-image MNIST test split. The runs are conftest's, shared with the
fused-step and export tests, which assert other things about them.
"""

import os

import pytest

from conftest import json_lines, run, trainer

MIN_ACCURACY = 0.90


def _only_tfdist_leftovers(tmp):
  return sorted(n for n in os.listdir(tmp) if n.startswith("tfdist"))


@pytest.mark.timeout(240)
def test_mirrored_two_logical_cpus(mirrored_run):
  result, model_dir = mirrored_run
  assert result["strategy"] == "mirrored"
  assert result["num_replicas"] == 2
  assert result["global_batch_size"] == 200
  assert result["test_accuracy"] >= MIN_ACCURACY
  assert (model_dir / "result.json").exists()
  assert (model_dir / "final").is_dir()


@pytest.mark.timeout(300)
def test_multiworker_two_processes_end_identical(multiworker_launched):
  stdout = multiworker_launched["stdout"]
  results = {r["task"]: r for r in
             json_lines(stdout, "[worker-0] ") +
             json_lines(stdout, "[worker-1] ")}
  assert set(results) == {"worker-0", "worker-1"}
  for result in results.values():
    assert result["num_replicas"] == 2
    assert result["global_batch_size"] == 200
    assert result["test_accuracy"] >= MIN_ACCURACY
  # Synchronous all-reduce: both replicas hold bit-identical weights.
  assert results["worker-0"]["weights_digest"] == \
      results["worker-1"]["weights_digest"]
  # Only the chief (worker 0) wrote model_dir (with its checkpoints/ and
  # any logs/); worker 1's temp dir is gone.
  assert {"checkpoints", "final", "result.json"} <= set(
      os.listdir(multiworker_launched["model_dir"]))
  assert _only_tfdist_leftovers(multiworker_launched["tmp"]) == []


@pytest.mark.timeout(300)
def test_ps_chief_two_workers_one_ps(ps_launched):
  stdout = ps_launched["stdout"]
  (result,) = json_lines(stdout, "[chief-0] ")
  assert result["strategy"] == "ps"
  assert result["num_replicas"] == 2
  assert result["test_accuracy"] >= MIN_ACCURACY
  # The variables live on the ps task, not on the chief or the workers.
  assert result["variable_devices"] == ["/job:ps/replica:0/task:0/device:CPU:0"]
  # Workers and ps ended on their own, told by the chief (exit 0), not
  # stopped by the launcher.
  for task in ("worker-0", "worker-1", "ps-0"):
    assert f"[{task}] tfdist: {task}: chief-0 finished training; exiting" in \
        stdout
  assert "stopping" not in stdout
  assert not [l for l in stdout.splitlines()
              if l.startswith(("[worker-", "[ps-")) and l.rstrip().endswith("}")]
  assert _only_tfdist_leftovers(ps_launched["tmp"]) == []


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_ps_without_tf_config_trains_in_process(mnist_dir):
  # Three epochs, as every other ps accuracy test: asynchronous updates make
  # two epochs end anywhere in 0.898-0.92 (a CI run saw 0.8983).
  done = run(trainer("mnist", "--strategy=ps", "--epochs=3",
                     f"--mnist_dir={mnist_dir}"), timeout=180)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "no TF_CONFIG: --strategy=ps runs an in-process cluster" in done.stderr
  result = json_lines(done.stdout)[-1]
  assert result["num_replicas"] == 2
  assert result["variable_devices"] == ["/job:ps/replica:0/task:0/device:CPU:0"]
  assert result["test_accuracy"] >= MIN_ACCURACY


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_multiworker_without_tf_config_says_single_worker():
  done = run(trainer("mnist", "--strategy=multiworker", "--data=synthetic",
                     "--epochs=1", "--steps_per_epoch=5"), timeout=180)
  assert done.returncode == 0, done.stderr[-3000:]
  assert ("no TF_CONFIG: --strategy=multiworker runs as a single-worker "
          "cluster") in done.stderr
  assert json_lines(done.stdout)[-1]["num_replicas"] == 1
