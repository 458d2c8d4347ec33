"""Models: plain Keras functions, the same under every strategy.

A model function takes ``(input_shape, num_classes)`` and returns an
uncompiled Keras model that outputs logits. It must be called inside
``strategy.scope()`` (the training loop does that), so the strategy decides
where the variables live: mirrored on each replica, or on the ps tasks.
"""

from __future__ import annotations


def softmax_regression(input_shape, num_classes: int):
  """784 -> 10 softmax regression: the model of the Distributed TF talk.

  Returns logits; the loss applies the softmax.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras = tf.keras
  return keras.Sequential([
      keras.layers.InputLayer(input_shape=tuple(input_shape)),
      keras.layers.Flatten(),
      keras.layers.Dense(num_classes, kernel_initializer="zeros",
                         name="logits"),
  ], name="softmax_regression")
