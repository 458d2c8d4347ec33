r"""Measures what ``steps_per_execution`` buys under ParameterServerStrategy.

    python -m tfdist.bench.ps_steps_per_execution \
        --mnist_dir=tfdist/datasets/mnist --steps_per_execution=10

Under ps, tf-keras' ``fit`` schedules each training function on a worker
through the ClusterCoordinator: one RPC per call. With
``compile(steps_per_execution=N)`` the scheduled function loops N steps
(tf-keras 2.21: ``train_function(iterator, steps_per_execution)`` runs
``for _ in tf.range(steps_per_execution)``, the count read when the closure
is scheduled), so one RPC carries N steps. This trains softmax regression
on real MNIST with an in-process cluster (workers and one ps on loopback)
and prints one JSON line: examples/s after the warm-up epoch, and the global
step, which must be epochs x steps_per_epoch even when N does not divide
steps_per_epoch.
"""

from __future__ import annotations

import json
import os
import sys

# Before TensorFlow is imported: tf.keras is tf-keras (see tfdist.app).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfdist import cli  # pylint: disable=wrong-import-position
from tfdist import data as data_lib  # pylint: disable=wrong-import-position
from tfdist.model import models  # pylint: disable=wrong-import-position


def measure(dataset: data_lib.Dataset, *, workers: int, batch_size: int,
            steps_per_execution: int, steps_per_epoch: int,
            epochs: int) -> dict:
  """Fits under an in-process ps cluster; returns examples/s and steps."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfdist.training import monitor  # pylint: disable=g-import-not-at-top
  from tfdist.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  strategy = strategy_lib.create("ps", task=None, local_ps_workers=workers)
  with strategy.scope():
    model = models.softmax_regression(dataset.features, dataset.num_classes)
    model.compile(
        optimizer=tf.keras.optimizers.SGD(0.5),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"], steps_per_execution=steps_per_execution)
  timer = monitor.EpochMonitor(examples_per_epoch=steps_per_epoch * batch_size)
  data = tf.keras.utils.experimental.DatasetCreator(data_lib.make_dataset_fn(
      dataset.train, global_batch_size=batch_size, shuffle_seed=None))
  model.fit(data, epochs=epochs, steps_per_epoch=steps_per_epoch,
            callbacks=[timer], verbose=0)
  result = {"strategy": "ps", "workers": workers, "batch_size": batch_size,
            "steps_per_execution": steps_per_execution,
            "steps_per_epoch": steps_per_epoch, "epochs": epochs,
            "global_step": int(model.optimizer.iterations.numpy())}
  result.update(timer.summary())
  # Other processes on the machine skew the figure: say how busy it was.
  result["load_average_at_end"] = os.getloadavg()
  return result


def main(argv=None) -> int:
  parser = cli.OneLineParser(
      prog="python -m tfdist.bench.ps_steps_per_execution",
                             description=__doc__.split("\n")[0])
  parser.add_argument("--mnist_dir", required=True)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--batch_size", type=int, default=100)
  parser.add_argument("--steps_per_execution", type=int, default=1)
  parser.add_argument("--steps_per_epoch", type=int, default=305)
  parser.add_argument("--epochs", type=int, default=3)
  args = parser.parse_args(argv)
  dataset = data_lib.load_mnist_idx(args.mnist_dir)
  print(json.dumps(measure(
      dataset, workers=args.workers, batch_size=args.batch_size,
      steps_per_execution=args.steps_per_execution,
      steps_per_epoch=args.steps_per_epoch, epochs=args.epochs)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
