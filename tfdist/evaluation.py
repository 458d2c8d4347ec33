"""Measures a trained model: test accuracy and a digest of its weights.

Owns: the one accuracy computation every task shares (the trainer's final
figure, the evaluator task, the plain-Keras baseline), the weights digest
that proves replicas bit-identical and the optimizer's digest that proves a
resume exact. Imports numpy only (and TensorFlow
lazily), so none of its users depends on the training loop.
"""

from __future__ import annotations

import hashlib

import numpy as np


def accuracy(model, batches) -> float:
  """Top-1 accuracy of ``model`` over ``(images, labels)`` batches.

  A plain forward pass outside the strategy: the same code reads mirrored
  variables locally and ps variables over RPC, so all three strategies are
  measured identically, on every example the batches hold exactly once
  (a source's test_batches: tfdist.data.sources).
  """
  correct = total = 0
  for images, labels in batches:
    logits = model(images, training=False)
    predicted = np.argmax(logits.numpy(), axis=-1)
    labels = np.asarray(labels)
    correct += int(np.sum(predicted == labels))
    total += len(labels)
  if not total:
    raise ValueError("no test example to evaluate")
  return correct / total


def weights_digest(model) -> str:
  """SHA-256 of all weights: equal digests mean bit-identical replicas.

  A variable sharded over ps tasks digests as its shards in order: the
  bytes of the whole variable (split along its first axis).
  """
  digest = hashlib.sha256()
  for weight in model.get_weights():
    digest.update(np.ascontiguousarray(weight).tobytes())
  return digest.hexdigest()[:16]


def optimizer_digest(model) -> str:
  """SHA-256 of the optimizer's variables (its step counter and slots, a
  sharded slot's shards in order): with :func:`weights_digest`, the whole
  training state a checkpoint holds."""
  digest = hashlib.sha256()
  for variable in model.optimizer.variables:
    for part in getattr(variable, "variables", None) or [variable]:
      digest.update(np.ascontiguousarray(part.numpy()).tobytes())
  return digest.hexdigest()[:16]
