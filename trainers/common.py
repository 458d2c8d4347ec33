"""Flags and the ``main`` shared by every trainer (entry-point side only).

Each trainer module defines its model and defaults and calls
:func:`run_trainer`; the flags below are the same for all of them, so a user
who learnt one trainer knows them all.
"""

import json
import os
import sys
from typing import Callable, Optional

# Before TensorFlow is imported anywhere: tf.keras must be tf-keras (Keras 2),
# the Keras that runs all three strategies (Keras 3 cannot run
# ParameterServerStrategy). setdefault, so a user's explicit choice stands and
# meets the library's one-line Keras check instead.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ INFO lines (server options, device dumps) drown the
# training log; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# No cuInit error without a GPU, TensorFlow's start-up block once: see there.
from tfdist import tf_startup  # pylint: disable=g-import-not-at-top,wrong-import-position
tf_startup.prepare(os.environ, has_gpu=tf_startup.has_gpu_device())

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position

from tfdist import cli  # pylint: disable=wrong-import-position
from tfdist import cluster  # pylint: disable=wrong-import-position
from tfdist import evaluator  # pylint: disable=wrong-import-position
from tfdist import console  # pylint: disable=wrong-import-position
from tfdist import data  # pylint: disable=wrong-import-position
from tfdist import strategy  # pylint: disable=wrong-import-position
from tfdist import train  # pylint: disable=wrong-import-position
from tfdist import errors  # pylint: disable=wrong-import-position
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
flags.DEFINE_bool("sync_batch_norm", False,
                  "mirrored/multiworker: batch-norm statistics over the global "
                  "batch (all replicas), not each replica's own.")
flags.DEFINE_bool("mixed_precision", False,
                  "16-bit compute, float32 variables (--mixed_precision_dtype).")
flags.DEFINE_string("mixed_precision_dtype", "auto",
                    "With --mixed_precision: float16 (loss-scaled), bfloat16, "
                    "or auto = float16 on GPUs, bfloat16 on CPUs.")
flags.DEFINE_string("lr_scaling", "none",
                    "none, or linear: --learning_rate x global batch / "
                    "--base_batch_size (the large-batch recipe).")
flags.DEFINE_integer("base_batch_size", 100,
                     "The global batch --learning_rate was tuned for.")
flags.DEFINE_float("warmup_epochs", 0.0,
                   "Ramp the learning rate up linearly over this many epochs.")
flags.DEFINE_string("all_reduce_dtype", "float32",
                    "float32, or float16: all-reduce gradients in half the "
                    "bytes (mirrored, multiworker).")
flags.DEFINE_bool("eval_every_epoch", False,
                  "Evaluate the test set after every epoch (untimed) and "
                  "report accuracy against training time.")
flags.DEFINE_integer("checkpoint_every_steps", 0,
                     "With --model_dir: save every N steps (0 = off).")
flags.DEFINE_integer("checkpoint_every_epochs", 1,
                     "With --model_dir: save every N epochs (0 = off).")
flags.DEFINE_integer("keep_checkpoints", 3,
                     "How many checkpoints the chief keeps in --model_dir.")
flags.DEFINE_integer("preemption_check_steps", 10,
                     "multiworker: how often (steps) the workers agree on "
                     "whether one got SIGTERM (one small all-reduce each).")
flags.DEFINE_float("eval_timeout", 600.0,
                   "Evaluator task: seconds without a new checkpoint before "
                   "it gives up.")
flags.DEFINE_string("data", "auto",
                    "tfds (downloads), idx (needs --mnist_dir), synthetic; "
                    "auto = --mnist_dir, else TFDS MNIST on disk, else the "
                    "bundled MNIST sample.")
flags.DEFINE_string("mnist_dir", None,
                    "Directory with the four MNIST IDX files.")
flags.DEFINE_string("tfds_data_dir", None,
                    "tensorflow-datasets data_dir (default ~/tensorflow_datasets).")
flags.DEFINE_string("export_dir", None,
                    "Where the chief exports the trained model: a new "
                    "SavedModel version per run, for TensorFlow Serving.")
