"""New CSV rows as an export's serving inputs, read as the training rows were.

Owns reading CSV files for tfdist.predict: each header checked against the
columns the export's description names (tfdist.serving: every feature's
CSV columns; the label columns are optional, and scored when all are
there), each row turned into raw feature values, and its labels into the
model's targets (a class id; values; 0/1 labels). Columns the model does
not read are ignored, in any order. Everything is checked before
TensorFlow starts: a bad file or row is one ConfigError naming the file,
line and column. Imports tfdist.errors, features, serving and
tfdist.data.tables (its CSV reader); no TensorFlow.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from tfdist import features as features_lib
from tfdist import serving
from tfdist.data import tables
from tfdist.errors import ConfigError

# Cells that mean "no value" (tfdist.data.tables reads them so too).
MISSING = ("", "na", "nan", "null")
# MERGE(tables): the converter's own CSV reader, made public there.
_read_rows = tables._read_rows  # pylint: disable=protected-access


@dataclasses.dataclass(frozen=True)
class Rows:
  """Rows read for prediction.

  Attributes:
    names: ``FILE:LINE`` of each row.
    inputs: ``{feature name: array [N, ...]}``, the serving inputs.
    labels: the targets when the files have the label columns, else
      None: class ids (-1 for a class the model does not know), or
      float32 ``[N, L]`` values or 0/1 labels.
    unknown: ``(FILE:LINE, value)`` of labels that are no class of the
      model (classification).
  """
  names: List[str]
  inputs: Dict[str, np.ndarray]
  labels: Optional[np.ndarray]
  unknown: List[Tuple[str, str]]


def _number(text: str, where: str, column: str, what: str) -> float:
  try:
    value = float(text)
  except ValueError:
    value = math.nan
  if not math.isfinite(value):
    raise ConfigError(f"{where}: column {column!r} ({what}) holds {text!r}, "
                      "not a number; fix the row")
  return value


def raw_values(features: features_lib.Features, row: Dict[str, str], *,
               where: str) -> dict:
  """``{feature name: raw value}`` of one CSV row (``{column: cell}``).

  Numbers as floats (a missing cell NaN when the feature fills it with the
  mean inside the model, else a ConfigError), categories and texts as
  their strings.
  """
  # MERGE(tables): the converter's own function that turns a CSV row into
  # raw feature values (design-28.md) replaces this body.
  values = {}
  for name, feature in features.items():
    columns = serving.csv_columns(feature)
    if feature.kind != "numeric":
      values[name] = row[columns[0]].strip()
      continue
    numbers = []
    for column in columns:
      cell = row[column].strip()
      if cell.lower() in MISSING:
        if feature.fill != "mean":
          raise ConfigError(f"{where}: column {column!r} is missing a value, "
                            "and the model was trained with none missing "
                            "there; fill it or remove the row")
        numbers.append(math.nan)
      else:
        numbers.append(_number(cell, where, column, f"feature {name!r}"))
    values[name] = numbers
  return values


def _label(target: serving.Target, row: Dict[str, str], where: str):
  """The row's target: a class id (-1: no class of the model), or floats."""
  if target.task != "classification":
    values = [_number(row[c].strip(), where, c, "a label")
              for c in target.label_names]
    if target.task == "multilabel" and not set(values) <= {0.0, 1.0}:
      raise ConfigError(f"{where}: the label columns "
                        f"{', '.join(target.label_names)} hold {values}; a "
                        "multilabel row holds 0 or 1 in each")
    return values
  (column,) = target.label_names
  value = row[column].strip()
  if value.lower() in MISSING:
    raise ConfigError(f"{where}: column {column!r} (the label) is empty; "
                      "fill it or remove the column from every row")
  ids = {name: i for i, name in enumerate(target.class_names)}
  if value not in ids and value.lstrip("+-").isdigit():
    value = str(int(value))  # 007 is class 7, as the converter reads it
  return ids.get(value, -1)


def _header(path: str, reader) -> Tuple[str, ...]:
  header = next(reader, None)
  if not header:
    raise ConfigError(f"{path}: empty; pass a CSV file with a header row and "
                      "the rows to predict")
  header = tuple(name.strip() for name in header)
  twice = sorted({name for name in header if header.count(name) > 1})
  if twice:
    raise ConfigError(f"{path}:1: column {twice[0]!r} is named twice; give "
                      "every column its own name")
  return header


def _check_columns(path: str, header, description: serving.Description
                   ) -> bool:
  """Whether the file has the label columns; ConfigError for a feature's
  column it lacks, or some label columns without the others."""
  every = [c for columns in description.columns.values() for c in columns]
  for name, columns in description.columns.items():
    for column in columns:
      if column not in header:
        listed = ", ".join(every[:5]) + (f" and {len(every) - 5} more"
                                         if len(every) > 5 else "")
        raise ConfigError(f"{path}: no column {column!r}, which the model "
                          f"reads (feature {name!r}); the model reads "
                          f"{len(every)} columns: {listed}")
  labels = description.target.label_names
  present = [c for c in labels if c in header]
  if present and len(present) != len(labels):
    missing = [c for c in labels if c not in header]
    raise ConfigError(f"{path}: label column {present[0]!r} without "
                      f"{missing[0]!r}; give every label column "
                      f"({', '.join(labels)}) or none")
  return bool(labels) and bool(present)


def _rows(path: str) -> Iterator[Tuple[str, Tuple[str, ...], list]]:
  """``(FILE:LINE, header, fields)`` of every data row of ``path``."""
  try:
    # utf-8-sig: a spreadsheet's byte-order mark is no part of a name.
    with open(path, newline="", encoding="utf-8-sig") as f:
      header = _header(path, csv.reader(f))
  except OSError as e:
    raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None
  except (UnicodeDecodeError, csv.Error):
    header = ()  # the converter's reader below says what is wrong
  for line, fields in _read_rows(path, len(header)):
    yield f"{path}:{line}", header, fields


def read(paths, description: serving.Description) -> Rows:
  """Every row of the CSV files ``paths``, as the export takes them.

  Raises:
    ConfigError: a file without a feature's column, a bad row, or no row;
      the label columns in one file but not another.
  """
  for name, feature in description.features.items():
    if feature.kind not in serving.TABLE_KINDS:
      raise ConfigError(f"the model takes {name!r}, an {feature.kind} "
                        "feature, which no CSV row holds; pass images or "
                        "--records=PATTERN")
  names, values, labels, unknown = [], [], [], []
  scored = set()
  for path in paths:
    checked = None
    for where, header, fields in _rows(path):
      if checked is None:
        checked = _check_columns(path, header, description)
        scored.add(checked)
      row = dict(zip(header, fields))
      names.append(where)
      values.append(raw_values(description.features, row, where=where))
      if checked:
        labels.append(_label(description.target, row, where))
        if labels[-1] == -1:
          unknown.append((where, row[description.target.label_names[0]]))
    if checked is None:
      raise ConfigError(f"{path}: a header and no row; pass the rows to "
                        "predict")
  if len(scored) > 1:
    raise ConfigError(f"{', '.join(paths)}: some files have the label "
                      "columns and some not; score them apart")
  inputs = {name: np.array([v[name] for v in values],
                           dtype=np.float32 if f.kind == "numeric" else object)
            for name, f in description.features.items()}
  truth = None
  if labels:
    truth = np.array(labels, dtype=np.int64 if description.target.task ==
                     "classification" else np.float32)
  return Rows(names, inputs, truth, unknown)
