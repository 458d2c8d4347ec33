"""Writes a table (CSV) as sharded TFRecord files plus a manifest.

    python -m tfdist.data write --source=DIR --label=COLUMN --out_dir=OUT
        # DIR/train.csv and DIR/test.csv
    python -m tfdist.data write --source=FILE.csv --label=COLUMN \\
        --test_fraction=0.2 --out_dir=OUT

Records keep raw values: numbers as float32 (NaN for a value filled
inside the model), categories and text as their strings; the training
split's statistics (float64) and vocabularies go into the manifest, from
which tfdist.model.preprocessing builds the model's first layers. What each
column becomes is tfdist.data.columns', what the labels ask for
tfdist.data.targets', how a cell reads tfdist.data.rows' (shared with
``tfdist.serving.predict``, so a CSV row predicts as its record does).

Passes over the files: the first reads and checks every row and decides
(a bad row or column is one ConfigError, before anything is written and
before TensorFlow starts), the next collects the categories' values; then
TensorFlow's TextVectorization learns each text column's vocabulary from
the training split, and the last pass writes (tfdist.data.shards, all or
nothing). Imports tfdist.console, errors, data.features and data (columns,
csv_files, manifest, rows, shards, targets); TensorFlow lazily.
"""

from __future__ import annotations

from typing import Callable, Dict

from tfdist import console
from tfdist.data import columns as columns_lib
from tfdist.data import csv_files
from tfdist.data import features as features_lib
from tfdist.data import manifest as manifest_lib
from tfdist.data import rows as rows_lib
from tfdist.data import shards
from tfdist.data import targets
from tfdist.errors import ConfigError

# A text column's vocabulary: its most frequent tokens, at most this many.
MAX_TOKENS = 10_000
# Lines that say what each column becomes; the rest are counted.
REPORTED_FEATURES = 20
UNKNOWN = "[UNK]"  # StringLookup's and TextVectorization's unknown value


def _free_key(wanted: str, taken: set) -> str:
  """``wanted``, or it with ``_`` appended until no other key has it."""
  while wanted in taken:
    wanted += "_"
  taken.add(wanted)
  return wanted


def _check_categories(planned, vocabularies: Dict[str, tuple]) -> None:
  for feature in planned:
    if UNKNOWN in vocabularies.get(feature.name, ()):
      raise ConfigError(f"column {feature.columns[0]!r} holds {UNKNOWN!r}, "
                        "the unknown value of Keras' lookup layers; rename "
                        "that value")


def _text_vocabulary(tf, table: csv_files.Table, planned, max_tokens: int):
  """A text column's tokens, learnt by TextVectorization.adapt from the
  training split (the layer the model tokenises with: same tokens)."""
  (column,) = planned.columns
  layer = tf.keras.layers.TextVectorization(max_tokens=max_tokens + 2)

  def texts():
    for _, row in csv_files.rows(table, "train"):
      text = row[column].strip()
      if not rows_lib.is_missing(text):
        yield text

  layer.adapt(tf.data.Dataset.from_generator(
      texts, output_signature=tf.TensorSpec([], tf.string)).batch(1024))
  tokens = tuple(str(t) for t in layer.get_vocabulary()[2:])  # "", [UNK]
  if not tokens:
    raise ConfigError(f"column {column!r} has no word (TextVectorization "
                      "lower-cases and drops punctuation); read it as one "
                      f"value with --columns={column}:category")
  return tokens


def _feature(planned, vocabulary: tuple) -> features_lib.Feature:
  grouped = len(planned.columns) > 1
  if planned.kind == "numeric":
    return features_lib.Feature(
        name=planned.name, kind="numeric", shape=(len(planned.columns),),
        key=planned.name if grouped else planned.columns[0],
        mean=planned.mean, std=planned.std, fill=planned.fill,
        columns=planned.columns if grouped else ())
  return features_lib.Feature(name=planned.name, kind=planned.kind, shape=(),
                              key=planned.columns[0], vocabulary=vocabulary,
                              fill=planned.fill)


def _line(planned, feature: features_lib.Feature) -> str:
  line = f"{planned.describe()} -> {feature.describe()}"
  if feature.kind == "category":
    line += f", {len(feature.vocabulary):,} values"
  elif feature.kind == "text":
    line += (f", {len(feature.vocabulary):,} tokens (values average "
             f"{planned.words:.1f} words; --columns={planned.columns[0]}:"
             "category reads each as one value)")
  if feature.fill:
    line += (", missing values filled with the training mean"
             if feature.fill == "mean" else ", missing values unknown")
  return line


