r"""Converts tables of tests/data to records (``python -m tfdist.data write``,
in this process) and trains a model of tests/user_models.py on each with
``tfdist.fit``, one job after another in this one process; prints each
result as a line:

    python tests/table_job.py OUT_DIR regression weighted multilabel
    python -m tfdist.launch --workers=2 -- \
        python tests/table_job.py OUT_DIR multilabel@multiworker

The jobs (JOBS, each with its table, conversion flags and settings):
``regression``, the diabetes table's disease progression from its 10
measurements, mirrored (the fused step), with a metric of the user's
(RMSE, given as its class); ``weighted``, iris in which setosa weighs 0 by
a weight column and versicolor 0 by ``class_weight``, mirrored (the fused
step); ``multilabel``, two yes/no columns made of the diabetes table (sex,
progression above its median) from the other 9 measurements, a sigmoid
each, under ps (an in-process cluster: no TF_CONFIG). The weighted and
multi-label jobs' tables are written from the vendored ones first: a
column added, two replaced. ``NAME@STRATEGY`` runs job NAME under another
strategy (under TF_CONFIG, each task converts into a folder of its own);
a job given twice converts its table once.
"""

import contextlib
import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import tfdist  # pylint: disable=wrong-import-position

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
MEDIAN_PROGRESSION = 140.5  # of the 442 rows of diabetes.csv


def _weighted_iris(row: dict) -> dict:
  return {**row, "w": "0" if row["species"] == "setosa" else "1"}


def _two_labels(row: dict) -> dict:
  row = dict(row)
  row["male"] = str(int(float(row.pop("sex")) == 2.0))
  row["high"] = str(int(float(row.pop("progression")) > MEDIAN_PROGRESSION))
  return row


JOBS = {
    "regression": dict(
        file="diabetes.csv", write=["--label=progression",
                                    "--task=regression"],
        model="regressor", strategy="mirrored", learning_rate=0.1,
        epochs=30, metrics=["RootMeanSquaredError"]),
    "weighted": dict(
        file="iris.csv", rows=_weighted_iris,
        write=["--label=species", "--weight=w"], model="functional",
        class_weight='{"versicolor": 0}', strategy="mirrored",
        learning_rate=0.05, epochs=30),
    "multilabel": dict(
        file="diabetes.csv", rows=_two_labels,
        write=["--label=male,high", "--task=multilabel"],
        model="multilabel_sigmoid", strategy="ps", learning_rate=0.01,
        epochs=10),
}


def _table(job: dict, out: str) -> str:
  """The job's CSV: the vendored table, or one written from it."""
  source = os.path.join(DATA, job["file"])
  if "rows" not in job:
    return source
  with open(source, newline="", encoding="utf-8") as f:
    rows = [job["rows"](row) for row in csv.DictReader(f)]
  path = os.path.join(out, job["file"])
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return path


def records(name: str, out_dir: str) -> str:
  """Job ``name``'s table converted into ``out_dir/name`` (once: a job
  run again under another strategy reads the same records)."""
  from tfdist import cli  # pylint: disable=g-import-not-at-top
  from tfdist.data import __main__ as data_main  # pylint: disable=g-import-not-at-top
  job, out = JOBS[name], os.path.join(out_dir, name)
  if os.path.isdir(out):
    return f"{out}/records"
  os.makedirs(out)
  with contextlib.redirect_stdout(sys.stderr):  # its JSON line: not a result
    status = cli.run(lambda: data_main.main(
        ["write", f"--source={_table(job, out)}", "--test_fraction=0.25",
         f"--out_dir={out}/records", "--shards=2", *job["write"]]))
  if status:
    raise SystemExit(status)
  return f"{out}/records"


def train(name: str, out_dir: str) -> dict:
  """The result of job ``name`` (``NAME@STRATEGY``: under that strategy)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  name, _, strategy = name.partition("@")
  job = dict(JOBS[name], **({"strategy": strategy} if strategy else {}))
  out = records(name, out_dir)
  for key in ("file", "rows", "write"):
    job.pop(key, None)
  # A class: made by tfdist in the strategy's scope.
  metrics = [getattr(tf.keras.metrics, m) for m in job.pop("metrics", ())]
  return tfdist.fit(f"tests.user_models:{job.pop('model')}", name=name,
                    metrics=metrics, train_files=f"{out}/train-*",
                    test_files=f"{out}/test-*", batch_size=16,
                    optimizer="adam", verbose=0, **job)


def main(out_dir: str, names) -> int:
  from tfdist import app  # pylint: disable=g-import-not-at-top
  app.prepare_environment()
  task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task")
  if task:  # a task of a cluster: its own records
    out_dir = os.path.join(out_dir, f"{task['type']}-{task['index']}")
  for name in names:
    print(json.dumps(train(name, out_dir)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1], sys.argv[2:]))
