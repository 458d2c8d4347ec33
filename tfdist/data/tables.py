"""Writes a table (CSV) as sharded TFRecord files plus a manifest.

    python -m tfdist.data write --source=DIR --label=COLUMN --out_dir=OUT
        # DIR/train.csv and DIR/test.csv
    python -m tfdist.data write --source=FILE.csv --label=COLUMN \
        --test_fraction=0.2 --out_dir=OUT

Owns reading CSV files with a header row into features
(tfdist.features): every column but the label becomes one feature named
after it (letters, digits and ``_``; other characters become ``_``). A
column whose every value is a number is ``numeric`` (shape ``(1,)``, with
the training split's mean and standard deviation in the manifest); any
other column holds strings and becomes an ``id``: id 0 for a string the
training split does not have, ids 1.. for its strings in sorted order (the
manifest's ``vocabulary``). The label column holds class ids (0, 1, ...)
or class names, which become classes in sorted order, as image folder
names do.

Two passes over the files: the first reads and checks every row (a bad
row is one ConfigError naming the file, line and column, before anything
is written), the second writes (tfdist.data.shards). Imports tfdist.console,
errors, features and data (manifest, shards); TensorFlow lazily.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import re
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from tfdist import console
from tfdist import features as features_lib
from tfdist.data import manifest as manifest_lib
from tfdist.data import shards
from tfdist.errors import ConfigError

UNKNOWN = "[UNKNOWN]"  # id 0 of a string column: a string not in training
SPLIT_FILES = {"train": "train.csv", "test": "test.csv"}


@dataclasses.dataclass(frozen=True)
class Table:
  """A table to write: where each split's rows are, and what they hold.

  Attributes:
    name: the dataset's name (the directory's or file's).
    path: each split's CSV file.
    rows: the line numbers of each split's rows, or None for every row of
      its file; ``--test_fraction`` picks rows of one file for each split.
    header: the column names.
    label: the label column's name.
  """
  name: str
  path: Dict[str, str]
  rows: Dict[str, Optional[List[int]]]
  header: Tuple[str, ...]
  label: str


def _read_rows(path: str, header_length: int) -> Iterator[Tuple[int, list]]:
  """``(line number, fields)`` of every data row; ConfigError for a row
  whose fields the header does not match."""
  try:
    with open(path, newline="", encoding="utf-8") as f:
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


def _header(path: str) -> Tuple[str, ...]:
  if not os.path.isfile(path):
    raise ConfigError(f"--source={path}: no such file")
  with open(path, newline="", encoding="utf-8") as f:
    header = next(csv.reader(f), None)
  if not header or any(not name.strip() for name in header):
    raise ConfigError(f"{path}:1: the first line must name every column "
                      "(a header row)")
  return tuple(name.strip() for name in header)


def open_table(source: str, *, label: str, test_fraction: float = 0.0,
               seed: int = 0) -> Table:
  """``source``'s table: a directory with train.csv and test.csv, or one
  CSV file whose rows ``test_fraction`` splits (a seeded random pick)."""
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
  headers = {split: _header(path) for split, path in paths.items()}
  if headers["train"] != headers["test"]:
    raise ConfigError(f"{paths['test']}: its header differs from "
                      f"{paths['train']}'s; give both the same columns")
  header = headers["train"]
  if label not in header:
    raise ConfigError(f"--label={label}: {paths['train']} has no column "
                      f"{label!r} (it has {', '.join(header)})")
  rows_of = ({"train": None, "test": None} if os.path.isdir(source)
             else _split_rows(source, test_fraction, seed))
  name = os.path.splitext(os.path.basename(os.path.normpath(source)))[0]
  return Table(name, paths, rows_of, header, label)


def _split_rows(path: str, fraction: float, seed: int) -> dict:
  lines = [line for line, _ in _read_rows(path, len(_header(path)))]
  rng = np.random.default_rng(seed)
  test = set(rng.choice(len(lines), size=max(1, round(fraction * len(lines))),
                        replace=False).tolist())
  if len(test) == len(lines):
    raise ConfigError(f"--test_fraction={fraction} leaves no training row "
                      f"of the {len(lines)} in {path}")
  return {"train": [l for i, l in enumerate(lines) if i not in test],
          "test": [l for i, l in enumerate(lines) if i in test]}


def rows(table: Table, split: str) -> Iterator[Tuple[str, dict]]:
  """``("FILE:LINE", {column: value})`` of the split's rows."""
  wanted = table.rows[split]
  keep = None if wanted is None else set(wanted)
  path = table.path[split]
  for line, fields in _read_rows(path, len(table.header)):
    if keep is None or line in keep:
      yield f"{path}:{line}", dict(zip(table.header, fields))


def _number(text: str) -> Optional[float]:
  try:
    value = float(text)
  except ValueError:
    return None
  return value if math.isfinite(value) else None


