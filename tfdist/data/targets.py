"""What a table's label columns ask the model to predict, and the weights.

Owns the write command's column flags (:class:`Choices`: ``--label``,
``--task``, ``--columns``, ``--drop``, ``--weight``, ``--missing``), their
checks against the header, the label and weight cells of every row, and
the task, said in one line (:func:`decide`):

* several label columns are ``multilabel`` when every value is 0 or 1,
  else ``regression`` (one output per column);
* one label column of numbers with a fraction is ``regression``;
* one label column of whole numbers is ``classification``, its classes the
  distinct values in numeric order (``7`` and ``007`` are one class), unless
  it has more than AMBIGUOUS_CLASSES distinct values and more than one per
  ROWS_PER_CLASS training rows: a quantity as likely as classes, so
  ``--task`` must say which;
* one label column of words is ``classification``, its classes sorted;
* ``--task`` overrides it where the values allow.

A classification needs two classes or more, and every test class in the
training split. A label is never a feature: a label column named in
``--columns`` or ``--drop`` is a ConfigError. The weight column holds a
number >= 0 in every row. Imports tfdist.errors and tfdist.data (columns,
csv_files, manifest, rows); no TensorFlow.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Dict, List, Sequence, Tuple

from tfdist.data import columns as columns_lib
from tfdist.data import csv_files
from tfdist.data import manifest as manifest_lib
from tfdist.data import rows as rows_lib
from tfdist.errors import ConfigError

AMBIGUOUS_CLASSES = 20
ROWS_PER_CLASS = 20
MISSING_CHOICES = ("error", "fill")


def _names(text: str) -> Tuple[str, ...]:
  return tuple(p.strip() for p in (text or "").split(",") if p.strip())


@dataclasses.dataclass(frozen=True)
class Choices:
  """What the write command's flags say of a table's columns."""
  labels: Tuple[str, ...]
  task: str = ""
  columns: Dict[str, str] = dataclasses.field(default_factory=dict)
  weight: str = ""
  missing: str = "error"

  @classmethod
  def from_flags(cls, *, label: str, task: str = "", columns: str = "",
                 drop: str = "", weight: str = "",
                 missing: str = "error") -> "Choices":
    if task and task not in manifest_lib.TASKS:
      raise ConfigError(f"--task={task}: use one of "
                        f"{', '.join(manifest_lib.TASKS)}")
    if missing not in MISSING_CHOICES:
      raise ConfigError(f"--missing={missing}: use one of "
                        f"{', '.join(MISSING_CHOICES)}")
    chosen = columns_lib.parse_columns(columns)
    for name in _names(drop):
      if chosen.get(name, "drop") != "drop":
        raise ConfigError(f"--drop={drop}: --columns says {name}:"
                          f"{chosen[name]}; name it in one of them")
      chosen[name] = "drop"
    labels = _names(label)
    if not labels:
      raise ConfigError("a table needs --label=COLUMN[,COLUMN...]: the "
                        "column(s) to predict")
    if len(set(labels)) != len(labels):
      raise ConfigError(f"--label={label}: a column is named twice")
    return cls(labels, task, chosen, weight.strip(), missing)

  def check(self, header: Sequence[str], path: str) -> None:
    """ConfigError for a column the header lacks, or a label or weight
    that would also be a feature."""
    named = [("label", n) for n in self.labels] + [
        ("columns/--drop" if kind == "drop" else "columns", n)
        for n, kind in self.columns.items()] + (
            [("weight", self.weight)] if self.weight else [])
    for flag, name in named:
      if name not in header:
        raise ConfigError(f"--{flag}: {path} has no column {name!r} (it has "
                          f"{', '.join(header)})")
    for name in (*self.labels, self.weight):
      if name in self.columns:
        what = "the weight" if name == self.weight else "a label"
        raise ConfigError(f"--columns/--drop name {name!r}, which is {what} "
                          "column: it is never a feature; leave it out")
    if self.weight in self.labels:
      raise ConfigError(f"--weight={self.weight} is a label column; weight "
                        "the examples by another column")

  def feature_columns(self, header: Sequence[str]) -> List[str]:
    """The columns that may become features (not labels, weight or
    dropped), in the header's order."""
    return [name for name in header
            if name not in self.labels and name != self.weight
            and self.columns.get(name) != "drop"]


@dataclasses.dataclass
class LabelScan:
  """The values one label column holds."""
  train: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  test: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  where: Dict[str, str] = dataclasses.field(default_factory=dict)

  def add(self, text: str, *, split: str, where: str) -> None:
    getattr(self, split)[text] += 1
    first = self.where.get(text)
    if first is None or (csv_files.line_order(where)
                         < csv_files.line_order(first)):
      self.where[text] = where

  def texts(self):
    return list(self.train) + [t for t in self.test if t not in self.train]

  def first_not(self, test) -> Tuple[str, str]:
    """``(FILE:LINE, text)`` of the first value ``test`` refuses, or
    ("", "")."""
    bad = [(self.where[t], t) for t in self.texts() if not test(t)]
    return (min(bad, key=lambda pair: csv_files.line_order(pair[0])) if bad
            else ("", ""))


