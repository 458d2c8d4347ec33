r"""Plain single-process Keras ``fit``: what the trainer's overhead is measured
against (``tfdist.bench`` runs both, same model, batch and input pipeline).

    python -m tfdist.bench.baseline --mnist_dir=tfdist/datasets/mnist --batch_size=100
    python -m tfdist.bench.baseline --mnist_dir=tfdist/datasets/mnist \
        --model=mini_inception --width=0.5 --batch_size=64 --momentum=0.9

No strategy, no DatasetCreator, no cluster: the model compiled and fitted as
in the Keras guides, on the trainer's own tf.data pipeline, timed by the same
callback. Prints one JSON line with the fields the trainers print for timing.

Owns that fit. Imports tfdist.data (a source of tfdist.data.sources: in
memory, files or TFDS), tfdist.model.models, tfdist.training.measurement and
tfdist.training.monitor (the latter two, and TensorFlow, only when fitting).
"""

from __future__ import annotations

import functools
import json
import os
import sys

from tfdist import cli
from tfdist import data as data_lib
from tfdist import tf_startup
from tfdist.data import sources
from tfdist.errors import ConfigError
from tfdist.model import models


def fit(*, dataset: sources.Source, batch_size: int, epochs: int,
        steps_per_epoch: int, learning_rate: float, seed: int = 0,
        model_fn=models.softmax_regression,
        model_name: str = "softmax_regression", momentum: float = 0.0,
        steps_per_execution: int = 1) -> dict:
  """Fits ``model_fn``'s model (softmax regression unless told) with plain
  Keras and returns its timing; ``momentum`` and ``steps_per_execution`` as
  the trainers' flags."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfdist.training import measurement  # pylint: disable=g-import-not-at-top
  from tfdist.training import monitor  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(seed)
  model = model_fn(dataset.features, dataset.num_classes)
  model.compile(
      optimizer=tf.keras.optimizers.SGD(learning_rate, momentum=momentum),
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=["accuracy"], steps_per_execution=steps_per_execution)
  # The trainer's pipeline, built for one input pipeline of one replica.
  train_data = dataset.train_dataset_fn(
      batch_size, seed=seed)(tf.distribute.InputContext())
  epoch_monitor = monitor.EpochMonitor(
      examples_per_epoch=steps_per_epoch * batch_size)
  model.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
            callbacks=[epoch_monitor], verbose=0)
  result = {"model": model_name, "strategy": "plain_keras",
            "task": "local", "num_replicas": 1,
            "global_batch_size": batch_size,
            "steps": steps_per_epoch * epochs,
            "test_accuracy": round(measurement.accuracy(
                model, dataset.test_batches(1000)), 5)}
  result.update(epoch_monitor.summary())
  return result


# The models a plain fit can train: --model -> (--width -> the model_fn).
MODELS = {
    "softmax_regression": lambda width: models.softmax_regression,
    "mini_inception": lambda width: functools.partial(models.mini_inception,
                                                      width=width),
}


def _parse(argv):
  parser = cli.OneLineParser(
      prog="python -m tfdist.bench.baseline",
      description="Plain single-process Keras fit of one of tfdist's models.")
  parser.add_argument("--mnist_dir", required=True)
  parser.add_argument("--model", choices=sorted(MODELS),
                      default="softmax_regression")
  parser.add_argument("--width", type=float, default=1.0,
                      help="mini_inception's filter multiplier")
  parser.add_argument("--batch_size", type=int, default=100)
  parser.add_argument("--epochs", type=int, default=3)
  parser.add_argument("--steps_per_epoch", type=int, default=100)
  parser.add_argument("--learning_rate", type=float, default=0.5)
  parser.add_argument("--momentum", type=float, default=0.0,
                      help="of the SGD optimizer, as the trainers' flag")
  parser.add_argument("--steps_per_execution", type=int, default=1,
                      help="steps per tf.function call, as the trainers' flag")
  args = parser.parse_args(argv)
  for name in ("batch_size", "epochs", "steps_per_epoch",
               "steps_per_execution"):
    if getattr(args, name) < 1:
      raise ConfigError(f"--{name}={getattr(args, name)}: must be at least 1")
  return args


def main(argv=None) -> int:
  args = _parse(argv)
  dataset = sources.InMemorySource(data_lib.load_mnist_idx(args.mnist_dir))
  # An entry point: Keras 2, as in the trainers (set before TF loads).
  os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
  tf_startup.prepare(os.environ, has_gpu=tf_startup.has_gpu_device())
  name = args.model if args.model == "softmax_regression" else (
      f"{args.model}_w{args.width:g}")
  print(json.dumps(fit(dataset=dataset, batch_size=args.batch_size,
                       epochs=args.epochs,
                       steps_per_epoch=args.steps_per_epoch,
                       learning_rate=args.learning_rate,
                       model_fn=MODELS[args.model](args.width),
                       model_name=name, momentum=args.momentum,
                       steps_per_execution=args.steps_per_execution)),
        flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
