r"""The peer: the TF tutorial's plain MultiWorkerMirroredStrategy training.

    python -m tfdist.launch --cluster_spec=cluster_specs/two_workers.json \
        --free_ports -- python -m tfdist.bench.peer \
        --mnist_dir=tfdist/datasets/mnist --batch_size=100

What "Multi-worker training with Keras" (tensorflow.org tutorials) does, on
tfdist's model and data so that the figures compare: read the cluster from
TF_CONFIG, build ``tf.distribute.MultiWorkerMirroredStrategy()``, a tf.data
pipeline of the global batch (``from_tensor_slices(...).shuffle(60000)
.repeat().batch(per-worker batch x workers)``, auto-sharded by ``fit``),
build and compile the model in the strategy's scope, and
``model.fit(dataset, epochs, steps_per_epoch)``. No tfdist code trains:
tfdist only sets TensorFlow's start-up environment as for the trainers
(tfdist.tf_startup), reads the MNIST files into arrays before, times the
epochs with the trainers' callback (tfdist.training.monitor, the same clock for
both) and counts the test accuracy after. The model is the trainers'
softmax regression, written out in plain Keras; the optimizer plain SGD.

Prints one JSON line per worker with the fields the bench reads (examples/s
after the warm-up epoch, test accuracy). Owns that script; imports
tfdist.cli, tfdist.data and tfdist.tf_startup (tfdist.training.measurement and
tfdist.training.monitor, and TensorFlow, once training starts).
"""

from __future__ import annotations

import json
import os
import sys

from tfdist import cli
from tfdist import data as data_lib
from tfdist import tf_startup
from tfdist.errors import ConfigError


def _task() -> tuple:
  """(task name, number of workers) from TF_CONFIG, as the tutorial reads
  it."""
  tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
  if "cluster" not in tf_config:
    raise ConfigError("the peer runs under TF_CONFIG: start it through "
                      "python -m tfdist.launch --cluster_spec=... -- python "
                      "-m tfdist.bench.peer ...")
  task = tf_config["task"]
  return (f"{task['type']}-{task['index']}",
          len(tf_config["cluster"]["worker"]))


def train(dataset: data_lib.Dataset, *, batch_size: int, epochs: int,
          steps_per_epoch: int, learning_rate: float) -> dict:
  """The tutorial's code on ``dataset``; returns this worker's result."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfdist.data import sources  # pylint: disable=g-import-not-at-top
  from tfdist.training import measurement  # pylint: disable=g-import-not-at-top
  from tfdist.training import monitor  # pylint: disable=g-import-not-at-top
  task, num_workers = _task()
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  global_batch_size = batch_size * num_workers
  images = dataset.train.images / np.float32(255)
  labels = dataset.train.labels.astype(np.int64)
  train_data = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(
      len(labels)).repeat().batch(global_batch_size)
  with strategy.scope():
    model = tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=dataset.image_shape,
                                   name=data_lib.IMAGE_NAME),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(dataset.num_classes, kernel_initializer="zeros"),
    ])
    model.compile(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=tf.keras.optimizers.SGD(learning_rate),
        metrics=["accuracy"])
  timer = monitor.EpochMonitor(
      examples_per_epoch=steps_per_epoch * global_batch_size)
  model.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
            callbacks=[timer], verbose=0)
  result = {"model": "softmax_regression", "strategy": "peer_multiworker",
            "task": task, "num_replicas": strategy.num_replicas_in_sync,
            "global_batch_size": global_batch_size,
            "steps": steps_per_epoch * epochs,
            "test_accuracy": round(measurement.accuracy(
                model, sources.split_batches(dataset.test, 1000)), 5)}
  result.update(timer.summary())
  return result


def main(argv=None) -> int:
  parser = cli.OneLineParser(prog="python -m tfdist.bench.peer",
                             description=__doc__.split("\n")[0])
  parser.add_argument("--mnist_dir", required=True)
  parser.add_argument("--batch_size", type=int, default=100,
                      help="examples per worker per step")
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--steps_per_epoch", type=int, default=100)
  parser.add_argument("--learning_rate", type=float, default=0.5)
  args = parser.parse_args(argv)
  for name in ("batch_size", "epochs", "steps_per_epoch"):
    if getattr(args, name) < 1:
      raise ConfigError(f"--{name}={getattr(args, name)}: must be at least 1")
  _task()  # TF_CONFIG present, before the TensorFlow import
  dataset = data_lib.load_mnist_idx(args.mnist_dir)
  # An entry point: Keras 2 as in the trainers, TensorFlow's start-up
  # settings for this machine (before TF loads).
  os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
  tf_startup.prepare(os.environ, has_gpu=tf_startup.has_gpu_device())
  print(json.dumps(train(dataset, batch_size=args.batch_size,
                         epochs=args.epochs,
                         steps_per_epoch=args.steps_per_epoch,
                         learning_rate=args.learning_rate)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
