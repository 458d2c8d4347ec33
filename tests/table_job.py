r"""Trains models of tests/user_models.py on vendored tables held in
memory (tests/array_source.py), through tfdist's training loop, one job
after another in this one process, and prints each result as a line:

    python tests/table_job.py regression weighted multilabel

The jobs (JOBS, each with its strategy and settings): ``regression``, the
diabetes table's disease progression from its 10 measurements, mirrored
(the fused step), with a metric of the user's (RMSE, given as its class);
``weighted``, iris with every setosa weighing 0 in training, mirrored;
``multilabel``, two yes/no columns of the diabetes table (sex, progression
above its median) from the other 9, a sigmoid each, under ps (an
in-process cluster: no TF_CONFIG).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from tfdist import app  # pylint: disable=wrong-import-position

MEDIAN_PROGRESSION = 140.5  # of the 442 rows of diabetes.csv

JOBS = {
    "regression": dict(
        file="diabetes.csv", task="regression", model="regressor",
        labels=[("progression", None)], strategy="mirrored",
        learning_rate=0.1, epochs=30, metrics=["RootMeanSquaredError"]),
    "weighted": dict(
        file="iris.csv", task="classification", labels=[("species", None)],
        model="functional", weights=lambda label: 0.0 if label == 0 else 1.0,
        strategy="mirrored", learning_rate=0.05, epochs=30),
    "multilabel": dict(
        file="diabetes.csv", task="multilabel", model="multilabel_sigmoid",
        labels=[("sex", lambda v: float(v) == 2.0),
                ("progression", lambda v: float(v) > MEDIAN_PROGRESSION)],
        strategy="ps", learning_rate=0.01, epochs=10),
}


def train(name: str) -> dict:
  """The result of job ``name``."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import array_source  # pylint: disable=g-import-not-at-top
  import user_models  # pylint: disable=g-import-not-at-top
  from tfdist import config  # pylint: disable=g-import-not-at-top
  from tfdist import contract  # pylint: disable=g-import-not-at-top
  from tfdist import loop  # pylint: disable=g-import-not-at-top
  job = dict(JOBS[name])
  settings = {k: job.pop(k) for k in ("strategy", "learning_rate", "epochs")}
  # A class: made by tfdist in the strategy's scope.
  metrics = tuple(getattr(tf.keras.metrics, m) for m in job.pop("metrics", ()))
  model = getattr(user_models, job.pop("model"))
  return loop.run(
      config.TrainConfig(batch_size=16, optimizer="adam", verbose=0,
                         **settings),
      user=contract.UserModel(model, name=name, metrics=metrics),
      dataset=array_source.table(**job), task=None)


def main(names) -> int:
  app.prepare_environment()
  for name in names:
    print(json.dumps(train(name)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
