r"""Trains the model on the converted records, under any tfdist strategy.

    python -m diabetes.train                               # one process
    python -m tfdist.launch --cluster_spec=cluster_specs/two_workers.json \
        -- python -m diabetes.train --strategy=multiworker

Every tfdist flag works (``--helpfull`` lists them); the defaults below
suit this model and point at the records ``python -m tfdist.data write``
made in records/. The task's loss (mean squared error) and its test metrics
(mse, mae, r2) come with the records; ``rmse`` is this project's own
metric, beside them in the result.

The model function is named, ``"diabetes.model:build"``, rather than
imported here: model.py imports TensorFlow, and tfdist.main sets
TensorFlow up before it starts (on a machine without a GPU, no CUDA
initialisation: no error-level ``cuInit`` line, no second start-up log).
tfdist imports it once it has.
"""

import tfdist

MODEL = "diabetes.model:build"
DEFAULTS = {
    "train_files": "records/train-*",
    "test_files": "records/test-*",
    "optimizer": "adam",
    "learning_rate": 0.1,
    "batch_size": 32,
    "epochs": 20,
}


def rmse():
  """The root of the mean squared error, in the progression's units.

  A function that makes the metric: tfdist calls it inside the strategy's
  scope, once TensorFlow is set up (a metric object made here, at import,
  would start TensorFlow too early).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.keras.metrics.RootMeanSquaredError(name="rmse")


if __name__ == "__main__":
  tfdist.main(MODEL, defaults=DEFAULTS, metrics=[rmse])
