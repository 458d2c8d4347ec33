"""Measures a trained model: test accuracy and a digest of its weights.

Owns: the one accuracy computation every task shares (the trainer's final
figure, the evaluator task, the plain-Keras baseline) and the weights digest
that proves replicas bit-identical. Imports tfdist.data only (and TensorFlow
lazily), so none of its users depends on the training loop.
"""

from __future__ import annotations

import hashlib

import numpy as np

from tfdist import data as data_lib


def evaluate(model, split: data_lib.Split, *, batch_size: int) -> float:
  """Top-1 accuracy of ``model`` on a split, computed in this process.

  A plain forward pass outside the strategy: the same code reads mirrored
  variables locally and ps variables over RPC, so all three strategies are
  measured identically, on every example exactly once.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  correct = 0
  for start in range(0, len(split), batch_size):
    images = tf.cast(split.images[start:start + batch_size], tf.float32) / 255.0
    logits = model(images, training=False)
    predicted = np.argmax(logits.numpy(), axis=-1)
    correct += int(np.sum(predicted == split.labels[start:start + batch_size]))
  return correct / len(split)


def weights_digest(model) -> str:
  """SHA-256 of all weights: equal digests mean bit-identical replicas."""
  digest = hashlib.sha256()
  for weight in model.get_weights():
    digest.update(np.ascontiguousarray(weight).tobytes())
  return digest.hexdigest()[:16]
