"""Flags and the ``main`` shared by every trainer (entry-point side only).

Each trainer module defines its model and defaults and calls
:func:`run_trainer`; the flags below are the same for all of them, so a user
who learnt one trainer knows them all.
"""

import json
import os
import sys

# Before TensorFlow is imported anywhere: tf.keras must be tf-keras (Keras 2),
# the Keras that runs all three strategies (Keras 3 cannot run
# ParameterServerStrategy). setdefault, so a user's explicit choice stands and
# meets the library's one-line Keras check instead.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ INFO lines (server options, device dumps) drown the
# training log; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position

from tfdist import cluster  # pylint: disable=wrong-import-position
from tfdist import data  # pylint: disable=wrong-import-position
from tfdist import strategy  # pylint: disable=wrong-import-position
from tfdist import train  # pylint: disable=wrong-import-position
from tfdist.errors import ConfigError  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS

flags.DEFINE_string("strategy", "mirrored",
                    f"Distribution strategy: {', '.join(strategy.STRATEGIES)}.")
flags.DEFINE_integer("batch_size", 100, "Examples per replica per step.")
flags.DEFINE_integer("epochs", 5, "Training epochs.")
flags.DEFINE_integer("steps_per_epoch", 0,
                     "Steps per epoch; 0 = one pass over the training split.")
flags.DEFINE_float("learning_rate", 0.5, "Learning rate.")
flags.DEFINE_string("optimizer", "sgd",
                    f"Optimizer: {', '.join(train.OPTIMIZERS)}.")
flags.DEFINE_string("model_dir", None,
                    "Where the chief writes checkpoints and result.json.")
flags.DEFINE_integer("num_cpu_devices", 2,
                     "mirrored without GPUs: logical CPU replicas.")
flags.DEFINE_string("all_reduce", "auto",
                    f"multiworker all-reduce: {', '.join(strategy.ALL_REDUCE)}.")
flags.DEFINE_integer("steps_per_execution", 1,
                     "Steps per tf.function call (an RPC under ps).")
flags.DEFINE_integer("local_ps_workers", 2,
                     "ps without TF_CONFIG: workers of the in-process cluster.")
flags.DEFINE_float("peer_timeout", 120.0,
                   "Seconds to wait for the other tasks before failing.")
flags.DEFINE_integer("seed", 0, "Seed for weights and shuffling.")
flags.DEFINE_string("data", "auto",
                    "tfds, idx (needs --mnist_dir), synthetic; auto = idx if "
                    "--mnist_dir is set, else tfds.")
flags.DEFINE_string("mnist_dir", None,
                    "Directory with the four MNIST IDX files, e.g. "
                    "../shared/data/mnist.")
flags.DEFINE_string("tfds_data_dir", None,
                    "tensorflow-datasets data_dir (default ~/tensorflow_datasets).")


def _config(task) -> train.TrainConfig:
  is_chief = task is None or task.is_chief
  return train.TrainConfig(
      strategy=FLAGS.strategy, batch_size=FLAGS.batch_size,
      epochs=FLAGS.epochs, steps_per_epoch=FLAGS.steps_per_epoch,
      learning_rate=FLAGS.learning_rate, optimizer=FLAGS.optimizer,
      model_dir=FLAGS.model_dir, num_cpu_devices=FLAGS.num_cpu_devices,
      all_reduce=FLAGS.all_reduce,
      steps_per_execution=FLAGS.steps_per_execution,
      local_ps_workers=FLAGS.local_ps_workers,
      peer_timeout=FLAGS.peer_timeout, seed=FLAGS.seed,
      # A progress bar on a terminal; one line per epoch in logs, where the
      # bar's carriage returns would be noise. Only the chief reports.
      verbose=(1 if sys.stdout.isatty() else 2) if is_chief else 0)


def _load_data():
  source = FLAGS.data
  if source == "auto":
    source = "idx" if FLAGS.mnist_dir else "tfds"
  return data.load(source, mnist_dir=FLAGS.mnist_dir,
                   tfds_data_dir=FLAGS.tfds_data_dir, seed=FLAGS.seed)


def run_trainer(*, model_fn, model_name: str) -> int:
  """Runs this process's part of the job; returns the exit status.

  Training tasks print one final JSON line with the result. Bad input is
  one ``error:`` line on stderr and exit status 2.
  """
  if not FLAGS["verbosity"].present:
    # TensorFlow's Python INFO lines (one per all-reduce set-up) hide the
    # training log; --verbosity=0 brings them back.
    logging.set_verbosity(logging.WARNING)
  try:
    task = cluster.parse_tf_config(os.environ.get("TF_CONFIG"))
    config = _config(task)
    role = strategy.plan_role(config.strategy, task)
    if role == strategy.SERVE:
      cluster.check_port_free(task)
      return strategy.serve(task)
    if role == strategy.EVALUATE:
      raise ConfigError("the evaluator task is not supported yet; remove "
                        "\"evaluator\" from the cluster spec")
    dataset = _load_data()
    result = train.run(config, model_fn=model_fn, dataset=dataset, task=task,
                       model_name=model_name)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 2
  print(json.dumps(result), flush=True)
  return 0
