"""The fused step trains exactly like Keras' step, with one collective.

Real TensorFlow processes on real MNIST: the trainer (``trainers.mnist``)
with --fused_step on and off, and with --accumulate_steps; and (python -m
tfdist.bench.fused_step_compare trains softmax regression with Keras' step
and with the fused step from the same seed and data order, and prints both
results); multiworker runs two processes over loopback gRPC through the real
launcher.
"""

import sys

import pytest

from conftest import SPECS, json_lines, launch, run, train_mirrored, trainer
from tfdist.errors import ConfigError
from tfdist.training import fused_step

# Softmax regression on MNIST: 784 x 10 weights and 10 biases, plus the
# metric states the fused step sends with them: the loss's and the
# accuracy's (a total and a count each).
PARAMS = 28 * 28 * 10 + 10
METRIC_SUMS = 4
# With --metrics=extra: also top-3 accuracy, a metric function and a
# weighted accuracy (a total and a count each), and a count of the
# examples seen (a total).
EXTRA_METRIC_SUMS = METRIC_SUMS + 7
# Float32 sums in another order: a few ulps after tens of steps.
WEIGHT_TOLERANCE = 1e-5
STEPS, EPOCHS = 10, 2


def compare(*flags):
  return [sys.executable, "-m", "tfdist.bench.fused_step_compare",
          f"--steps={STEPS}", f"--epochs={EPOCHS}", *flags]


def compare_result(mnist_dir, *flags) -> dict:
  """Runs tfdist.bench.fused_step_compare in one process; returns its
  result."""
  done = run(compare(f"--mnist_dir={mnist_dir}", *flags), timeout=100)
  assert done.returncode == 0, done.stderr[-3000:]
  return json_lines(done.stdout)[-1]


