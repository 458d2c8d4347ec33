"""A user's own model on a user's own table: the model-function contract,
python -m tfdist.train, CSV conversion and the bad input of each.

The table is real: the Breast Cancer Wisconsin (Diagnostic) data of the
worked example (examples/breast_cancer/data), 569 tumours, 30 measurements,
diagnosed benign (357) or malignant (212): always guessing benign scores
0.63. The model functions are tests/user_models.py.
"""

import csv
import json
import os
import sys

import pytest

from conftest import REPO, json_lines, run

CSV = os.path.join(REPO, "examples", "breast_cancer", "data",
                   "breast_cancer.csv")
CANCER = ["--epochs=12", "--batch_size=32", "--optimizer=adam",
          "--learning_rate=0.05", "--verbose=0"]


def write(*flags, timeout=120):
  return run([sys.executable, "-m", "tfdist.data", "write", *flags],
             timeout=timeout)


def train(model: str, *flags, timeout=180):
  return run([sys.executable, "-m", "tfdist.train",
              f"--model=tests.user_models:{model}", *flags], timeout=timeout)


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
  out = tmp_path_factory.mktemp("cancer") / "records"
  done = write(f"--source={CSV}", "--label=diagnosis", "--test_fraction=0.25",
               f"--out_dir={out}", "--shards=2")
  assert done.returncode == 0, done.stderr[-2000:]
  return [f"--train_files={out}/train-*", f"--test_files={out}/test-*"]


def test_the_table_converts_to_numeric_features_and_named_classes(cancer):
  out = cancer[0].split("=", 1)[1].rsplit("/", 1)[0]
  with open(os.path.join(out, "manifest.json")) as f:
    printed = json.load(f)
  assert printed["class_names"] == ["benign", "malignant"]
  assert printed["counts"] == {"train": 427, "test": 142}
  assert len(printed["features"]) == 30
  radius = printed["features"][0]
  assert (radius["name"], radius["key"], radius["kind"], radius["shape"]) == (
      "mean_radius", "mean radius", "numeric", [1])
  # The training split's statistics (the whole table's mean radius: 14.13).
  assert 13.5 < radius["mean"][0] < 14.8 and 3.0 < radius["std"][0] < 4.0


@pytest.mark.parametrize("model, accuracy", [
    ("functional", 0.9), ("subclassed", 0.9),
    # Two measurements only: still well above 0.63.
    ("two_columns", 0.85)])
def test_functional_subclassed_and_partial_models_train(cancer, model,
                                                        accuracy):
  done = train(model, *cancer, *CANCER)
  assert done.returncode == 0, done.stderr[-3000:]
  [result] = json_lines(done.stdout)
  assert result["model"] == model and result["model_outputs"] == "logits"
  assert result["test_accuracy"] >= accuracy, result
  assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_model_ending_in_softmax_trains_on_probabilities(mnist_dir):
  done = train("sequential_probabilities", f"--mnist_dir={mnist_dir}",
               "--epochs=1", "--verbose=0")
  assert done.returncode == 0, done.stderr[-3000:]
  [result] = json_lines(done.stdout)
  assert result["model_outputs"] == "probabilities"
  assert result["test_accuracy"] >= 0.88, result


@pytest.mark.parametrize("model, message", [
    ("raises", "the model function raises raised KeyError at "
               "user_models.py:"),
    ("not_a_model", "the model function not_a_model returned a builtins.str, "
                    "not a Keras model"),
    ("wrong_width", "outputs shape [None, 3], but the data has 2 classes"),
    ("missing_feature", "takes input 'age', which the records lack"),
])
def test_a_broken_model_function_is_one_error_line(cancer, model, message):
  done = train(model, *cancer, "--epochs=1")
  assert done.returncode == 2, done.stderr[-3000:]
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last, last
  assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("reference, message", [
    ("no_colon", "--model=no_colon: name the model function as "
                 "PACKAGE.MODULE:FUNCTION"),
    ("no_such_package.model:build", "no module no_such_package on the "
                                    "Python path"),
    ("tfdist.models:no_such_function", "tfdist.models has no "
                                       "no_such_function"),
    ("tfdist.models:MIN_IMAGE_SIDE", "MIN_IMAGE_SIDE is a dict, not a "
                                     "function"),
])
def test_a_bad_model_reference_is_one_line_before_tensorflow(reference,
                                                             message):
  done = run([sys.executable, "-m", "tfdist.train", f"--model={reference}"],
             timeout=60)
  assert done.returncode == 2
  # Exactly one line: before TensorFlow, whose import would log.
  assert done.stderr.strip().splitlines() == [done.stderr.strip()]
  assert done.stderr.startswith("error: ") and message in done.stderr


