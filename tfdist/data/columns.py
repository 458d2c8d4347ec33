"""What each column of a table becomes: its kind, statistics and name.

Owns the first pass over a table's rows (every cell of every row checked,
before anything is written or TensorFlow starts) and what it decides:

* a column whose values are numbers is ``numeric``; a word among them is
  one ConfigError naming its line and value (a column of words with a few
  numbers among them is read as words);
* a column of words is ``text`` when its training values average at least
  TEXT_WORDS words, else a ``category``;
* ``--columns=NAME:KIND`` (number, category, text, drop) and ``--drop``
  override that;
* missing cells (tfdist.data.rows) are one ConfigError naming the column,
  how many and the first line, unless ``--missing=fill``: a number is then
  filled with the training mean inside the model, a string is unknown;
* three or more numeric columns named PREFIX + a number (``pixel0`` ..
  ``pixel63``, ``s1`` .. ``s6``) become one numeric feature of that many
  values named after the prefix, unless ``--columns`` names them;
* a column's feature name is the column's, with spaces and ASCII
  punctuation made ``_`` (``c_`` before a leading digit or ``_``); a name
  with another character, or two columns that end up with one name, are a
  ConfigError;
* the mean and standard deviation of every numeric column over the
  training split, in float64 (Welford's running sums), as computed.

The label and weight columns are tfdist.data.targets'. Imports tfdist.errors
and tfdist.data (csv_files, rows); no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional, Tuple

from tfdist.data import csv_files
from tfdist.data import rows as rows_lib
from tfdist.errors import ConfigError

# --columns=NAME:KIND -> the feature kind (None: the column is dropped).
COLUMN_KINDS = {"number": "numeric", "category": "category", "text": "text",
                "drop": None}
# A column of words whose training values average this many words is text.
TEXT_WORDS = 3.0
# Numeric columns of one prefix that become one feature: at least this many.
GROUP_MIN = 3
_GROUPED = re.compile(r"(.*?\D)(\d+)")


def parse_columns(text: str) -> Dict[str, str]:
  """``--columns=NAME:KIND,...`` as ``{column: kind}`` (KIND as written)."""
  chosen = {}
  for part in filter(None, (p.strip() for p in (text or "").split(","))):
    name, _, kind = part.rpartition(":")
    if not name or kind not in COLUMN_KINDS:
      raise ConfigError(f"--columns={text}: {part!r} is not NAME:KIND, KIND "
                        f"one of {', '.join(COLUMN_KINDS)}")
    if name.strip() in chosen:
      raise ConfigError(f"--columns={text}: {name.strip()!r} is named twice")
    chosen[name.strip()] = kind
  return chosen


@dataclasses.dataclass
class Scan:
  """What the first pass learns of one column."""
  missing: int = 0
  first_missing: str = ""  # FILE:LINE
  numbers: int = 0
  words: int = 0
  first_word: Tuple[str, str] = ("", "")  # (FILE:LINE, the value)
  # Over the training split: the numbers' running mean and sum of squared
  # deviations (Welford), and the words per value of the other cells.
  count: int = 0
  mean: float = 0.0
  squares: float = 0.0
  word_cells: int = 0
  word_count: int = 0

  def add(self, text: str, *, training: bool, where: str) -> None:
    if rows_lib.is_missing(text):
      self.missing += 1
      self.first_missing = self.first_missing or where
      return
    value = rows_lib.number(text)
    if value is None:
      self.words += 1
      self.first_word = self.first_word if self.first_word[0] else (where,
                                                                    text)
      if training:
        self.word_cells += 1
        self.word_count += len(text.split())
      return
    self.numbers += 1
    if training:
      self.count += 1
      delta = value - self.mean
      self.mean += delta / self.count
      self.squares += delta * (value - self.mean)

  @property
  def std(self) -> float:
    return math.sqrt(self.squares / self.count) if self.count else 0.0

  @property
  def mean_words(self) -> float:
    """Words per training cell that is not a number."""
    return self.word_count / max(1, self.word_cells)


def scan(table: csv_files.Table, columns: List[str], visit=None
         ) -> Dict[str, Scan]:
  """One pass over both splits: every cell of ``columns`` added to its
  Scan; ``visit(split, where, row)`` sees every row too (the labels)."""
  scans = {name: Scan() for name in columns}
  for split in ("train", "test"):
    for where, row in csv_files.rows(table, split):
      if visit is not None:
        visit(split, where, row)
      for name, column in scans.items():
        column.add(row[name].strip(), training=split == "train", where=where)
  return scans


def _stray_word(name: str, column: Scan) -> ConfigError:
  where, text = column.first_word
  return ConfigError(f"{where}: column {name!r} holds numbers, but this row "
                     f"has {text!r}; correct it, write a missing value as NA, "
                     f"or read the column as words with --columns={name}:"
                     "category")


def kind_of(name: str, column: Scan, chosen: Optional[str], rows: int) -> str:
  """The feature kind of a column (None: dropped); ConfigError for a word
  among numbers or a column without values."""
  if chosen is not None:
    kind = COLUMN_KINDS[chosen]
    if kind == "numeric" and column.words:
      raise _stray_word(name, column)
  elif column.numbers and column.numbers >= column.words:
    if column.words:
      raise _stray_word(name, column)
    kind = "numeric"
  elif column.words:
    kind = "text" if column.mean_words >= TEXT_WORDS else "category"
  else:
    kind = "empty"
  values = column.count + (0 if kind == "numeric" else column.word_cells)
  if kind is not None and not values:
    raise ConfigError(f"column {name!r} has no value in the training split's "
                      f"rows ({rows} in all); drop it with --drop={name}")
  return kind


def check_missing(name: str, column: Scan, *, fill: bool) -> None:
  """ConfigError for missing cells, unless they are to be filled."""
  if column.missing and not fill:
    raise ConfigError(
        f"column {name!r} has {column.missing} missing value"
        f"{'s' if column.missing > 1 else ''} ({rows_lib.MISSING_WORDS}), "
        f"the first at {column.first_missing}; fill them in, remove those "
        "rows, or pass --missing=fill (numbers: the training mean; "
        "categories and text: unknown)")


def feature_name(column: str) -> str:
  """A column's feature name: ASCII letters, digits and ``_``."""
  other = list(dict.fromkeys(c for c in column if not c.isascii()))
  if other:
    raise ConfigError(f"column {column!r}: a feature name is ASCII (it names "
                      f"a serving input), and {''.join(other)!r} is not; "
                      "rename the column in the header, or drop it with "
                      f"--drop={column}")
  name = re.sub(r"\W", "_", column.strip())
  return name if name[:1].isalpha() else f"c_{name}"


