"""From a CSV row to the raw values a model takes, and to its label.

Owns what a cell means, the one reading shared by the table converter
(tfdist.data.tables, which writes these values into records) and by
anything that feeds a trained model CSV rows (``tfdist.serving.predict``): so a
row predicts exactly as its record would. A cell is missing when it is
empty or ``NA``, ``N/A``, ``NaN`` or ``null`` (any case): never a string,
never a number. A number is what Python's ``float`` reads, finite. Imports
tfdist.errors and tfdist.data.features; no TensorFlow.

:func:`feature_values` gives, per feature: ``numeric``, a list of floats
(NaN for a missing value of a feature filled with the mean); ``category``
and ``text``, the cell's text, stripped ("" for a missing value of a
feature filled with ``unknown``). :func:`target_value` gives a
classification row its class index, a regression row its floats, a
multilabel row its 0/1 floats.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

from tfdist.data import features as features_lib
from tfdist.errors import ConfigError

MISSING = frozenset({"", "na", "n/a", "nan", "null"})
# How a missing value reads in lines.
MISSING_WORDS = "empty, NA, N/A, NaN or null"


def is_missing(text: str) -> bool:
  """Whether a (stripped) cell holds no value."""
  return text.lower() in MISSING


def number(text: str) -> Optional[float]:
  """The finite number ``text`` is, else None."""
  try:
    value = float(text)
  except ValueError:
    return None
  return value if math.isfinite(value) else None


def canonical(value: float) -> str:
  """A number's class name: ``7`` for 7.0 and for ``007``, else repr."""
  if value.is_integer() and abs(value) < 2**53:
    return str(int(value))
  return repr(value)


@dataclasses.dataclass(frozen=True)
class Target:
  """What a row's label columns mean (a manifest's task and labels).

  Attributes:
    task: classification, regression or multilabel.
    label_names: the label columns.
    class_names: classification: the classes, label i the i-th; when all
      are numbers a cell is read as a number (``7.0`` is class ``7``).
  """
  task: str
  label_names: Tuple[str, ...]
  class_names: Tuple[str, ...] = ()

  @functools.cached_property
  def numeric_classes(self) -> bool:
    return bool(self.class_names) and all(
        number(name) is not None for name in self.class_names)

  @functools.cached_property
  def class_index(self) -> Dict[str, int]:
    return {name: i for i, name in enumerate(self.class_names)}


def _cell(row: Mapping[str, str], column: str, where: str, what: str) -> str:
  if column not in row:
    raise ConfigError(f"{where}: no column {column!r} ({what} reads it); "
                      "give the rows every column the model was trained on")
  return (row[column] or "").strip()


def _text(row, feature: features_lib.Feature, column: str,
          where: str) -> Optional[str]:
  """The cell's text; None for a missing value the feature fills."""
  text = _cell(row, column, where, f"feature {feature.name!r}")
  if not is_missing(text):
    return text
  if not feature.fill:
    raise ConfigError(f"{where}: column {column!r} is missing ({text!r}) and "
                      f"feature {feature.name!r} was written without missing "
                      "values; fill it in")
  return None


def _numbers(row, feature: features_lib.Feature, where: str) -> list:
  values = []
  for column in feature.csv_columns:
    text = _text(row, feature, column, where)
    value = math.nan if text is None else number(text)
    if value is None:
      raise ConfigError(f"{where}: column {column!r} holds numbers (feature "
                        f"{feature.name!r}), not {text!r}; correct the value")
    values.append(value)
  return values


def _string(row, feature: features_lib.Feature, where: str) -> str:
  (column,) = feature.csv_columns
  text = _text(row, feature, column, where)
  return "" if text is None else text


def feature_values(row: Mapping[str, str], features: Sequence,
                   *, where: str) -> Dict[str, object]:
  """``{feature name: raw value}`` of one CSV row (see the module
  docstring); ``where`` (``FILE:LINE``) starts every error line.

  Raises:
    ConfigError: a column missing from the row, a missing value where the
      feature has none, a word where a number belongs, or a feature no CSV
      column makes (an image, an id).
  """
  values = {}
  for feature in features:
    if feature.kind == "numeric":
      values[feature.name] = _numbers(row, feature, where)
    elif feature.kind in ("category", "text"):
      values[feature.name] = _string(row, feature, where)
    else:
      raise ConfigError(f"feature {feature.name!r} is an {feature.kind}, "
                        "which no CSV column holds; give the model records "
                        "instead of rows")
  return values


def target_value(row: Mapping[str, str], target: Target, *, where: str):
  """The label of one CSV row: a class index, or a list of floats.

  Raises:
    ConfigError: a missing label, a class the target does not have, a word
      where a number belongs, a multilabel value other than 0 or 1.
  """
  texts = [_cell(row, column, where, "the label")
           for column in target.label_names]
  for column, text in zip(target.label_names, texts):
    if is_missing(text):
      raise ConfigError(f"{where}: the label {column!r} is missing "
                        f"({text!r}); fill it in or remove the row")
  if target.task == "classification":
    (text,) = texts
    value = number(text) if target.numeric_classes else None
    name = canonical(value) if value is not None else text
    if name not in target.class_index:
      shown = ", ".join(target.class_names[:10])
      raise ConfigError(f"{where}: label {text!r} is not one of the "
                        f"{len(target.class_names)} classes ({shown}"
                        f"{', ...' if len(target.class_names) > 10 else ''})")
    return target.class_index[name]
  values = []
  for column, text in zip(target.label_names, texts):
    value = number(text)
    if value is None or (target.task == "multilabel"
                         and value not in (0.0, 1.0)):
      wanted = "0 or 1" if target.task == "multilabel" else "a number"
      raise ConfigError(f"{where}: the label {column!r} is {text!r}, not "
                        f"{wanted} ({target.task})")
    values.append(value)
  return values
