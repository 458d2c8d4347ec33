"""Model functions a user could write, good and broken, for the tests of
the model-function contract (tfdist.contract): each is named on the command
line as --model=tests.user_models:NAME."""

import json
import os
import signal

import tensorflow as tf

import tfdist


def _columns(features, inputs):
  numeric = [f for f in features.values()
             if f.kind == "numeric" and f.name in inputs]
  x = tf.keras.layers.Concatenate()([inputs[f.name] for f in numeric])
  return tf.keras.layers.Normalization(
      mean=[f.mean[0] for f in numeric],
      variance=[f.std[0] ** 2 for f in numeric])(x)


def functional(features, num_classes):
  """Functional, every feature an input (tfdist.keras_inputs)."""
  inputs = tfdist.keras_inputs(features)
  x = tf.keras.layers.Dense(8, activation="relu")(_columns(features, inputs))
  return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes)(x))


def two_columns(features, num_classes):
  """Functional, taking two of the features: it gets those (two of the
  breast-cancer table's most telling measurements)."""
  names = ["worst_radius", "worst_concave_points"]
  inputs = {n: features[n].keras_input() for n in names}
  x = _columns(features, inputs)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes)(x))


def sequential_probabilities(features, num_classes):
  """Sequential on one image, ending in a softmax: probabilities."""
  (image,) = features.values()
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=image.shape),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(num_classes, activation="softmax"),
  ])


def encoded(features, num_outputs, *, activation=None):
  """Every feature, of any kind, through tfdist.encoded (the preprocessing
  layers built from the data's statistics and vocabularies), then a hidden
  layer; ``activation`` of the last layer (None: logits)."""
  inputs = tfdist.keras_inputs(features)
  x = tf.keras.layers.Dense(8, activation="relu")(
      tfdist.encoded(inputs, features))
  return tf.keras.Model(inputs, tf.keras.layers.Dense(
      num_outputs, activation=activation)(x))


class _Subclassed(tf.keras.Model):

  def __init__(self, features, num_classes):
    super().__init__(name="subclassed")
    self._features = features
    self.hidden = tf.keras.layers.Dense(8, activation="relu")
    self.out = tf.keras.layers.Dense(num_classes)

  def call(self, inputs):
    columns = [inputs[name] for name, f in self._features.items()
               if f.kind == "numeric"]
    means = tf.constant([f.mean[0] for f in self._features.values()])
    stds = tf.constant([f.std[0] for f in self._features.values()])
    return self.out(self.hidden((tf.concat(columns, axis=-1) - means) / stds))


def subclassed(features, num_classes):
  """A subclassed model, called with the dict of features."""
  return _Subclassed(features, num_classes)


def killed_on_worker_1(features, num_classes):
  """On worker-1 (TF_CONFIG) the process is SIGKILLed as it starts to build,
  as a pod evicted during set-up; worker-0 builds the model and loses it
  while its variables are created and broadcast."""
  task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
  if task.get("type") == "worker" and task.get("index") == 1:
    os.kill(os.getpid(), signal.SIGKILL)
  return sequential_probabilities(features, num_classes)


def raises(features, num_classes):
  del features, num_classes
  return {}["no such key"]


def not_a_model(features, num_classes):
  del features, num_classes
  return "a model"


def wrong_width(features, num_classes):
  inputs = tfdist.keras_inputs(features)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes + 1)(
      _columns(features, inputs)))


def missing_feature(features, num_classes):
  inputs = {"age": tf.keras.Input(shape=(1,), name="age"),
            **{n: f.keras_input() for n, f in list(features.items())[:1]}}
  x = tf.keras.layers.Concatenate()(list(inputs.values()))
  return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes)(x))
