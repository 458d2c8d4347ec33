"""trainers.inception: mini-Inception under all three strategies, InceptionV3,
synchronised batch norm, mixed precision, and bad input.

Real TensorFlow processes (the launcher's, over loopback) on the real MNIST
files, at width 0.125 (7 k parameters) and a few steps: each training run is
started once (module-scoped fixtures) and asserted several ways.
"""

import math
import sys

import pytest

from conftest import SPECS, json_lines, launch, run, trainer

# A tiny model and a few steps: enough to see the loss fall, cheap in CI.
TINY = ("--width=0.125", "--epochs=3", "--steps_per_epoch=6")


def _mnist(mnist_dir, *flags):
  return trainer("inception", f"--mnist_dir={mnist_dir}", *TINY, *flags)


def _assert_learns(result):
  losses = result["loss_history"]
  assert len(losses) == 3, result
  assert all(math.isfinite(x) for x in losses), losses
  # Training loss falls epoch over epoch from ln(10) = 2.30 (chance).
  assert losses[-1] < losses[0] - 0.05, losses
  assert result["model"] == "mini_inception_w0.125"
  assert result["num_params"] == 7065  # the width multiplier took effect


@pytest.fixture(scope="module")
def mirrored(mnist_dir):
  # 2 logical CPU devices; bfloat16 mixed precision (no GPU here).
  return run(_mnist(mnist_dir, "--strategy=mirrored", "--num_cpu_devices=2",
                    "--mixed_precision"), timeout=240)


@pytest.fixture(scope="module")
def multiworker(mnist_dir):
  return run(launch(f"{SPECS}/two_workers.json",
                    _mnist(mnist_dir, "--strategy=multiworker",
                           "--sync_batch_norm")), timeout=240)


@pytest.fixture(scope="module")
def ps(mnist_dir):
  return run(launch(f"{SPECS}/chief_two_workers_ps.json",
                    _mnist(mnist_dir, "--strategy=ps")), timeout=240)


@pytest.mark.timeout(300)
def test_mirrored_two_devices_mixed_precision(mirrored):
  assert mirrored.returncode == 0, mirrored.stderr[-3000:]
  [result] = json_lines(mirrored.stdout)
  _assert_learns(result)
  assert result["num_replicas"] == 2
  assert result["dtype_policy"] == "mixed_bfloat16"  # CPU: bfloat16
  assert "MFLOPs per example" in mirrored.stderr


@pytest.mark.timeout(300)
def test_multiworker_sync_batch_norm_replicas_identical(multiworker):
  assert multiworker.returncode == 0, multiworker.stderr[-3000:]
  results = [json_lines(multiworker.stdout, f"[worker-{i}] ")
             for i in range(2)]
  assert all(len(r) == 1 for r in results), multiworker.stdout[-3000:]
  first, second = results[0][0], results[1][0]
  _assert_learns(first)
  assert first["num_replicas"] == 2 and first["sync_batch_norm"]
  # Synchronous training: both workers end with bit-identical weights.
  assert first["weights_digest"] == second["weights_digest"]
  assert first["loss_history"] == second["loss_history"]


@pytest.mark.timeout(300)
def test_ps_chief_two_workers_one_ps(ps):
  assert ps.returncode == 0, ps.stderr[-3000:]
  [result] = json_lines(ps.stdout, "[chief-0] ")
  _assert_learns(result)
  assert result["variable_devices"] == ["/job:ps/replica:0/task:0/device:CPU:0"]


