"""The model: a small network over a patient's ten measurements.

A model function of tfdist's contract: ``build(features, num_outputs)``
gets the records' features (age, sex, bmi and bp, a ``numeric`` feature of
one value each, and the six blood serum measurements s1 .. s6 grouped into
one ``numeric`` feature ``s`` of six values, each column with its training
mean and standard deviation) and the number of outputs (one: the label
column ``progression``), and returns an uncompiled Keras model that outputs
the predicted progression. ``tfdist.encoded`` standardises the measurements
inside the model with the training split's statistics, so the export takes
raw values. tfdist owns the training step; the task (regression) gives the
loss, mean squared error; train.py adds a metric.
"""

import tensorflow as tf

import tfdist

HIDDEN_UNITS = 16


def build(features, num_outputs):
  inputs = tfdist.keras_inputs(features)  # one input per feature, by name
  x = tfdist.encoded(inputs, features)    # standardised, side by side
  x = tf.keras.layers.Dense(HIDDEN_UNITS, activation="relu")(x)
  progression = tf.keras.layers.Dense(num_outputs)(x)
  return tf.keras.Model(inputs, progression, name="diabetes_mlp")
