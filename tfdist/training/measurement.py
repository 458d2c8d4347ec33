"""Measures a trained model: its test metrics and a digest of its weights.

Owns: the one test-set measurement every task shares (the trainer's final
figures, the evaluator task, the plain-Keras baseline): the task's own
metrics, computed here over every test example exactly once

==================  ==================================================
task                test metrics
==================  ==================================================
``classification``  ``accuracy`` (top-1)
``regression``      ``mse``, ``mae`` (over every label value), ``r2``
                    (1 - SSres/SStot per label column, averaged)
``multilabel``      ``binary_accuracy`` (each label thresholded: a
                    probability at 0.5, a logit at 0)
==================  ==================================================

plus each metric the model was compiled with (fresh copies: tfdist.model.tasks.
test_copies) and the model's own ``add_metric`` values; and the weights
digest that proves replicas bit-identical and the optimizer's digest that
proves a resume exact. Imports numpy only (and TensorFlow lazily), so none
of its users depends on the training loop.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np


class _TaskSums:
  """The running sums of a task's own test metrics (float64)."""

  def __init__(self, task: str, outputs: str):
    self.task = task
    self.threshold = 0.0 if outputs == "logits" else 0.5
    self.examples = 0
    self.sums = {}

  def _add(self, name: str, value) -> None:
    self.sums[name] = self.sums.get(name, 0.0) + value

  def add(self, labels: np.ndarray, outputs: np.ndarray) -> None:
    self.examples += len(outputs)
    if self.task == "classification":
      self._add("correct", np.sum(np.argmax(outputs, axis=-1)
                                  == labels.reshape(-1)))
      return
    labels = labels.reshape(outputs.shape).astype(np.float64)
    if self.task == "multilabel":
      self._add("correct", np.sum((outputs > self.threshold)
                                  == (labels > 0.5)))
      return
    error = outputs - labels
    self._add("squared", np.sum(error ** 2))
    self._add("absolute", np.sum(np.abs(error)))
    # Per label column: its residual and total sums of squares.
    self._add("column_squared", np.sum(error ** 2, axis=0))
    self._add("column_sum", np.sum(labels, axis=0))
    self._add("column_sum2", np.sum(labels ** 2, axis=0))

  def result(self, width: int) -> dict:
    if not self.examples:
      raise ValueError("no test example to evaluate")
    values = self.examples * width
    if self.task == "classification":
      return {"accuracy": self.sums["correct"] / self.examples}
    if self.task == "multilabel":
      return {"binary_accuracy": self.sums["correct"] / values}
    s = self.sums
    total = s["column_sum2"] - s["column_sum"] ** 2 / self.examples
    # A constant label column has no variance to explain: R2 undefined.
    r2 = (float(np.mean(1.0 - s["column_squared"] / total))
          if np.all(total > 0) else None)
    return {"mse": s["squared"] / values, "mae": s["absolute"] / values,
            "r2": r2}


def test_metrics(model, batches, *, task: str = "classification",
                 outputs: str = "logits", metrics: Sequence = ()) -> dict:
  """``{name: value}`` of ``model`` over ``(inputs, labels)`` batches.

  A plain forward pass outside any strategy (call it with a plain copy of the
  trained model: tfdist.training.sharding.plain_copy), on every example the
  batches hold exactly once (a source's test_batches: tfdist.data.sources).
  ``metrics``: fresh tf.keras metric objects, updated with the labels and
  the outputs; the model's own ``add_metric`` values are read after.
  Returns the task's own metrics first; a metric of the same name as one
  of them does not replace it.
  """
  sums = _TaskSums(task, outputs)
  own = _own_metrics(model)
  for metric in [*metrics, *own]:
    metric.reset_state()
  width = 0
  for inputs, labels in batches:
    scores = model(inputs, training=False)
    for metric in metrics:
      metric.update_state(labels, scores)
    scores = np.asarray(scores, dtype=np.float64)
    width = scores.shape[-1]
    sums.add(np.asarray(labels), scores)
  result = sums.result(width)
  for metric in [*metrics, *own]:
    value = metric.result()
    values = value if isinstance(value, dict) else {metric.name: value}
    for name, number in values.items():
      result.setdefault(name, float(np.asarray(number)))
  return result


def _own_metrics(model) -> list:
  """The model's ``add_metric`` metrics (not its compiled ones)."""
  compiled = {id(m) for container in (getattr(model, "compiled_loss", None),
                                      getattr(model, "compiled_metrics", None))
              if container is not None for m in container.metrics}
  return [m for m in model.metrics if id(m) not in compiled]


def rounded(metrics: dict, digits: int = 5) -> dict:
  """``metrics`` with each value rounded (None stays None)."""
  return {k: None if v is None else round(float(v), digits)
          for k, v in metrics.items()}


def accuracy(model, batches) -> float:
  """Top-1 accuracy of ``model`` over ``(inputs, labels)`` batches (a
  classifier's test metric, see :func:`test_metrics`)."""
  return test_metrics(model, batches)["accuracy"]


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