def _report(report, decision, planned, features, choices) -> None:
  report(decision.line)
  for plan, feature in list(zip(planned, features))[:REPORTED_FEATURES]:
    report(_line(plan, feature))
  rest = features[REPORTED_FEATURES:]
  if rest:
    kinds = sorted({f.kind for f in rest})
    report(f"and {len(rest):,} more features ({', '.join(kinds)}): the "
           "manifest lists them")
  dropped = [n for n, k in choices.columns.items() if k == "drop"]
  if dropped:
    report(f"dropped: {', '.join(repr(n) for n in dropped)}")
  if choices.weight:
    report(f"column {choices.weight!r} -> each example's weight")


def _serialized(tf, table, split: str, features, decision, keys: dict,
                weight: str):
  target = decision.target

  def floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))

  def serialize():
    for where, row in csv_files.rows(table, split):
      values = rows_lib.feature_values(row, features, where=where)
      example = {}
      for feature in features:
        value = values[feature.name]
        example[feature.key] = floats(value) if feature.kind == "numeric" \
            else tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[value.encode("utf-8")]))
      label = rows_lib.target_value(row, target, where=where)
      example[keys["label"]] = (
          tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
          if target.task == "classification" else floats(label))
      if weight:
        example[keys["weight"]] = floats([float(row[weight])])
      yield tf.train.Example(features=tf.train.Features(
          feature=example)).SerializeToString()

  return serialize


def _scan(table: csv_files.Table, choices: targets.Choices):
  """The first pass: ``(decision, planned features, training rows,
  test rows)``."""
  columns = choices.feature_columns(table.header)
  if not columns:
    raise ConfigError(f"{table.path['train']}: no column is left to be a "
                      "feature (the others are labels, the weight or "
                      "dropped)")
  label_scans = {column: targets.LabelScan() for column in choices.labels}
  scans = columns_lib.scan(table, columns,
                           targets.visitor(choices, label_scans))
  first = label_scans[choices.labels[0]]
  counts = sum(first.train.values()), sum(first.test.values())
  planned = columns_lib.plan_features(
      scans, choices.columns, fill=choices.missing == "fill", rows=counts[0])
  decision = targets.decide(choices, label_scans, training_rows=counts[0])
  return decision, planned, counts


def write(table: csv_files.Table, choices: targets.Choices, *, out_dir: str,
          num_shards: int, max_tokens: int = MAX_TOKENS,
          progress_every: int = shards.PROGRESS_EVERY,
          report: Callable[[str], None] = console.info
          ) -> manifest_lib.Manifest:
  """Checks every row of ``table``, then writes it; returns the manifest."""
  choices.check(table.header, table.path["train"])
  if max_tokens < 1:
    raise ConfigError(f"--max_tokens={max_tokens}: must be >= 1")
  decision, planned, counts = _scan(table, choices)
  vocabularies = columns_lib.vocabularies(table, planned)
  _check_categories(planned, vocabularies)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  shards.check_out_dir(out_dir, num_shards)
  for plan in planned:
    if plan.kind == "text":
      vocabularies[plan.name] = _text_vocabulary(tf, table, plan, max_tokens)
  features = tuple(_feature(p, vocabularies.get(p.name, ()))
                   for p in planned)
  _report(report, decision, planned, features, choices)
  taken = {f.key for f in features}
  target = decision.target
  keys = {"label": _free_key(target.label_names[0] if len(
      target.label_names) == 1 else "labels", taken)}
  keys["weight"] = _free_key(choices.weight, taken) if choices.weight else ""

  def manifest(splits):
    return manifest_lib.Manifest(
        num_classes=len(target.class_names) if target.task ==
        "classification" else len(target.label_names),
        class_names=list(target.class_names), features=features,
        label_key=keys["label"], splits=splits, source=table.name,
        task=target.task, label_names=list(target.label_names),
        weight_key=keys["weight"], class_counts=decision.class_counts)

  return shards.write(
      {split: (count, _serialized(tf, table, split, features, decision, keys,
                                  choices.weight))
       for split, count in zip(("train", "test"), counts)},
      out_dir=out_dir, num_shards=num_shards, manifest=manifest,
      progress_every=progress_every, report=report)