def visitor(choices: Choices, scans: Dict[str, LabelScan]):
  """``visit(split, where, row)`` for columns.scan: every label cell into
  ``scans``, every weight checked; missing labels are ConfigErrors."""

  def visit(split: str, where: str, row: dict) -> None:
    for column in choices.labels:
      text = row[column].strip()
      if rows_lib.is_missing(text):
        raise ConfigError(f"{where}: the label {column!r} is missing "
                          f"({text!r}); fill it in or remove the row")
      scans[column].add(text, split=split, where=where)
    if choices.weight:
      text = row[choices.weight].strip()
      value = rows_lib.number(text)
      if value is None or value < 0:
        raise ConfigError(f"{where}: the weight {choices.weight!r} is "
                          f"{text!r}, not a number >= 0; correct it")

  return visit


def _is_number(text: str) -> bool:
  return rows_lib.number(text) is not None


def _is_binary(text: str) -> bool:
  return rows_lib.number(text) in (0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Decision:
  """The task, what a row's labels mean, the classes' training counts and
  the line that says so."""
  target: rows_lib.Target
  class_counts: Dict[str, int]
  line: str


def _require(scans: Dict[str, LabelScan], test, wanted: str, task: str):
  for column, scan in scans.items():
    where, text = scan.first_not(test)
    if where:
      raise ConfigError(f"{where}: the label {column!r} is {text!r}, not "
                        f"{wanted}; --task={task} needs {wanted} in every "
                        "row")


def decide(choices: Choices, scans: Dict[str, LabelScan], *,
           training_rows: int) -> Decision:
  """The task of the labels (see the module docstring)."""
  labels = choices.labels
  quoted = ", ".join(repr(n) for n in labels)
  if len(labels) > 1:
    task = choices.task or ("multilabel" if all(
        not s.first_not(_is_binary)[0] for s in scans.values())
                            else "regression")
    if task == "classification":
      raise ConfigError(f"--task=classification takes one label column, not "
                        f"{len(labels)} ({quoted}); several are --task="
                        "regression or multilabel")
  else:
    task = choices.task or _single_task(labels[0], scans[labels[0]],
                                        training_rows)
  if task == "classification":
    return _classification(labels[0], scans[labels[0]])
  binary = task == "multilabel"
  _require(scans, _is_binary if binary else _is_number,
           "0 or 1" if binary else "a number", task)
  what = "0 and 1" if binary else "numbers"
  return Decision(rows_lib.Target(task, labels,
                                  tuple(labels) if binary else ()), {},
                  f"label{'s' if len(labels) > 1 else ''} {quoted}: {what} "
                  f"-> {task}, {len(labels)} output"
                  f"{'s' if len(labels) > 1 else ''}")


def _single_task(column: str, scan: LabelScan, training_rows: int) -> str:
  texts = scan.texts()
  if not all(map(_is_number, texts)):
    return "classification"
  values = [rows_lib.number(t) for t in texts]
  if not all(v.is_integer() for v in values):
    return "regression"
  distinct = len({rows_lib.canonical(v) for v in values})
  if (distinct > AMBIGUOUS_CLASSES
      and distinct * ROWS_PER_CLASS > training_rows):
    raise ConfigError(f"--label={column}: {distinct} distinct whole numbers "
                      f"in {training_rows} training rows may be classes or a "
                      "quantity; pass --task=regression (predict the number) "
                      "or --task=classification (one class per value)")
  return "classification"


def _classification(column: str, scan: LabelScan) -> Decision:
  numeric = all(map(_is_number, scan.texts()))

  def name(text):
    return rows_lib.canonical(rows_lib.number(text)) if numeric else text

  counts = collections.Counter()
  for text, n in scan.train.items():
    counts[name(text)] += n
  unknown = [t for t in scan.test if name(t) not in counts]
  if unknown:
    raise ConfigError(f"{scan.where[unknown[0]]}: label {unknown[0]!r} is no "
                      "class of the training split; every test class must "
                      "appear in training")
  classes = sorted(counts, key=(lambda c: float(c)) if numeric else None)
  if len(classes) < 2:
    raise ConfigError(f"--label={column}: the training split has one class "
                      f"({classes[0]!r}); a classifier needs two or more")
  shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
  kind = ("" if not numeric else "whole numbers, " if all(
      float(c).is_integer() for c in classes) else "numbers, ")
  hint = " (--task=regression to predict the number)" if numeric else ""
  return Decision(rows_lib.Target("classification", (column,),
                                  tuple(classes)),
                  {c: counts[c] for c in classes},
                  f"label {column!r}: {kind}{len(classes)} classes ({shown}) "
                  f"-> classification{hint}")