def _table(path, rows):
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)


def test_strings_become_categories_with_their_vocabulary(tmp_path):
  header = ["city", "size", "label"]
  _table(tmp_path / "train.csv", [header, ["rome", "1.5", "0"],
                                  ["oslo", "2", "2"], ["rome", "3", "1"]])
  _table(tmp_path / "test.csv", [header, ["paris", "1", "002"]])
  done = write(f"--source={tmp_path}", "--label=label",
               f"--out_dir={tmp_path / 'out'}")
  assert done.returncode == 0, done.stderr[-2000:]
  [printed] = json_lines(done.stdout)
  # The classes are the distinct labels ("002" is class 2: 3 classes); the
  # city stays a string, the training split's cities its vocabulary (paris
  # is unknown to the model).
  assert printed["num_classes"] == 3
  assert printed["features"] == ["city: category string[]",
                                 "size: numeric float32[1]"]
  assert "column 'city' -> city: category string[], 2 values" in done.stderr


@pytest.mark.parametrize("rows, flags, message", [
    ([["a", "b"], ["1", "x"], ["2"]], ["--label=b"],
     "t.csv:3: 1 fields, the header has 2; fix the row"),
    ([["a", "b"], ["1", "x"], ["2", ""]], ["--label=b"],
     "t.csv:3: the label 'b' is missing ('')"),
    ([["a", "b"], ["1", "x"], ["", "y"], ["3", "x"]], ["--label=b"],
     "column 'a' has 1 missing value (empty, NA, N/A, NaN or null), the "
     "first at {path}:3"),
    ([["a", "b"], ["1", "x"]], ["--label=c"],
     "--label: {path} has no column 'c' (it has a, b)"),
    ([["a", "b"], ["1", "x"]], [],
     "a table needs --label=COLUMN[,COLUMN...]: the column(s) to predict"),
])
def test_a_bad_table_is_one_line_and_writes_nothing(tmp_path, rows, flags,
                                                    message):
  path = tmp_path / "t.csv"
  _table(path, rows)
  out = tmp_path / "out"
  done = write(f"--source={path}", "--test_fraction=0.5", *flags,
               f"--out_dir={out}")
  assert done.returncode == 2, done.stderr[-2000:]
  assert done.stderr.strip().splitlines() == [done.stderr.strip()]
  assert message.format(path=path) in done.stderr, done.stderr
  assert not out.exists()


def test_a_user_model_resumes_with_the_step_features(cancer, tmp_path):
  """Through the public entry, a table's model with gradient accumulation,
  bfloat16 mixed precision and the large-batch recipe: stopped after 2
  epochs and relaunched with the same --model_dir, it resumes at the saved
  step and ends at exactly the target, as an uninterrupted run does."""
  features = ["--accumulate_steps=2", "--mixed_precision",
              "--lr_scaling=linear", "--base_batch_size=32",
              "--warmup_epochs=1", "--batch_size=16", "--optimizer=adam",
              "--learning_rate=0.01", "--verbose=0"]

  def result(model_dir, epochs):
    done = train("functional", *cancer, *features, f"--epochs={epochs}",
                 f"--model_dir={model_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    return json_lines(done.stdout)[-1]

  whole = result(tmp_path / "whole", 4)
  first = result(tmp_path / "resumed", 2)
  resumed = result(tmp_path / "resumed", 4)
  assert (whole["dtype_policy"], whole["accumulate_steps"]) == (
      "mixed_bfloat16", 2)
  assert resumed["start_step"] == first["global_step"] == whole["steps"] // 2
  assert resumed["global_step"] == whole["global_step"] == whole["steps"]
  # The learning-rate schedule continues from the restored step.
  assert resumed["learning_rate_history"] == whole["learning_rate_history"][2:]
  for result in (whole, resumed):
    assert result["test_accuracy"] >= 0.9, result
