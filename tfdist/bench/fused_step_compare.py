r"""Trains one model with Keras' step and with the fused step, and compares.

    python -m tfdist.bench.fused_step_compare --strategy=mirrored \
        --mnist_dir=tfdist/datasets/mnist --steps=50 --epochs=3
    python -m tfdist.launch --cluster_spec=cluster_specs/two_workers.json \
        --free_ports -- python -m tfdist.bench.fused_step_compare \
        --strategy=multiworker --mnist_dir=tfdist/datasets/mnist

Softmax regression on real MNIST, the same seed, data order and SGD for both
steps (``--accumulate_steps=K``: the fused step takes K micro-batches of
``--batch_size`` per update, Keras' step one batch of K x ``--batch_size``,
so both update on the same examples). ``--metrics=extra`` compiles more
metrics (top-3 accuracy, a metric function, a count of the examples seen,
a weighted accuracy) and
``--sample_weights`` feeds each example a weight (1 + its label mod 3), so
that the loss and the weighted metric use them. Prints one JSON line: for
each step its final weights digest, per-epoch global loss and every
metric, collectives
per replica counted from the traced step, milliseconds per step and
examples/s after the warm-up epoch (the median epoch), and the largest
weight and metric differences between the two.
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
from tfdist.cluster import specs as cluster_lib  # pylint: disable=wrong-import-position
from tfdist.model import models  # pylint: disable=wrong-import-position
from tfdist.model import tasks  # pylint: disable=wrong-import-position
from tfdist.training import fused_step  # pylint: disable=wrong-import-position


def _metrics(tf, which: str) -> dict:
  """compile's metrics and weighted_metrics for ``--metrics``."""
  if which == "accuracy":
    return {"metrics": ["accuracy"]}

  def mean_top_score(labels, logits):
    del labels
    return tf.reduce_max(logits, axis=-1)

  class ExamplesSeen(tf.keras.metrics.Sum):
    """A count, not a ratio: the examples of the epoch so far."""

    def update_state(self, y_true, y_pred, sample_weight=None):
      del y_pred, sample_weight
      return super().update_state(tf.ones_like(y_true, dtype=self.dtype))

  return {"metrics": ["accuracy", tf.keras.metrics.SparseTopKCategoricalAccuracy(
                          k=3, name="top3"), mean_top_score,
                      ExamplesSeen(name="examples_seen")],
          "weighted_metrics": [tf.keras.metrics.SparseCategoricalAccuracy(
              name="weighted_accuracy")]}


def _data_fn(dataset, *, batch: int, args):
  """The training data; with ``--sample_weights`` a weight per example."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dataset_fn = data_lib.make_dataset_fn(dataset.train,
                                        global_batch_size=batch,
                                        shuffle_seed=args.seed)
  if not args.sample_weights:
    return dataset_fn
  return lambda context: dataset_fn(context).map(
      lambda x, y: (x, y, 1.0 + tf.cast(y % 3, tf.float32)))


def _train(strategy, dataset, *, fused: bool, args) -> dict:
  """Builds, fits and measures one model; returns its figures and weights."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfdist.training import collectives  # pylint: disable=g-import-not-at-top
  from tfdist.training import monitor  # pylint: disable=g-import-not-at-top
  from tfdist.training.measurement import weights_digest  # pylint: disable=g-import-not-at-top
  k = args.accumulate_steps
  replicas = strategy.num_replicas_in_sync
  pipeline_batch = args.batch_size * replicas * k
  tf.keras.utils.set_random_seed(args.seed)
  with strategy.scope():
    model = models.softmax_regression(dataset.features, dataset.num_classes)
    optimizer = tf.keras.optimizers.SGD(args.learning_rate)
    if args.loss_scale:
      optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **_metrics(tf, args.metrics))
    tasks.build_metrics(model, task="classification",
                        num_outputs=dataset.num_classes)
  model.distribute_reduction_method = "first"  # as tfdist.train does
  step = None
  if fused:
    step = fused_step.install(model, all_reduce_dtype=args.all_reduce_dtype,
                              accumulate_steps=k)
  timer = monitor.EpochMonitor(examples_per_epoch=args.steps * pipeline_batch)
  data = tf.keras.utils.experimental.DatasetCreator(
      _data_fn(dataset, batch=pipeline_batch, args=args))
  history = model.fit(data, epochs=args.epochs, steps_per_epoch=args.steps,
                      callbacks=[timer], verbose=0)
  rate = timer.summary()["steady_examples_per_sec"]
  # The default strategy (one replica) has no worker_devices.
  local_replicas = (1 if args.strategy == "default"
                    else len(strategy.extended.worker_devices))
  return {
      "model": model,
      "weights": [np.array(w) for w in model.get_weights()],
      "figures": {
          "weights_digest": weights_digest(model),
          "loss": [float(x) for x in history.history["loss"]],
          "accuracy": [float(x) for x in history.history["accuracy"]],
          # Every metric's per-epoch value (not the monitor's timings).
          "metrics": {k: [float(x) for x in v]
                      for k, v in history.history.items()
                      if k not in ("loss", "examples_per_sec",
                                   "learning_rate")},
          "collectives_per_replica": collectives.count_train_function(
              model).per_replica(local_replicas),
          "collectives_by_op": collectives.count_train_function(model).by_op,
          "ms_per_step": round(1000 * pipeline_batch / rate, 3),
          "examples_per_sec": rate,
          "global_step": int(model.optimizer.iterations.numpy()),
          "all_reduce_bytes": step.all_reduce_bytes if step else None,
      }}