def _check_same_training(result):
  """Same weights, same global loss and accuracy, same number of updates."""
  assert result["max_weight_difference"] < WEIGHT_TOLERANCE
  assert result["max_loss_difference"] < WEIGHT_TOLERANCE
  assert result["max_accuracy_difference"] < WEIGHT_TOLERANCE
  assert result["fused"]["global_step"] == STEPS * EPOCHS
  assert result["standard"]["global_step"] == STEPS * EPOCHS
  # The fused model's checkpoint is the plain model's: same keys, restores.
  assert result["checkpoint_keys_equal"]
  assert result["fused_checkpoint_restores"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_mirrored_two_devices_one_collective(mnist_dir):
  # Every metric Keras' step logs, sample-weighted examples too: reduced
  # in the same one all-reduce, to the values Keras' own step logs.
  result = compare_result(mnist_dir, "--strategy=mirrored", "--metrics=extra",
                          "--sample_weights")
  assert result["num_replicas"] == 2
  _check_same_training(result)
  assert result["metric_names"] == ["accuracy", "examples_seen",
                                    "mean_top_score", "top3",
                                    "weighted_accuracy"]
  assert result["max_metric_difference"] < WEIGHT_TOLERANCE
  # A count over both replicas, not a ratio: 200 examples per step.
  assert result["fused"]["metrics"]["examples_seen"] == [STEPS * 200] * EPOCHS
  assert result["fused"]["collectives_per_replica"] == 1
  assert result["fused"]["all_reduce_bytes"] == (
      PARAMS + EXTRA_METRIC_SUMS) * 4
  print("mirrored collectives per replica step: standard",
        result["standard"]["collectives_per_replica"], "fused",
        result["fused"]["collectives_per_replica"])


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_multiworker_two_processes_identical_replicas(mnist_dir):
  done = run(launch(f"{SPECS}/two_workers.json",
                    compare("--strategy=multiworker",
                            f"--mnist_dir={mnist_dir}")), timeout=130)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  results = [json_lines(done.stdout, prefix=f"[worker-{i}] ")[-1]
             for i in range(2)]
  for result in results:
    assert result["num_replicas"] == 2
    _check_same_training(result)
    assert result["fused"]["collectives_per_replica"] == 1
  # Bit-identical replicas: both workers end with the same weights.
  assert (results[0]["fused"]["weights_digest"]
          == results[1]["fused"]["weights_digest"])
  # Keras' own step launches more (gradients, metric reads).
  assert results[0]["standard"]["collectives_per_replica"] > 1
  print("multiworker collectives per replica step: standard",
        results[0]["standard"]["collectives_per_replica"], "fused",
        results[0]["fused"]["collectives_per_replica"])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_accumulation_equals_one_step_at_four_times_the_batch(mnist_dir):
  # Fused: 4 micro-batches of 25 per replica per update; Keras: one batch
  # of 100 per replica. Same examples per update, same order.
  result = compare_result(mnist_dir, "--strategy=mirrored",
                          "--batch_size=25", "--accumulate_steps=4")
  _check_same_training(result)
  assert result["fused"]["collectives_per_replica"] == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_default_strategy_one_replica_no_collective(mnist_dir):
  result = compare_result(mnist_dir, "--strategy=default",
                          "--batch_size=50", "--accumulate_steps=2")
  assert result["num_replicas"] == 1
  _check_same_training(result)
  assert result["fused"]["collectives_per_replica"] == 0
  assert result["fused"]["all_reduce_bytes"] == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_float16_wire_with_loss_scaling(mnist_dir):
  # Gradients in float16, the metric sums in an exact float32 tail: two
  # collectives; a LossScaleOptimizer scales and unscales around them.
  result = compare_result(mnist_dir, "--strategy=mirrored",
                          "--all_reduce_dtype=float16", "--loss_scale")
  assert result["fused"]["collectives_per_replica"] == 2
  assert result["fused"]["all_reduce_bytes"] == PARAMS * 2 + METRIC_SUMS * 4
  # float16 rounding of the gradients only: close, not equal.
  assert result["max_weight_difference"] < 1e-3
  assert result["max_loss_difference"] < 1e-3
  assert result["fused"]["global_step"] == STEPS * EPOCHS
  assert result["fused"]["accuracy"][-1] > 0.5


@pytest.mark.parametrize("settings, flag", [
    (dict(fused_step="yes", accumulate_steps=1, strategy="mirrored"),
     "--fused_step='yes'"),
    (dict(fused_step="auto", accumulate_steps=0, strategy="mirrored"),
     "--accumulate_steps=0"),
    (dict(fused_step="on", accumulate_steps=1, strategy="ps"),
     "--fused_step=on"),
    (dict(fused_step="off", accumulate_steps=4, strategy="multiworker"),
     "--accumulate_steps=4"),
    (dict(fused_step="auto", accumulate_steps=4, strategy="ps"),
     "--accumulate_steps=4"),
])
def test_bad_settings_name_the_flag(settings, flag):
  with pytest.raises(ConfigError, match=flag):
    fused_step.enabled(**settings)


def test_auto_is_on_for_synchronous_strategies_only():
  assert fused_step.enabled(fused_step="auto", accumulate_steps=4,
                            strategy="multiworker")
  assert fused_step.enabled(fused_step="auto", accumulate_steps=1,
                            strategy="mirrored")
  assert not fused_step.enabled(fused_step="auto", accumulate_steps=1,
                                strategy="ps")
  assert not fused_step.enabled(fused_step="off", accumulate_steps=1,
                                strategy="mirrored")
  assert fused_step.examples_per_update(100, num_replicas=2,
                                        accumulate_steps=4) == 800


# --- through the trainer --------------------------------------------------
#
# conftest's mirrored runs: full epochs of the real MNIST sample (24,345
# training images): the accuracy claim is about its 10,000 test images.


def _same_training(a: dict, b: dict) -> None:
  """Same losses and test accuracy within float tolerance."""
  assert a["global_step"] == b["global_step"]
  assert a["loss_history"] == pytest.approx(b["loss_history"], abs=1e-4)
  assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 1e-3


@pytest.fixture(scope="module")
def mirrored_runs(mirrored_run):
  """The trainer under mirrored (2 replicas): Keras' step and the fused
  step at batch 100 (conftest's shared run), and the fused step accumulating
  4 micro-batches of 25."""
  return {"keras": train_mirrored("--fused_step=off"),
          "fused": mirrored_run[0],
          "accumulated": train_mirrored("--batch_size=25",
                                        "--accumulate_steps=4")}


@pytest.mark.timeout(700)
def test_trainer_fused_step_trains_like_keras_step_mirrored(mirrored_runs):
  keras, fused = mirrored_runs["keras"], mirrored_runs["fused"]
  assert fused["fused_step"] and not keras["fused_step"]
  _same_training(fused, keras)
  assert fused["collectives_per_step"] == 1
  assert fused["all_reduce_bytes"] == (PARAMS + METRIC_SUMS) * 4
  assert keras["all_reduce_bytes"] == PARAMS * 4


@pytest.mark.timeout(700)
def test_trainer_accumulation_reaches_the_accuracy_of_the_large_batch(
    mirrored_runs):
  # K=4 micro-batches of 25 per replica against batches of 100: the same
  # global batch of 200 per update, the same updates per epoch.
  accumulated, large = mirrored_runs["accumulated"], mirrored_runs["fused"]
  assert accumulated["accumulate_steps"] == 4
  assert accumulated["global_batch_size"] == large["global_batch_size"] == 200
  assert accumulated["steps"] == large["steps"] > 0
  assert accumulated["test_accuracy"] > 0.9
  assert abs(accumulated["test_accuracy"] - large["test_accuracy"]) <= 0.003
  assert accumulated["collectives_per_step"] == 1


def _multiworker_results(mnist_dir, *flags) -> list:
  done = run(launch(f"{SPECS}/two_workers.json",
                    trainer("mnist", "--strategy=multiworker",
                            f"--mnist_dir={mnist_dir}", "--epochs=1",
                            "--steps_per_epoch=25", "--verbose=0", *flags)),
             timeout=250)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  results = [json_lines(done.stdout, prefix=f"[worker-{i}] ")[-1]
             for i in range(2)]
  # Bit-identical replicas: both workers end with the same weights.
  assert results[0]["weights_digest"] == results[1]["weights_digest"]
  return results


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_trainer_multiworker_one_collective_per_step(mnist_dir):
  fused = _multiworker_results(mnist_dir)
  keras = _multiworker_results(mnist_dir, "--fused_step=off")
  for result in fused:
    assert result["fused_step"]
    assert result["collectives_per_step"] == 1
  _same_training(fused[0], keras[0])
  # Keras' own step: the gradients, then a collective per metric read.
  assert keras[0]["collectives_per_step"] > 1
  print("multiworker trainer collectives per step: fused",
        fused[0]["collectives_per_step"], "keras",
        keras[0]["collectives_per_step"])
