"""Model functions a user could write, good and broken, for the tests of the
model-function contract (tfdist.model.contract): each is named on the command
line as --model=tests.user_models:NAME."""

import json
import os
import signal

import tensorflow as tf

import tfdist


def _network(features, inputs, num_outputs, *, units=8, activation=None):
  """``inputs`` (some or all of tfdist.keras_inputs) through tfdist.encoded,
  a hidden layer of ``units`` and an output layer of ``activation``."""
  x = tf.keras.layers.Dense(units, activation="relu")(
      tfdist.encoded(inputs, features))
  return tf.keras.Model(inputs, tf.keras.layers.Dense(
      num_outputs, activation=activation)(x))


def encoded(features, num_outputs, *, activation=None):
  """Every feature, of any kind, through tfdist.encoded (the preprocessing
  layers built from the data's statistics and vocabularies), then a hidden
  layer; ``activation`` of the last layer (None: logits)."""
  return _network(features, tfdist.keras_inputs(features), num_outputs,
                  activation=activation)


def functional(features, num_classes):
  """Functional, every feature an input."""
  return encoded(features, num_classes)


def regressor(features, num_outputs):
  """A small regression network: one value per label column."""
  return _network(features, tfdist.keras_inputs(features), num_outputs,
                  units=16)


def multilabel_sigmoid(features, num_outputs):
  """Independent yes/no labels, each its own sigmoid: probabilities."""
  return _network(features, tfdist.keras_inputs(features), num_outputs,
                  units=16, activation="sigmoid")


def _at_least_1000(labels, logits):
  """A loss that cannot be below 1000: cross-entropy plus 1000."""
  return 1000.0 + tf.keras.losses.sparse_categorical_crossentropy(
      labels, logits, from_logits=True)


def _confidence(labels, logits):
  """A metric of its own: the probability of the predicted class."""
  del labels
  return tf.reduce_max(tf.nn.softmax(logits), axis=-1)


def compiled_own(features, num_outputs):
  """Returned compiled with its own loss (at least 1000), metric and
  optimizer, and with an add_metric of its own."""
  inputs = tfdist.keras_inputs(features)
  x = tf.keras.layers.Dense(8, activation="relu")(
      tfdist.encoded(inputs, features))
  logits = tf.keras.layers.Dense(num_outputs)(x)
  model = tf.keras.Model(inputs, logits)
  model.add_metric(tf.reduce_mean(tf.nn.softmax(logits)[:, -1]),
                   name="mean_last_class")
  model.compile(optimizer=tf.keras.optimizers.Adam(0.02),
                loss=_at_least_1000, metrics=[_confidence])
  return model


def two_columns(features, num_classes):
  """Functional, taking two of the features: it gets those (two of the
  breast-cancer table's most telling measurements)."""
  names = ["worst_radius", "worst_concave_points"]
  inputs = {n: tfdist.keras_inputs(features)[n] for n in names}
  return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes)(
      tfdist.encoded(inputs, features)))


def sequential_probabilities(features, num_classes):
  """Sequential on one image, ending in a softmax: probabilities."""
  (image,) = features.values()
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=image.shape),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(num_classes, activation="softmax"),
  ])


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
      tfdist.encoded(inputs, features)))


def missing_feature(features, num_classes):
  inputs = {"age": tf.keras.Input(shape=(1,), name="age"),
            **{n: f.keras_input() for n, f in list(features.items())[:1]}}
  x = tf.keras.layers.Concatenate()(list(inputs.values()))
  return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes)(x))


def raises_in_layer(features, num_outputs):
  """A mistake inside a Keras layer: the Lambda indexes a tensor by name."""
  inputs = tfdist.keras_inputs(features)
  x = tf.keras.layers.Lambda(lambda t: t["radius"])(
      tfdist.encoded(inputs, features))
  return tf.keras.Model(inputs, tf.keras.layers.Dense(num_outputs)(x))


def softmax_with_logits_loss(features, num_outputs):
  """Ends in a softmax, but compiled with a loss that takes logits."""
  inputs = tfdist.keras_inputs(features)
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(
      num_outputs, activation="softmax")(tfdist.encoded(inputs, features)))
  model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True))
  return model


def sigmoid_classifier(features, num_outputs):
  """A sigmoid per class: not probabilities of exclusive classes."""
  inputs = tfdist.keras_inputs(features)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(
      num_outputs, activation="sigmoid")(tfdist.encoded(inputs, features)))