@dataclasses.dataclass
class _Column:
  """What the first pass learns of one column."""
  numeric: bool = True
  strings: set = dataclasses.field(default_factory=set)
  total: float = 0.0
  squares: float = 0.0
  count: int = 0
  first_empty: str = ""  # FILE:LINE of the first empty value

  def add(self, value: str, *, training: bool, where: str) -> None:
    number = _number(value)
    if not value:
      self.first_empty = self.first_empty or where
    elif number is None:
      self.numeric = False
    elif training:
      self.total += number
      self.squares += number * number
      self.count += 1
    if training:
      self.strings.add(value)


def feature_name(column: str) -> str:
  """A column's feature name: letters, digits and ``_``."""
  name = re.sub(r"\W", "_", column.strip())
  return name if name and not name[0].isdigit() else f"c_{name}"


def _scan(table: Table):
  """First pass: every row checked; per column its kind and statistics;
  the label values of the training split."""
  columns = {name: _Column() for name in table.header if name != table.label}
  labels = {}
  for split in ("train", "test"):
    seen = set()
    for where, row in rows(table, split):
      value = row[table.label].strip()
      if not value:
        raise ConfigError(f"{where}: column {table.label!r} (the label) is "
                          "empty; fill it or remove the row")
      seen.add(value)
      for name, column in columns.items():
        column.add(row[name].strip(), training=split == "train", where=where)
    labels[split] = seen
  for name, column in columns.items():
    if column.numeric and column.first_empty:
      raise ConfigError(f"{column.first_empty}: column {name!r} is empty, and "
                        "its other values are numbers; fill it or remove the "
                        "row")
  return columns, labels


def _classes(table: Table, labels: dict) -> List[str]:
  """The class names; ids when every label is a whole number >= 0."""
  every = labels["train"] | labels["test"]
  if all(v.isdigit() for v in every):
    return [str(i) for i in range(max(int(v) for v in every) + 1)]
  unknown = sorted(labels["test"] - labels["train"])
  if unknown:
    raise ConfigError(f"{table.path['test']}: label {unknown[0]!r} is no "
                      f"class of {table.path['train']}; every test class must "
                      "appear in training")
  return sorted(labels["train"])


def _features(table: Table, columns: Dict[str, _Column]) -> tuple:
  features = []
  for column_name, column in columns.items():
    name = feature_name(column_name)
    if column.numeric and column.count:
      mean = column.total / column.count
      std = math.sqrt(max(0.0, column.squares / column.count - mean * mean))
      features.append(features_lib.Feature(
          name=name, kind="numeric", shape=(1,), key=column_name,
          mean=(round(mean, 6),), std=(round(std, 6) or 1.0,)))
    else:
      vocabulary = (UNKNOWN, *sorted(column.strings))
      features.append(features_lib.Feature(
          name=name, kind="id", shape=(), key=column_name,
          num_ids=len(vocabulary), vocabulary=vocabulary))
  features_lib.by_name(features)  # two columns with one name: one line
  return tuple(features)


def _serialized(tf, table: Table, split: str, features, classes):
  ids = {f.key: {s: i for i, s in enumerate(f.vocabulary)}
         for f in features if f.kind == "id"}
  class_ids = {name: i for i, name in enumerate(classes)}
  label_key = table.label
  by_number = all(name.isdigit() for name in classes)

  def serialize():
    for where, row in rows(table, split):
      values = {}
      for feature in features:
        text = row[feature.key].strip()
        if feature.kind == "numeric":
          values[feature.key] = tf.train.Feature(
              float_list=tf.train.FloatList(value=[float(text)]))
        else:
          values[feature.key] = tf.train.Feature(int64_list=tf.train.Int64List(
              value=[ids[feature.key].get(text, 0)]))
      label = row[label_key].strip()
      label = str(int(label)) if by_number else label  # 007 is class 7
      values[label_key] = tf.train.Feature(
          int64_list=tf.train.Int64List(value=[class_ids[label]]))
      yield tf.train.Example(features=tf.train.Features(
          feature=values)).SerializeToString()

  return serialize


def write(table: Table, *, out_dir: str, num_shards: int,
          progress_every: int = shards.PROGRESS_EVERY,
          report: Callable[[str], None] = console.info
          ) -> manifest_lib.Manifest:
  """Checks every row of ``table``, then writes it; returns the manifest."""
  columns, labels = _scan(table)  # every row checked, before TensorFlow
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shards.check_out_dir(out_dir, num_shards)
  classes = _classes(table, labels)
  features = _features(table, columns)
  counts = {split: sum(1 for _ in rows(table, split)) for split in table.path}
  for feature in features:
    report(f"column {feature.key!r} -> {feature.describe()}"
           + (f", {feature.num_ids - 1} strings" if feature.kind == "id"
              else ""))

  def manifest(splits):
    return manifest_lib.Manifest(
        num_classes=len(classes), class_names=classes, features=features,
        label_key=table.label, splits=splits, source=table.name)

  return shards.write(
      {split: (counts[split], _serialized(tf, table, split, features, classes))
       for split in ("train", "test")},
      out_dir=out_dir, num_shards=num_shards, manifest=manifest,
      progress_every=progress_every, report=report)
