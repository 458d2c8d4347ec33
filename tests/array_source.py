"""A real table held in numpy arrays, behind the source interface of the
issue-28 design (inputs a dict by feature name, ``task``, ``num_outputs``,
weights as a batch's third element): the regression, multi-label and
weighted tests train through it on the vendored tables of tests/data.

The table's numeric columns are one ``numeric`` feature, ``columns``, with
the training split's mean and standard deviation; the labels are the
columns named, as the task wants them (classification: class indices of
the sorted distinct values; otherwise floats, one column each).
"""

import contextlib
import csv
import dataclasses
import os
from typing import Optional

import numpy as np

from tfdist.features import Feature

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@dataclasses.dataclass(frozen=True)
class ArraySource:
  """Train and test arrays of one table."""
  name: str
  task: str
  features: dict
  train: tuple  # (inputs {name: array}, labels, weights or None)
  test: tuple  # (inputs, labels)
  label_names: list
  class_names: list

  @property
  def num_outputs(self) -> int:
    if self.task == "classification":
      return len(self.class_names)
    return self.train[1].shape[1]

  num_classes = num_outputs

  @property
  def has_weights(self) -> bool:
    return self.train[2] is not None

  @property
  def train_examples(self) -> int:
    return len(self.train[1])

  @property
  def test_examples(self) -> int:
    return len(self.test[1])

  def train_dataset_fn(self, global_batch_size: int, *,
                       seed: Optional[int] = 0, **unused):
    """``dataset_fn(input_context)``: each input pipeline its share of the
    examples, shuffled, repeated, in batches of its replicas' size."""
    del unused
    parts = [p for p in self.train if p is not None]

    def dataset_fn(context):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      batch = context.get_per_replica_batch_size(global_batch_size)
      shard = slice(context.input_pipeline_id, None,
                    context.num_input_pipelines)
      sliced = tuple(tf.nest.map_structure(lambda a: a[shard], p)
                     for p in parts)
      pipeline_seed = None if seed is None else seed + context.input_pipeline_id
      return (tf.data.Dataset.from_tensor_slices(sliced)
              .shuffle(len(sliced[1]), seed=pipeline_seed)
              .repeat().batch(batch, drop_remainder=True))

    return dataset_fn

  def test_batches(self, batch_size: int):
    inputs, labels = self.test
    for start in range(0, len(labels), batch_size):
      rows = slice(start, start + batch_size)
      yield {k: v[rows] for k, v in inputs.items()}, labels[rows]

  def reading(self):
    return contextlib.nullcontext()


def _read(path: str):
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def table(file: str, *, labels: list, task: str, test_fraction: float = 0.25,
          weights=None, seed: int = 0) -> ArraySource:
  """The table ``tests/data/FILE``: every column but ``labels`` an input.

  ``labels``: ``[(column, function of its string value or None), ...]``.
  ``weights``: a function of a row's label array giving its training
  weight, or None.
  """
  header, rows = _read(os.path.join(DATA, file))
  label_columns = [header.index(name) for name, _ in labels]
  inputs = np.array([[float(r[i]) for i in range(len(header))
                      if i not in label_columns] for r in rows], np.float32)
  raw = [[r[i] for i in label_columns] for r in rows]
  class_names = []
  if task == "classification":
    class_names = sorted({r[0] for r in raw})
    y = np.array([class_names.index(r[0]) for r in raw], np.int64)
  else:
    y = np.array([[float(fn(v) if fn else v) for v, (_, fn)
                   in zip(r, labels)] for r in raw], np.float32)
  order = np.random.default_rng(seed).permutation(len(rows))
  test = order[:int(len(rows) * test_fraction)]
  train = order[len(test):]
  mean, std = inputs[train].mean(axis=0), inputs[train].std(axis=0)
  feature = Feature(name="columns", kind="numeric", shape=(inputs.shape[1],),
                    mean=tuple(map(float, mean)), std=tuple(map(float, std)))
  w = (None if weights is None else
       np.array([weights(v) for v in y[train]], np.float32))
  return ArraySource(
      name=file, task=task, features={"columns": feature},
      train=({"columns": inputs[train]}, y[train], w),
      test=({"columns": inputs[test]}, y[test]),
      label_names=[name for name, _ in labels], class_names=class_names)
