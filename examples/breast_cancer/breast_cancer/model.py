"""The model: a small network over the 30 measurements of a tumour.

A model function of tfdist's contract: ``build(features, num_outputs)``
gets the records' features (each CSV column is one, a ``numeric`` feature of
shape (1,) with its training mean and standard deviation) and the number of
classes, and returns an uncompiled Keras model with one logit per class.
``tfdist.encoded`` standardises the measurements inside the model with the
training split's statistics, so the export takes raw values. tfdist owns
the optimizer, the loss, the metrics and the training step.
"""

import tensorflow as tf

import tfdist

HIDDEN_UNITS = 16


def build(features, num_outputs):
  inputs = tfdist.keras_inputs(features)  # one input per feature, by name
  x = tfdist.encoded(inputs, features)    # standardised, side by side
  x = tf.keras.layers.Dense(HIDDEN_UNITS, activation="relu")(x)
  logits = tf.keras.layers.Dense(num_outputs)(x)
  return tf.keras.Model(inputs, logits, name="breast_cancer_mlp")