flags.DEFINE_bool("tflite", False,
                  "Also export model.tflite (float) to --export_dir.")
flags.DEFINE_bool("tflite_quantize", False,
                  "Also export model_quant.tflite (dynamic-range quantised).")


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
      sync_batch_norm=FLAGS.sync_batch_norm,
      mixed_precision=FLAGS.mixed_precision,
      mixed_precision_dtype=FLAGS.mixed_precision_dtype,
      lr_scaling=FLAGS.lr_scaling, base_batch_size=FLAGS.base_batch_size,
      warmup_epochs=FLAGS.warmup_epochs,
      all_reduce_dtype=FLAGS.all_reduce_dtype,
      eval_every_epoch=FLAGS.eval_every_epoch,
      checkpoint_every_steps=FLAGS.checkpoint_every_steps,
      checkpoint_every_epochs=FLAGS.checkpoint_every_epochs,
      keep_checkpoints=FLAGS.keep_checkpoints,
      preemption_check_steps=FLAGS.preemption_check_steps,
      export_dir=FLAGS.export_dir, tflite=FLAGS.tflite,
      tflite_quantize=FLAGS.tflite_quantize,
      # A progress bar on a terminal; one line per epoch in logs, where the
      # bar's carriage returns would be noise. Only the chief reports.
      verbose=(1 if sys.stdout.isatty() else 2) if is_chief else 0)


def data_source(tfds_name: str = "mnist") -> data.Source:
  """--data, --mnist_dir and --tfds_data_dir resolved (data.resolve_source)."""
  return data.resolve_source(FLAGS.data, mnist_dir=FLAGS.mnist_dir,
                             tfds_name=tfds_name,
                             tfds_data_dir=FLAGS.tfds_data_dir)


def _load_data(tfds_name: str = "mnist", **options):
  return data.load(data_source(tfds_name), seed=FLAGS.seed, **options)


def run_trainer(*, model_fn, model_name: str,
                data_options: Optional[Callable[[], dict]] = None) -> int:
  """Runs this process's part of the job; returns the exit status.

  Training tasks print one final JSON line with the result. Bad input is
  one ``error:`` line on stderr and exit status 2.

  Args:
    model_fn: ``model_fn(input_shape, num_classes)``, see tfdist.models.
    model_name: the result's "model".
    data_options: called first, before TensorFlow is imported: checks the
      trainer's own flags (raising ConfigError) and returns extra keyword
      arguments of ``tfdist.data.load`` (``tfds_name``, ``synthetic_shape``).
  """
  if not FLAGS["verbosity"].present:
    # TensorFlow's Python INFO lines (one per all-reduce set-up) hide the
    # training log; --verbosity=0 brings them back.
    logging.set_verbosity(logging.WARNING)
  try:
    options = data_options() if data_options else {}
    task = cluster.parse_tf_config(os.environ.get("TF_CONFIG"))
    config = _config(task)
    role = strategy.plan_role(config.strategy, task)
    if role == strategy.SERVE:
      cluster.check_port_free(task)
      status = strategy.serve(task, peer_timeout=config.peer_timeout)
      from tfdist import monitor  # pylint: disable=g-import-not-at-top
      # Serving tasks print no result: their memory is this line (read by
      # tfdist.bench).
      console.info(f"{task.name} peak memory {monitor.peak_rss_mb()} MiB")
      return status
    dataset = _load_data(**options)
    if role == strategy.EVALUATE:
      result = evaluator.run(
          model_fn=model_fn, dataset=dataset, model_dir=config.model_dir,
          model_name=model_name, batch_size=config.eval_batch_size,
          timeout=FLAGS.eval_timeout, task_name=task.name)
    else:
      result = train.run(config, model_fn=model_fn, dataset=dataset,
                         task=task, model_name=model_name)
  except (ConfigError, errors.TaskLost, errors.Preempted) as e:
    # Preempted is 143 = 128 + SIGTERM: Kubernetes (and tfdist.launch)
    # restart the task.
    return cli.report(e)
  print(json.dumps(result), flush=True)
  return 0