@dataclasses.dataclass(frozen=True)
class Planned:
  """One feature to write: its name, kind, CSV columns and statistics."""
  name: str
  kind: str
  columns: Tuple[str, ...]
  mean: Tuple[float, ...] = ()
  std: Tuple[float, ...] = ()
  fill: str = ""
  words: float = 0.0  # text: the training values' mean words

  def describe(self) -> str:
    """How its column(s) read: ``column 'a'`` or ``columns 'p0' .. 'p63'
    (64)``."""
    if len(self.columns) == 1:
      return f"column {self.columns[0]!r}"
    return (f"columns {self.columns[0]!r} .. {self.columns[-1]!r} "
            f"({len(self.columns)})")


def _groups(kinds: Dict[str, str], chosen: Dict[str, str]) -> List[tuple]:
  """``(name, [columns])`` in the header's order: GROUP_MIN or more
  inferred numeric columns named prefix + number under the prefix, every
  other column alone under its own name."""
  by_prefix = {}
  for name, kind in kinds.items():
    found = _GROUPED.fullmatch(name)
    if kind == "numeric" and name not in chosen and found and (
        found.group(1).rstrip(" _-.")):
      by_prefix.setdefault(found.group(1), []).append(name)
  grouped = {prefix: names for prefix, names in by_prefix.items()
             if len(names) >= GROUP_MIN}
  members = {name for names in grouped.values() for name in names}
  plan, done = [], set()
  for name in kinds:
    if name not in members:
      plan.append((name, [name]))
      continue
    prefix = next(p for p, names in grouped.items() if name in names)
    if prefix not in done:
      done.add(prefix)
      plan.append((prefix.rstrip(" _-."), grouped[prefix]))
  return plan


def plan_features(scans: Dict[str, Scan], chosen: Dict[str, str], *,
                  fill: bool, rows: int) -> List[Planned]:
  """The features of the scanned columns (those not dropped), in the
  header's order; ConfigError for a column that cannot be one."""
  kinds = {}
  for name, column in scans.items():
    kind = kind_of(name, column, chosen.get(name), rows)
    if kind is not None:
      check_missing(name, column, fill=fill)
      kinds[name] = kind
  planned, origin = [], {}
  for name, members in _groups(kinds, chosen):
    feature = feature_name(name)
    if feature in origin:
      raise ConfigError(f"{origin[feature]} and column(s) {members[0]!r} "
                        f"both become feature {feature!r}; rename one, or "
                        "drop one with --drop")
    origin[feature] = f"column(s) {members[0]!r}"
    planned.append(_planned(feature, kinds[members[0]],
                            [scans[m] for m in members], members, fill=fill))
  return planned


def _planned(name: str, kind: str, scans: List[Scan], members: List[str], *,
             fill: bool) -> Planned:
  missing = any(column.missing for column in scans)
  if kind == "numeric":
    return Planned(name, kind, tuple(members),
                   mean=tuple(c.mean for c in scans),
                   std=tuple(c.std for c in scans),
                   fill="mean" if fill and missing else "")
  return Planned(name, kind, tuple(members),
                 fill="unknown" if fill and missing else "",
                 words=scans[0].mean_words)


def vocabularies(table: csv_files.Table, planned: List[Planned]
                 ) -> Dict[str, Tuple[str, ...]]:
  """Each category's training values, sorted: a pass over the training
  rows (missing values are none of them)."""
  wanted = {p.name: p.columns[0] for p in planned if p.kind == "category"}
  values = {name: set() for name in wanted}
  if wanted:
    for _, row in csv_files.rows(table, "train"):
      for name, column in wanted.items():
        text = row[column].strip()
        if not rows_lib.is_missing(text):
          values[name].add(text)
  return {name: tuple(sorted(found)) for name, found in values.items()}