def _largest_difference(a, b) -> float:
  import numpy as np  # pylint: disable=g-import-not-at-top
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(a, b))


def _checkpoint_check(standard_model, fused_model) -> dict:
  """Whether the fused model's checkpoint has the plain model's keys and
  restores into it (every saved object matched, the same weights after)."""
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfdist.training.measurement import weights_digest  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory(prefix="tfdist-fused-") as temp:
    paths = [tf.train.Checkpoint(model=m).write(os.path.join(temp, name))
             for name, m in (("standard", standard_model),
                             ("fused", fused_model))]
    keys = [sorted(k for k, _ in tf.train.list_variables(p)) for p in paths]
    tf.train.Checkpoint(model=standard_model).read(
        paths[1]).assert_existing_objects_matched()
  return {"checkpoint_keys_equal": keys[0] == keys[1],
          "fused_checkpoint_restores": (weights_digest(standard_model)
                                        == weights_digest(fused_model))}


def _strategy(name: str, task):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfdist.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  if name == "default":
    return tf.distribute.get_strategy()
  return strategy_lib.create(name, task=task, num_cpu_devices=2)


def _parser():
  parser = cli.OneLineParser(
      prog="python -m tfdist.bench.fused_step_compare",
                             description=__doc__.split("\n")[0])
  parser.add_argument("--strategy", default="mirrored",
                      choices=("mirrored", "multiworker", "default"))
  parser.add_argument("--mnist_dir", required=True)
  parser.add_argument("--batch_size", type=int, default=100,
                      help="examples per replica per micro-batch")
  parser.add_argument("--accumulate_steps", type=int, default=1)
  parser.add_argument("--all_reduce_dtype", default="float32",
                      choices=("float32", "float16"))
  parser.add_argument("--steps", type=int, default=20,
                      help="steps (updates) per epoch")
  parser.add_argument("--epochs", type=int, default=2,
                      help="epochs; the first is warm-up for the timing")
  parser.add_argument("--learning_rate", type=float, default=0.5)
  parser.add_argument("--loss_scale", action="store_true",
                      help="wrap SGD in a dynamic LossScaleOptimizer")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--metrics", default="accuracy",
                      choices=("accuracy", "extra"),
                      help="extra: also top-3 accuracy, a metric function "
                      "and a weighted accuracy")
  parser.add_argument("--sample_weights", action="store_true",
                      help="a weight per training example (1 + label mod 3)")
  parser.add_argument("--order", default="standard,fused",
                      help="which steps to train, in order (repeat them to "
                      "alternate trials: standard,fused,standard,fused)")
  return parser


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  task = cluster_lib.task_from_environ(os.environ)
  dataset = data_lib.load_mnist_idx(args.mnist_dir)
  strategy = _strategy(args.strategy, task)
  runs = {"standard": [], "fused": []}
  for name in args.order.split(","):
    runs[name].append(_train(strategy, dataset, fused=name == "fused",
                             args=args))
  result = {"strategy": args.strategy,
            "task": task.name if task else "local",
            "num_replicas": strategy.num_replicas_in_sync,
            "accumulate_steps": args.accumulate_steps,
            "all_reduce_dtype": args.all_reduce_dtype,
            # Other processes on the machine skew the timings.
            "load_average_at_end": os.getloadavg()}
  for name, trials in runs.items():
    if trials:
      figures = [t["figures"] for t in trials]
      # One trial's figures, and every trial's timing.
      result[name] = dict(figures[0], ms_per_step_trials=[
          f["ms_per_step"] for f in figures])
  if runs["standard"] and runs["fused"]:
    standard, fused = runs["standard"][0], runs["fused"][0]
    result["max_weight_difference"] = _largest_difference(
        standard["weights"], fused["weights"])
    result["max_loss_difference"] = _largest_difference(
        [result["standard"]["loss"]], [result["fused"]["loss"]])
    result["max_accuracy_difference"] = _largest_difference(
        [result["standard"]["accuracy"]], [result["fused"]["accuracy"]])
    # Every metric both steps logged (the same names: Keras' own).
    result["metric_names"] = sorted(result["fused"]["metrics"])
    result["max_metric_difference"] = _largest_difference(
        [result["standard"]["metrics"][k] for k in result["metric_names"]],
        [result["fused"]["metrics"][k] for k in result["metric_names"]])
    # Last: it overwrites the standard model's weights with the fused ones.
    result.update(_checkpoint_check(standard["model"], fused["model"]))
  print(json.dumps(result), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
