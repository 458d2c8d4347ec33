"""The model: a small network over the 30 measurements of a tumour.

A model function of tfdist's contract: ``build(features, num_classes)``
gets the records' features (each CSV column is one, a ``numeric`` feature of
shape (1,) with its training mean and standard deviation) and returns an
uncompiled Keras model with one logit per class. tfdist owns the optimizer,
the loss, the metrics and the training step.
"""

import tensorflow as tf

import tfdist

HIDDEN_UNITS = 16


def build(features, num_classes):
  inputs = tfdist.keras_inputs(features)  # one input per feature, by name
  numeric = [f for f in features.values() if f.kind == "numeric"]
  x = tf.keras.layers.Concatenate()([inputs[f.name] for f in numeric])
  # Standardised with the training split's statistics, from the manifest.
  x = tf.keras.layers.Normalization(
      mean=[f.mean[0] for f in numeric],
      variance=[f.std[0] ** 2 for f in numeric])(x)
  x = tf.keras.layers.Dense(HIDDEN_UNITS, activation="relu")(x)
  logits = tf.keras.layers.Dense(num_classes)(x)
  return tf.keras.Model(inputs, logits, name="breast_cancer_mlp")
