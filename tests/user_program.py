r"""A user's own train.py: a compiled model of its own
(tests/user_models.py:compiled_own), with a metric and a callback given to
tfdist, as functions that make them (tf.keras is tf-keras once tfdist has
started).

    python tests/user_program.py --strategy=ps ...        # tfdist.main
    python tests/user_program.py fit '{"epochs": 2, ...}'  # tfdist.fit
    python tests/user_program.py fit SETTINGS SETTINGS ...  # a sweep

``fit`` hands this process's TF_CONFIG (the launcher's) to tfdist.fit as
``tf_config=`` (tfdist.fit reads no environment variable) and prints
``fit returned: RESULT`` (JSON) when it returns; given several SETTINGS,
it fits each in turn in this process, as a notebook's sweep does. A
SETTINGS with ``"model": NAME`` trains tests/user_models.py's NAME
instead, without the metric and the callback.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import tfdist  # pylint: disable=wrong-import-position

MODEL = "tests.user_models:compiled_own"


def cross_entropy():
  """A metric given to tfdist: the training loss without the model's 1000."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.keras.metrics.SparseCategoricalCrossentropy(from_logits=True,
                                                        name="xent")


def recorder():
  """A callback given to tfdist: says what the logs held at the end."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class Recorder(tf.keras.callbacks.Callback):

    def on_train_end(self, logs=None):
      print(f"user callback: training ended with {', '.join(sorted(logs))}",
            file=sys.stderr, flush=True)
      traced = self.model.train_tf_function.experimental_get_tracing_count()
      print(f"user callback: the training step was traced {traced} time(s)",
            file=sys.stderr, flush=True)

  return Recorder()


if __name__ == "__main__":
  if sys.argv[1:2] == ["fit"]:
    for settings in map(json.loads, sys.argv[2:]):
      own = "model" not in settings
      result = tfdist.fit(
          MODEL if own else f"tests.user_models:{settings.pop('model')}",
          metrics=[cross_entropy] if own else None,
          callbacks=[recorder] if own else None,
          tf_config=os.environ.get("TF_CONFIG"), **settings)
      print("fit returned: " + json.dumps(result), flush=True)
  else:
    tfdist.main(MODEL, metrics=[cross_entropy], callbacks=[recorder])
