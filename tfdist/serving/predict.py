r"""Predicts with an exported model: CSV rows, images, or records.

    python -m tfdist.predict --model=/tmp/export rows.csv
    python -m tfdist.predict --model=/tmp/export digit.png photo.jpg
    python -m tfdist.predict --model=/tmp/export/model.tflite \
        tfdist/datasets/mnist/t10k-images-idx3-ubyte.gz \
        --labels=tfdist/datasets/mnist/t10k-labels-idx1-ubyte.gz
    python -m tfdist.predict --model=/tmp/export \
        --records='/tmp/records/test-*'

``--model`` is an export directory (its newest version is used), one SavedModel
version directory, or a ``.tflite`` file (tfdist.serving.loading). The inputs
are CSV files (read as the converter read the training rows, by
tfdist.data.csv_files and tfdist.data.rows, with or without the label columns),
PNG or JPEG images or an IDX images file for a model of one image
(tfdist.serving.image_files), or ``--records``: TFRecord files with their
manifest (python -m tfdist.data write), read as training reads them. Each
example gets one line (class names, labels or values: tfdist.serving.scoring);
the last line is one JSON object with the count and, with labels, the task's
scores. Bad input is one ``error: ...`` line and exit status 2, before
TensorFlow starts wherever the input alone decides.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

import numpy as np

from tfdist import cli
from tfdist import console
from tfdist import data as data_lib
from tfdist import errors
from tfdist import tf_startup
from tfdist.data import csv_files
from tfdist.data import rows as rows_lib
from tfdist.errors import ConfigError
from tfdist.serving import image_files
from tfdist.serving import loading
from tfdist.serving import scoring
from tfdist.serving import signatures

CSV_SUFFIX = ".csv"
# What an export of an older tfdist (no description) predicts: class ids.
OLDER_TARGET = rows_lib.Target("classification", ())


def _read_records(pattern: str, loaded: loading.Model,
                  target: rows_lib.Target) -> tuple:
  """(names, {input: array}, labels, target) of every record of
  ``pattern``; an older export's target is the records'."""
  from tfdist.data import records  # pylint: disable=g-import-not-at-top
  from tfdist.data import sources  # pylint: disable=g-import-not-at-top
  files, spec = sources.open_split(pattern, image_shape=loaded.image_shape)
  features = spec.model_features
  missing = sorted(set(loaded.inputs) - set(features))
  if missing:
    raise ConfigError(f"--records={pattern}: the model takes "
                      f"{missing[0]!r}, which these records lack (they have "
                      f"{', '.join(features)}); pass the records the model "
                      "was trained on")
  theirs = signatures.target_of(spec)
  if loaded.found.description is None:
    target = theirs
  elif (theirs.task, theirs.class_names) != (target.task, target.class_names):
    raise ConfigError(f"--records={pattern}: the records are "
                      f"{_task(theirs)}, the model predicts {_task(target)}; "
                      "pass records of the data the model was trained on")
  with records.reading(files):
    inputs, labels = records.serving_inputs(files, spec)
  names = [f"{path}[{i}]" for path, count in _counts(files) for i in
           range(count)]
  return names, inputs, labels, target


def _task(target: rows_lib.Target) -> str:
  """``classification of CLASSES`` or ``TASK of LABELS``, for lines."""
  names = (target.class_names if target.task == "classification"
           else target.label_names)
  return f"{target.task} of {', '.join(names)}"


def _counts(files) -> list:
  from tfdist.data import framing  # pylint: disable=g-import-not-at-top
  return [(path, framing.count(path)) for path in files]


def _read_images(inputs: Sequence[str], labels: Optional[str],
                 loaded: loading.Model) -> tuple:
  """(names, {input: images}, labels or None) of image or IDX inputs."""
  if loaded.image_shape is None:
    raise ConfigError(f"{loaded.path} takes {', '.join(loaded.inputs)}, not "
                      "one image: pass CSV rows or --records=PATTERN")
  image_files.check_all(inputs, loaded.image_shape)
  names, images = image_files.read(inputs, image_shape=loaded.image_shape)
  truth = None
  if labels is not None:
    truth = data_lib.read_idx(labels,
                              expect_magic=image_files.IDX_LABELS_MAGIC)
    if len(truth) != len(images):
      raise ConfigError(f"--labels={labels} has {len(truth)} labels for "
                        f"{len(images)} images; use the matching labels file")
  if loaded.found.description is None:
    console.info(f"{loaded.path} has no class names (an export of an older "
                 "tfdist): printing class ids; export the model again to "
                 "print names")
  return names, {next(iter(loaded.inputs)): images}, truth


def _input_kind(inputs: Sequence[str], labels: Optional[str],
                records_pattern: Optional[str]) -> str:
  """``csv``, ``images`` or ``records``; ConfigError for a mix."""
  if records_pattern and (inputs or labels):
    raise ConfigError("--records reads examples and their labels: drop the "
                      "other inputs and --labels")
  if records_pattern:
    return "records"
  if not inputs:
    raise ConfigError(f"nothing to predict: pass CSV files, "
                      f"{image_files.WHAT}, or --records=PATTERN")
  tables = [p for p in inputs if p.lower().endswith(CSV_SUFFIX)]
  if tables and len(tables) != len(inputs):
    raise ConfigError(f"{tables[0]} is a CSV file among images; predict "
                      "either CSV files or images")
  if tables and labels is not None:
    raise ConfigError(f"--labels is for an IDX images file; {tables[0]} "
                      "holds its own label columns")
  return "csv" if tables else "images"


def _check_images(inputs: Sequence[str], labels: Optional[str],
                  found: loading.Found) -> None:
  """What can be checked of image inputs before a model is loaded."""
  for path in inputs:
    image_files.file_kind(path)
  if labels is not None and (len(inputs) != 1 or
                             image_files.file_kind(inputs[0]) != "idx"):
    raise ConfigError(f"--labels={labels} needs exactly one IDX images "
                      "file as input, in the same order")
  features = found.description.features if found.description else {}
  image = next(iter(features.values())) if len(features) == 1 else None
  if image is not None and image.kind == "image":
    image_files.check_all(inputs, image.shape)


def _csv_header(path: str, target: rows_lib.Target) -> tuple:
  """``(header, whether its rows carry the labels)`` of a CSV file read as
  the converter reads one; ConfigError for some label columns without the
  others."""
  if not os.path.isfile(path):
    raise ConfigError(f"{path}: no such file")
  header = csv_files.read_header(path)
  present = [c for c in target.label_names if c in header]
  if present and len(present) != len(target.label_names):
    missing = [c for c in target.label_names if c not in header]
    raise ConfigError(f"{path}: label column {present[0]!r} without "
                      f"{missing[0]!r}; give every label column "
                      f"({', '.join(target.label_names)}) or none")
  return header, bool(present)


def _label(row: dict, target: rows_lib.Target, where: str):
  try:
    return rows_lib.target_value(row, target, where=where)
  except ConfigError as e:
    raise ConfigError(f"{e}; or remove the label column(s) to predict "
                      "without scoring") from None


def _read_csv(paths: Sequence[str], found: loading.Found) -> tuple:
  """(names, {feature: array [N, ...]}, labels or None) of every row of
  the CSV files, each read by tfdist.data.rows as the converter read the
  training rows; labels when the files have the label columns."""
  if found.description is None:
    raise ConfigError(f"{found.path} is an export of an older tfdist, "
                      "without the description of the CSV columns it reads; "
                      "export the model again (train with --export_dir), or "
                      "predict on --records=PATTERN")
  features, target = found.description.features, found.description.target
  for name, feature in features.items():
    if feature.kind not in signatures.TABLE_KINDS:
      raise ConfigError(f"the model takes {name!r}, an {feature.kind} "
                        "feature, which no CSV row holds; pass images or "
                        "--records=PATTERN")
  names, values, labels, scored = [], [], [], set()
  for path in paths:
    header, labelled = _csv_header(path, target)
    scored.add(labelled)
    table = csv_files.Table(path, {"rows": path}, {"rows": None}, header)
    before = len(names)
    for where, row in csv_files.rows(table, "rows"):
      names.append(where)
      values.append(rows_lib.feature_values(row, features.values(),
                                            where=where))
      if labelled:
        labels.append(_label(row, target, where))
    if len(names) == before:
      raise ConfigError(f"{path}: a header and no rows; give it the rows "
                        "to predict")
  if len(scored) > 1:
    raise ConfigError(f"{', '.join(paths)}: some files have the label "
                      "columns and some not; score them apart")
  inputs = {name: np.array([v[name] for v in values], dtype=np.float32
                           if f.kind == "numeric" else object)
            for name, f in features.items()}
  truth = None
  if labels:
    truth = np.array(labels, dtype=np.int64 if target.task ==
                     "classification" else np.float32)
  return names, inputs, truth


def predict(*, model: str, inputs: Sequence[str] = (),
            labels: Optional[str] = None, records: Optional[str] = None,
            signature: str = "serving_default", out=sys.stdout) -> dict:
  """Prints one line per example and returns the summary (the task's
  scores when there are labels).

  Inputs are checked before the model is loaded where no model is needed,
  so a wrong file or row is reported before TensorFlow starts.
  """
  found = loading.resolve_model(model)
  kind = _input_kind(inputs, labels, records)
  target = (found.description.target if found.description
            else OLDER_TARGET)
  if kind == "csv":
    names, values, truth = _read_csv(inputs, found)
  elif kind == "images":
    _check_images(inputs, labels, found)
  loaded = loading.load_model(found, signature=signature)
  if kind == "records":
    names, values, truth, target = _read_records(records, loaded, target)
  elif kind == "images":
    names, values, truth = _read_images(inputs, labels, loaded)
  outputs = loaded.predict_fn(values)
  for line in scoring.lines(names, outputs, target):
    out.write(line + "\n")
  summary = {"model": found.path, "format": found.format,
             "signature": signature, "ml_task": target.task,
             {"records": "examples", "csv": "rows",
              "images": "images"}[kind]: len(names)}
  if truth is not None:
    summary.update(scoring.scores(outputs, truth, target))
  return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point: ``python -m tfdist.predict --model=PATH INPUT...``."""
  parser = cli.OneLineParser(
      prog="python -m tfdist.predict",
      description="Predict with a tfdist export (SavedModel or .tflite).")
  parser.add_argument("--model", required=True,
                      help="export directory, SavedModel version directory "
                      "or .tflite file")
  parser.add_argument("--labels", help="IDX labels file for an IDX images "
                      "input: prints the accuracy")
  parser.add_argument("--signature", default="serving_default",
                      help="serving_default (raw inputs) or serving_float "
                      "(an image as 0..1 floats); SavedModel only")
  parser.add_argument("--records", help="TFRecord files with a manifest "
                      "(a glob or comma-separated): predicts every record and "
                      "scores it against its labels")
  parser.add_argument("inputs", nargs="*", metavar="INPUT",
                      help="CSV files (with or without the label columns: "
                      "scored when present), PNG or JPEG images, or one IDX "
                      "images file")
  args = parser.parse_args(argv)

  def predict_and_summarise() -> int:
    summary = predict(model=args.model, inputs=args.inputs,
                      labels=args.labels, records=args.records,
                      signature=args.signature)
    console.result(summary)
    return errors.EXIT_OK

  return cli.run(predict_and_summarise)


if __name__ == "__main__":
  # TensorFlow's C++ INFO lines would bury the predictions; warnings remain;
  # no CUDA error on a machine without a GPU.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  tf_startup.prepare(os.environ, has_gpu=tf_startup.has_gpu_device())
  sys.exit(main())
