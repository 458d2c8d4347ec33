r"""Trains a model of tests/user_models.py on a vendored table held in
memory (tests/array_source.py), through tfdist's training loop, and prints
the result as its last line. One job per test module's fixture:

    python tests/table_job.py --job=regression --strategy=mirrored

The jobs (JOBS): ``regression``, the diabetes table's disease progression
from its 10 measurements; ``multilabel``, two yes/no columns of the same
table (sex, progression above its median) from the other 9; ``weighted``,
iris with every setosa weighing 0 in training. Under ``--strategy=ps``
without TF_CONFIG, an in-process cluster.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from tfdist import app  # pylint: disable=wrong-import-position

MEDIAN_PROGRESSION = 140.5  # of the 442 rows of diabetes.csv

JOBS = {
    "regression": dict(file="diabetes.csv", task="regression",
                       labels=[("progression", None)], model="regressor"),
    "multilabel": dict(
        file="diabetes.csv", task="multilabel", model="multilabel_sigmoid",
        labels=[("sex", lambda v: float(v) == 2.0),
                ("progression", lambda v: float(v) > MEDIAN_PROGRESSION)]),
    "weighted": dict(file="iris.csv", task="classification",
                     labels=[("species", None)], model="functional",
                     weights=lambda label: 0.0 if label == 0 else 1.0),
}


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--job", choices=sorted(JOBS), required=True)
  parser.add_argument("--strategy", default="mirrored")
  parser.add_argument("--epochs", type=int, default=30)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--learning_rate", type=float, default=0.01)
  args = parser.parse_args()
  app.prepare_environment()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import array_source  # pylint: disable=g-import-not-at-top
  import user_models  # pylint: disable=g-import-not-at-top
  from tfdist import cluster  # pylint: disable=g-import-not-at-top
  from tfdist import config  # pylint: disable=g-import-not-at-top
  from tfdist import contract  # pylint: disable=g-import-not-at-top
  from tfdist import loop  # pylint: disable=g-import-not-at-top
  job = dict(JOBS[args.job])
  model = getattr(user_models, job.pop("model"))
  source = array_source.table(**job)
  # A class: made by tfdist in the strategy's scope.
  metrics = ([tf.keras.metrics.RootMeanSquaredError]
             if args.job == "regression" else [])
  result = loop.run(
      config.TrainConfig(strategy=args.strategy, epochs=args.epochs,
                         batch_size=args.batch_size, optimizer="adam",
                         learning_rate=args.learning_rate, verbose=0),
      user=contract.UserModel(model, name=args.job, metrics=tuple(metrics)),
      dataset=source, task=cluster.task_from_environ(os.environ))
  print(json.dumps(result), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
