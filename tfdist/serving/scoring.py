"""What tfdist.serving.predict prints of an export's outputs, by task.

Owns the line of each example and the scores against its labels, by task:

* classification: ``NAME<TAB>CLASS NAME<TAB>PROBABILITY``; ``accuracy``
  (and ``correct``);
* multilabel: ``NAME<TAB>LABELS ON<TAB>PROBABILITIES``;
  ``binary_accuracy``;
* regression: ``NAME<TAB>VALUES``; ``mse``, ``mae`` and ``r2``

(several labels or values comma-separated; ``-`` when no label is on).
Every example is counted once; r2 is averaged over the label columns (each
1 - residual / total sum of squares). numpy only; imports tfdist.data.rows
(its Target).
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np

from tfdist.data import rows as rows_lib


def _class_name(outputs: dict, target: rows_lib.Target, index: int,
                example: int) -> str:
  if "class_names" in outputs:
    return str(outputs["class_names"][example])
  names = target.class_names
  return names[index] if 0 <= index < len(names) else str(index)


def lines(names: Sequence[str], outputs: dict,
          target: rows_lib.Target) -> Iterator[str]:
  """One line per example (see the module docstring)."""
  if target.task == "regression":
    for name, values in zip(names, outputs["values"]):
      yield f"{name}\t{','.join(f'{v:.6g}' for v in values)}"
  elif target.task == "multilabel":
    for name, on, probs in zip(names, outputs["labels"],
                               outputs["probabilities"]):
      labels = [n for n, bit in zip(target.label_names, on) if bit]
      yield (f"{name}\t{','.join(labels) or '-'}\t"
             f"{','.join(f'{p:.4f}' for p in probs)}")
  else:
    for i, (name, index, probs) in enumerate(zip(
        names, outputs["classes"], outputs["probabilities"])):
      yield (f"{name}\t{_class_name(outputs, target, int(index), i)}\t"
             f"{probs[index]:.4f}")


def _r2(values: np.ndarray, truth: np.ndarray) -> Optional[float]:
  """R² averaged over the columns that vary (None when none does)."""
  residual = np.sum((truth - values) ** 2, axis=0)
  total = np.sum((truth - truth.mean(axis=0)) ** 2, axis=0)
  varies = total > 0
  if not np.any(varies):
    return None
  return float(np.mean(1.0 - residual[varies] / total[varies]))


def scores(outputs: dict, truth: np.ndarray,
           target: rows_lib.Target) -> dict:
  """The task's scores of ``outputs`` against ``truth`` (class ids, or
  ``[N, L]`` values or 0/1 labels)."""
  if target.task == "regression":
    values = outputs["values"].astype(np.float64)
    truth = truth.astype(np.float64).reshape(values.shape)
    errors = values - truth
    r2 = _r2(values, truth)
    return {"mse": round(float(np.mean(errors ** 2)), 6),
            "mae": round(float(np.mean(np.abs(errors))), 6),
            "r2": None if r2 is None else round(r2, 6)}
  if target.task == "multilabel":
    agree = outputs["labels"] == truth.reshape(outputs["labels"].shape)
    return {"binary_accuracy": round(float(np.mean(agree)), 5)}
  correct = int(np.sum(outputs["classes"] == truth))
  return {"correct": correct, "accuracy": round(correct / len(truth), 5)}
