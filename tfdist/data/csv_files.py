"""Reads a table: CSV files with a header row, split into train and test.

Owns :class:`Table` (where each split's rows are) and reading its rows as
``{column: text}``: a directory with ``train.csv`` and ``test.csv``, or one
CSV file whose rows ``--test_fraction`` splits (a seeded random pick of
rows). UTF-8, with or without a byte-order mark (as spreadsheet programs
save it). A header must name every column once; a file of a header and no
row, a row of another length and text that is not UTF-8 CSV are each one
ConfigError naming the file (and line). Imports tfdist.errors; no
TensorFlow.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from tfdist.errors import ConfigError

SPLIT_FILES = {"train": "train.csv", "test": "test.csv"}
# "utf-8-sig" reads UTF-8 and drops a byte-order mark at the start.
ENCODING = "utf-8-sig"


@dataclasses.dataclass(frozen=True)
class Table:
  """A table to write: where each split's rows are, and their columns.

  Attributes:
    name: the dataset's name (the directory's or file's).
    path: each split's CSV file.
    rows: the line numbers of each split's rows, or None for every row of
      its file; ``--test_fraction`` picks rows of one file for each split.
    header: the column names, stripped.
  """
  name: str
  path: Dict[str, str]
  rows: Dict[str, Optional[List[int]]]
  header: Tuple[str, ...]


def read_rows(path: str, header_length: int) -> Iterator[Tuple[int, list]]:
  """``(line number, fields)`` of every data row; ConfigError for a row
  whose fields the header does not match."""
  try:
    with open(path, newline="", encoding=ENCODING) as f:
      reader = csv.reader(f)
      next(reader, None)  # the header
      for fields in reader:
        if not fields:
          continue  # a blank line
        if len(fields) != header_length:
          raise ConfigError(f"{path}:{reader.line_num}: {len(fields)} fields, "
                            f"the header has {header_length}; fix the row")
        yield reader.line_num, fields
  except UnicodeDecodeError as e:
    raise ConfigError(f"{path}: not UTF-8 text ({e.reason}); save it as "
                      "UTF-8 CSV") from None
  except csv.Error as e:
    raise ConfigError(f"{path}: not a CSV file ({e}); save it as CSV with a "
                      "header row") from None


def read_header(path: str) -> Tuple[str, ...]:
  """The column names of ``path``'s first line, each named once."""
  if not os.path.isfile(path):
    raise ConfigError(f"--source={path}: no such file")
  try:
    with open(path, newline="", encoding=ENCODING) as f:
      header = next(csv.reader(f), None)
  except UnicodeDecodeError as e:
    raise ConfigError(f"{path}: not UTF-8 text ({e.reason}); save it as "
                      "UTF-8 CSV") from None
  if not header or any(not name.strip() for name in header):
    raise ConfigError(f"{path}:1: the first line must name every column "
                      "(a header row)")
  names = tuple(name.strip() for name in header)
  check_unique(names, where=f"{path}:1")
  return names


def check_unique(names: Sequence[str], *, where: str) -> None:
  """ConfigError naming a column that two header fields name."""
  twice = [name for name, n in collections.Counter(names).items() if n > 1]
  if twice:
    positions = [str(i + 1) for i, name in enumerate(names)
                 if name == twice[0]]
    raise ConfigError(f"{where}: column {twice[0]!r} is named twice (fields "
                      f"{' and '.join(positions)}); give every column its "
                      "own name")


def open_table(source: str, *, test_fraction: float = 0.0, seed: int = 0,
               check: Optional[Callable[[tuple, str], None]] = None
               ) -> Table:
  """``source``'s table: a directory with train.csv and test.csv, or one
  CSV file whose rows ``test_fraction`` splits (a seeded random pick).
  ``check(header, path)``, given, sees the header before any row is read
  (the flags that name columns)."""
  if os.path.isdir(source):
    if test_fraction:
      raise ConfigError(f"--test_fraction: {source} has its own test.csv; "
                        "drop the flag, or pass one CSV file")
    paths = {split: os.path.join(source, name)
             for split, name in SPLIT_FILES.items()}
  elif not 0 < test_fraction < 1:
    raise ConfigError(f"--source={source} is one CSV file: split it with "
                      "--test_fraction=F (0 < F < 1), e.g. 0.2")
  else:
    paths = {"train": source, "test": source}
  headers = {split: read_header(path) for split, path in paths.items()}
  if headers["train"] != headers["test"]:
    raise ConfigError(f"{paths['test']}: its header differs from "
                      f"{paths['train']}'s; give both the same columns")
  header = headers["train"]
  if check is not None:
    check(header, paths["train"])
  if os.path.isdir(source):
    for path in paths.values():
      if next(read_rows(path, len(header)), None) is None:
        raise ConfigError(f"{path}: a header and no rows; give it rows")
    rows_of = {"train": None, "test": None}
  else:
    rows_of = _split_rows(source, len(header), test_fraction, seed)
  name = os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
  return Table(name, paths, rows_of, header)


def _split_rows(path: str, width: int, fraction: float, seed: int) -> dict:
  lines = [line for line, _ in read_rows(path, width)]
  if not lines:
    raise ConfigError(f"{path}: a header and no rows; give it rows")
  rng = np.random.default_rng(seed)
  test = set(rng.choice(len(lines), size=max(1, round(fraction * len(lines))),
                        replace=False).tolist())
  if len(test) == len(lines):
    raise ConfigError(f"--test_fraction={fraction} leaves no training row "
                      f"of the {len(lines)} in {path}")
  return {"train": [l for i, l in enumerate(lines) if i not in test],
          "test": [l for i, l in enumerate(lines) if i in test]}


def line_order(where: str) -> tuple:
  """``FILE:LINE`` as a key that sorts a file's lines in order."""
  path, _, line = where.rpartition(":")
  return (path, int(line))


def rows(table: Table, split: str) -> Iterator[Tuple[str, dict]]:
  """``("FILE:LINE", {column: text})`` of the split's rows."""
  wanted = table.rows[split]
  keep = None if wanted is None else set(wanted)
  path = table.path[split]
  for line, fields in read_rows(path, len(table.header)):
    if keep is None or line in keep:
      yield f"{path}:{line}", dict(zip(table.header, fields))