# Runs in its own process: TensorFlow's device set-up is per process.
MODEL_CHECKS = r"""
import functools, json, os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants
from tfdist.data import features
from tfdist.model import contract
from tfdist.model import models
from tfdist.training import precision

rng = np.random.default_rng(0)
loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
out = {}

# InceptionV3 at its smallest input: one training step on two images,
# eagerly (tracing its 21.8 M-parameter step as a graph costs more CPU than
# the step; the trainers' graph steps are the fixtures' jobs).
def images(shape):
  feature = features.image_feature(shape)
  return {feature.name: feature}


v3 = models.inception_v3(images((75, 75, 3)), 10)
v3.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss=loss,
           run_eagerly=True)
before = v3.get_weights()
out["v3_loss"] = float(v3.train_on_batch(
    rng.uniform(size=(2, 75, 75, 3)).astype("float32"), np.array([0, 1])))
out["v3_weights"] = len(before)
out["v3_changed"] = sum(not np.array_equal(a, b)
                        for a, b in zip(before, v3.get_weights()))
out["v3_params"] = v3.count_params()

# float16 (the GPU choice) on CPU: loss-scaled, synchronised batch norm.
with precision.policy("mixed_float16"):
  mini = models.with_sync_batch_norm(contract.build(
      functools.partial(models.mini_inception, width=0.125),
      images((28, 28, 1)), 10))
  mini.compile(optimizer=precision.loss_scaled(
      tf.keras.optimizers.SGD(0.01), "mixed_float16"), loss=loss)
out["f16_loss"] = float(mini.train_on_batch(
    rng.uniform(size=(4, 28, 28, 1)).astype("float32"), np.arange(4)))
out["f16_optimizer"] = type(mini.optimizer).__name__
out["f16_conv"] = mini.get_layer("stem_conv").compute_dtype
out["f16_logits"] = mini.output.dtype.name
norms = [l for l in mini.layers
         if isinstance(l, tf.keras.layers.BatchNormalization)]
out["sync_norms"] = [len(norms), sum(l.synchronized for l in norms)]
out["policy_after"] = tf.keras.mixed_precision.global_policy().name

# Our FLOPs count against TensorFlow's profiler of the frozen forward pass.
m32 = models.mini_inception(images((28, 28, 1)), 10, width=0.125)
graph = convert_to_constants.convert_variables_to_constants_v2(
    tf.function(lambda x: m32(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, 28, 28, 1]))).graph
options = tf.compat.v1.profiler.ProfileOptionBuilder(
    tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
).with_empty_output().build()
out["profiler_flops"] = tf.compat.v1.profiler.profile(
    graph, options=options).total_float_ops
out["our_flops"] = models.flops_per_example(m32)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def model_checks():
  done = run([sys.executable, "-c", MODEL_CHECKS], timeout=240)
  assert done.returncode == 0, done.stderr[-3000:]
  [out] = json_lines(done.stdout)
  return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_inception_v3_takes_a_training_step(model_checks):
  assert math.isfinite(model_checks["v3_loss"])
  assert model_checks["v3_params"] > 21_000_000  # InceptionV3's 21.8 M
  # Every weight moved: convolutions, batch-norm offsets and statistics.
  assert model_checks["v3_changed"] == model_checks["v3_weights"]


@pytest.mark.timeout(300)
def test_float16_loss_scaling_and_sync_batch_norm(model_checks):
  assert math.isfinite(model_checks["f16_loss"])
  assert model_checks["f16_optimizer"].startswith("LossScaleOptimizer")
  assert model_checks["f16_conv"] == "float16"
  assert model_checks["f16_logits"] == "float32"
  count, synchronised = model_checks["sync_norms"]
  assert count == 37 and synchronised == count
  assert model_checks["policy_after"] == "float32"  # the policy was restored


@pytest.mark.timeout(300)
def test_flops_match_the_profiler(model_checks):
  # We count convolutions and dense layers only; the profiler also counts
  # batch norm, pooling and bias adds, a few percent more.
  ours, profiler = model_checks["our_flops"], model_checks["profiler_flops"]
  assert 0.85 * profiler <= ours <= profiler


@pytest.mark.parametrize("flags, message", [
    (("--model=v3", "--data=idx"), "inception_v3 needs images of at least 75x75"),
    (("--data=synthetic", "--image_shape=8,8,1"),
     "mini_inception needs images of at least 16x16"),
    (("--data=synthetic", "--image_shape=32,32"), "--image_shape='32,32'"),
    (("--dataset=imagenet21k",), "--dataset='imagenet21k': use one of"),
    (("--dataset=cifar10", "--data=idx"), "--mnist_dir holds MNIST"),
    (("--strategy=ps", "--sync_batch_norm"), "--sync_batch_norm: ps workers"),
    (("--mixed_precision", "--mixed_precision_dtype=half"),
     "--mixed_precision_dtype='half'"),
    (("--model=resnet",), "--model='resnet': use one of mini, v3"),
    (("--width=0",), "--width=0.0: must be > 0"),
])
def test_bad_input_one_line_exit_2(mnist_dir, flags, message):
  done = run(trainer("inception", f"--mnist_dir={mnist_dir}", *flags),
             timeout=60)
  assert done.returncode == 2, done.stderr[-2000:]
  # Exactly one line: the error, before TensorFlow (whose import would log).
  assert done.stderr.strip().splitlines() == [done.stderr.strip()]
  assert done.stderr.startswith("error: ") and message in done.stderr, (
      done.stderr)
  assert done.stdout == ""
