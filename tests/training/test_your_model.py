"""A user's own model on a user's own table: the model-function contract,
python -m tfdist.train, tfdist.main and tfdist.fit, the user's own loss,
metrics, optimizer and callbacks, the tasks, CSV conversion and the bad
input of each.

The tables are real: the Breast Cancer Wisconsin (Diagnostic) data of the
worked example (examples/breast_cancer/data), 569 tumours, 30 measurements,
diagnosed benign (357) or malignant (212): always guessing benign scores
0.63; and tests/data's iris and diabetes (tests/table_job.py converts and
trains them: a regression, weights and a multi-label table). The model
functions are tests/user_models.py; a user's own train.py is
tests/user_program.py.
"""

import csv
import json
import os
import re
import shutil
import sys

import pytest

from conftest import REPO, SPECS, child_env, json_lines, launch, run
from tfdist.errors import ConfigError

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
    # (A functional model of every feature: the compiled and weighted jobs
    # below, and the README's example.)
    ("subclassed", 0.9),
    # Two measurements only: still well above 0.63.
    ("two_columns", 0.85)])
def test_functional_subclassed_and_partial_models_train(cancer_fits, model,
                                                        accuracy):
  results, log = cancer_fits
  result = results[model]
  assert result["model"] == model and result["model_outputs"] == "logits"
  assert result["test_accuracy"] >= accuracy, result
  assert "Traceback" not in log


@pytest.mark.slow
def test_a_model_ending_in_softmax_trains_on_probabilities(mnist_dir):
  done = train("sequential_probabilities", f"--mnist_dir={mnist_dir}",
               "--epochs=1", "--verbose=0")
  assert done.returncode == 0, done.stderr[-3000:]
  [result] = json_lines(done.stdout)
  assert result["model_outputs"] == "probabilities"
  assert result["test_accuracy"] >= 0.88, result


def test_a_model_of_one_input_named_otherwise_gets_the_tensor():
  """One feature: a model whose one input is named otherwise (a
  Sequential's input_1, a functional model's own name) or not made yet (a
  Sequential without an InputLayer) is called with its tensor, and the
  model tfdist trains takes the dict by the feature's name. Built in this
  process, not trained."""
  from tfdist import app  # pylint: disable=g-import-not-at-top
  app.prepare_environment()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfdist.data.features import Feature  # pylint: disable=g-import-not-at-top
  from tfdist.model import contract  # pylint: disable=g-import-not-at-top
  keras = tf.keras
  image = Feature(name="images", kind="image", shape=(4, 4, 1),
                  encoding="png")
  size = Feature(name="size", kind="numeric", shape=(2,), mean=(0, 0),
                 std=(1, 1))
  named_x = keras.Input(shape=(2,), name="x")
  models = {
      "input_1": (image, lambda: keras.Sequential([
          keras.layers.InputLayer(input_shape=(4, 4, 1)),
          keras.layers.Flatten(), keras.layers.Dense(3)])),
      "not made yet": (image, lambda: keras.Sequential([
          keras.layers.Flatten(), keras.layers.Dense(3)])),
      "x": (size, lambda: keras.Model(named_x,
                                      keras.layers.Dense(3)(named_x))),
  }
  for what, (feature, make) in models.items():
    model = contract.build(lambda features, n, make=make: make(),
                           {feature.name: feature}, 3, name=what)
    assert list(model.input) == [feature.name], what
    batch = {feature.name: tf.ones((2, *feature.shape))}
    assert model(batch).shape == (2, 3), what


def _line_of(text: str) -> str:
  """``user_models.py:N``, N the line of user_models.py holding ``text``."""
  with open(os.path.join(REPO, "tests", "user_models.py")) as f:
    lines = f.read().splitlines()
  return f"user_models.py:{next(i for i, l in enumerate(lines, 1) if text in l)}"


@pytest.mark.parametrize("model, message", [
    ("raises", "the model function raises raised at {raises}: KeyError: "
               "'no such key'"),
    # Inside a Keras layer: the cause and the user's line, not Keras' wrapper
    # message at a TensorFlow file.
    ("raises_in_layer", "the model function raises_in_layer raised at "
                        "{lambda}: TypeError: Only integers"),
    ("not_a_model", "the model function not_a_model returned a builtins.str, "
                    "not a Keras model"),
    ("wrong_width", "outputs shape [None, 3], but the data has 2 outputs"),
    ("missing_feature", "takes input 'age', which the records lack"),
    ("softmax_with_logits_loss", "ends in a softmax, but its loss takes "
                                 "logits (from_logits=True)"),
])
def test_a_broken_model_function_is_one_error_line(cancer, model, message):
  done = train(model, *cancer, "--epochs=1")
  assert done.returncode == 2, done.stderr[-3000:]
  last = done.stderr.strip().splitlines()[-1]
  message = message.format(raises=_line_of('{}["no such key"]'),
                           **{"lambda": _line_of('t["radius"]')})
  assert last.startswith("error: ") and message in last, last
  assert "Exception encountered" not in last
  assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("reference, message", [
    ("no_colon", "--model=no_colon: name the model function as "
                 "PACKAGE.MODULE:FUNCTION"),
    ("no_such_package.model:build", "no module no_such_package on the "
                                    "Python path"),
    ("tfdist.model.models:no_such_function", "tfdist.model.models has no "
                                       "no_such_function"),
    ("tfdist.model.models:MIN_IMAGE_SIDE", "MIN_IMAGE_SIDE is a dict, not a "
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


def test_a_user_model_resumes_with_the_step_features(cancer_fits):
  """Through the public entry (tfdist.fit), a table's model with gradient
  accumulation, bfloat16 mixed precision and the large-batch recipe:
  stopped after 2 epochs and fitted again with the same model_dir, it
  resumes at the saved step and ends at exactly the target, as an
  uninterrupted run does (cancer_fits' whole, first and resumed)."""
  results, _ = cancer_fits
  whole, first, resumed = (results[n] for n in ("whole", "first",
                                                "resumed"))
  assert (whole["dtype_policy"], whole["accumulate_steps"]) == (
      "mixed_bfloat16", 2)
  assert resumed["start_step"] == first["global_step"] == whole["steps"] // 2
  assert resumed["global_step"] == whole["global_step"] == whole["steps"]
  # The learning-rate schedule continues from the restored step.
  assert resumed["learning_rate_history"] == whole["learning_rate_history"][2:]
  for result in (whole, resumed):
    assert result["test_accuracy"] >= 0.9, result


# --- the user's own loss, metrics, optimizer and callbacks ------------------
#
# One small job per strategy, with the fused step where it runs (mirrored,
# multiworker): tests/user_program.py trains user_models.compiled_own,
# compiled with a loss that cannot be below 1000 (cross-entropy + 1000), a
# metric function and Adam, with an add_metric, and given a metric (the
# plain cross-entropy, "xent") and a callback: under mirrored and
# multiworker (each worker its task as tf_config=) through tfdist.fit,
# which returns the result in-process; under ps through tfdist.main.

OWN = ["--epochs=4", "--batch_size=32", "--verbose=0"]
OWN_METRICS = {"accuracy", "_confidence", "xent", "mean_last_class"}


def _program(*args):
  return [sys.executable, os.path.join(REPO, "tests", "user_program.py"),
          *args]


def _fit_settings(cancer, **settings) -> str:
  return json.dumps({**dict(arg.lstrip("-").split("=", 1) for arg in cancer),
                     "epochs": 4, "batch_size": 32, "verbose": 0,
                     **settings})


def _fit_results(stdout: str, prefix: str = "") -> list:
  lines = [line[len(prefix):] for line in stdout.splitlines()
           if line.startswith(prefix + "fit returned: ")]
  return [json.loads(line.split(": ", 1)[1]) for line in lines]


def _settings(flags) -> dict:
  """tfdist.fit's settings of command-line flags."""
  settings = {}
  for flag in flags:
    key, _, value = flag.lstrip("-").partition("=")
    try:
      settings[key] = json.loads(value) if value else True
    except json.JSONDecodeError:
      settings[key] = value
  return settings


# The resumed job: a table's model with the step features, 4 epochs
# whole, or 2 and then 4 again in the same model_dir.
RESUMED = ["--accumulate_steps=2", "--mixed_precision", "--lr_scaling=linear",
           "--base_batch_size=32", "--warmup_epochs=1", "--batch_size=16",
           "--optimizer=adam", "--learning_rate=0.01", "--verbose=0"]


@pytest.fixture(scope="module")
def cancer_fits(cancer, tmp_path_factory):
  """tfdist.fit in a Python program, mirrored, job after job in one process
  (tests/user_program.py fit, a sweep): the user's compiled model with its
  metric and callback ("own"), the subclassed and the two-column models,
  and the resumed job's three runs ("whole", "first", "resumed", mixed
  precision last). (Their results by job, stderr.)"""
  base = tmp_path_factory.mktemp("fits")
  cancer_settings = _settings(CANCER)
  jobs = {
      "own": {},
      "subclassed": dict(cancer_settings, model="subclassed"),
      "two_columns": dict(cancer_settings, model="two_columns"),
      **{job: dict(_settings(RESUMED), model="functional", epochs=epochs,
                   model_dir=str(base / model_dir))
         for job, epochs, model_dir in [("whole", 4, "whole"),
                                        ("first", 2, "resumed"),
                                        ("resumed", 4, "resumed")]}}
  done = run(_program("fit", *(_fit_settings(cancer, **settings)
                               for settings in jobs.values())), timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  results = _fit_results(done.stdout)
  assert len(results) == len(jobs), done.stdout
  return dict(zip(jobs, results)), done.stderr


@pytest.fixture(scope="module")
def own_mirrored(cancer_fits):
  """tfdist.fit in a Python program: (its result, stderr)."""
  results, log = cancer_fits
  return [results["own"]], log


@pytest.fixture(scope="module")
def own_multiworker(cancer):
  """tfdist.fit on two workers through the launcher, each given its task
  as tf_config=: (both results, the output)."""
  done = run(launch(f"{SPECS}/two_workers.json", _program(
      "fit", _fit_settings(cancer, strategy="multiworker"))), timeout=240)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  results = [_fit_results(done.stdout, f"[worker-{i}] ") for i in range(2)]
  return [r for worker in results for r in worker], done.stdout + done.stderr


@pytest.fixture(scope="module")
def own_ps(cancer):
  """tfdist.main under ps (an in-process cluster of 2 workers and a ps)."""
  done = run(_program("--strategy=ps", *cancer, *OWN), timeout=180)
  assert done.returncode == 0, done.stderr[-3000:]
  return [json_lines(done.stdout)[-1]], done.stderr


OWN_JOBS = ["own_mirrored", "own_multiworker", "own_ps"]


@pytest.mark.slow
@pytest.mark.parametrize("job", OWN_JOBS)
def test_a_compiled_model_keeps_its_loss_and_optimizer(job, request):
  results, _ = request.getfixturevalue(job)
  for result in results:
    assert (result["loss"], result["optimizer"]) == ("_at_least_1000", "Adam")
    assert min(result["loss_history"]) >= 1000, result["loss_history"]
    assert result["model_outputs"] == "logits"
    assert result["test_accuracy"] >= 0.9, result


@pytest.mark.slow
@pytest.mark.parametrize("job", OWN_JOBS)
def test_every_metric_of_the_user_is_trained_and_measured(job, request):
  results, _ = request.getfixturevalue(job)
  for result in results:
    # Compiled (_confidence), given to tfdist (xent), add_metric, the task's.
    assert set(result["train_metrics"]) == OWN_METRICS, result
    assert set(result["test_metrics"]) == OWN_METRICS, result
    # Reduced over every replica and example like the loss: the loss is
    # the cross-entropy plus 1000.
    assert result["train_metrics"]["xent"] == pytest.approx(
        result["final_loss"] - 1000, abs=2e-3)
    assert result["test_metrics"]["accuracy"] == result["test_accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("job", OWN_JOBS)
def test_the_user_callback_runs_with_the_logs(job, request):
  _, log = request.getfixturevalue(job)
  assert ("user callback: training ended with _confidence, accuracy, loss, "
          "mean_last_class, xent") in log
  assert "Traceback" not in log


@pytest.mark.slow
@pytest.mark.parametrize("job", OWN_JOBS)
def test_the_training_step_is_traced_once(job, request):
  # The optimizer's slots (Adam's) are made before fit: made in the first
  # step, they have tf.function trace the step a second time.
  _, log = request.getfixturevalue(job)
  assert "user callback: the training step was traced 1 time(s)" in log


@pytest.mark.slow
def test_the_fused_step_carries_them_in_one_all_reduce(own_mirrored,
                                                       own_multiworker):
  for result in own_mirrored[0] + own_multiworker[0]:
    assert result["fused_step"] and result["collectives_per_step"] == 1
  # Every worker logs the global metrics, bit for bit the same.
  first, second = own_multiworker[0]
  assert first["train_metrics"] == second["train_metrics"]
  assert first["weights_digest"] == second["weights_digest"]


@pytest.mark.slow
def test_fit_returns_the_result_in_process(own_mirrored, own_multiworker):
  [result], log = own_mirrored
  assert result["strategy"] == "mirrored" and result["num_replicas"] == 2
  # As a task of a cluster given as tf_config=: each worker its own.
  assert [r["task"] for r in own_multiworker[0]] == ["worker-0", "worker-1"]
  assert result["model"] == "compiled_own" and result["ml_task"] == (
      "classification")
  assert not [line for line in log.splitlines() if line.startswith("error")]
  assert "Traceback" not in log


@pytest.mark.slow
def test_fit_in_a_process_where_tensorflow_already_ran(cancer):
  """A notebook: TensorFlow started (a metric object made) before fit, which
  cannot split the CPU into 2 replicas then: one ConfigError; on the one
  device there is, fit trains and returns, twice in the process."""
  settings = dict(arg.lstrip("-").split("=", 1) for arg in cancer)
  script = (
      "import os, json\n"
      "os.environ['TF_USE_LEGACY_KERAS'] = '1'\n"
      "import tensorflow as tf\n"
      "import tfdist\n"
      "xent = tf.keras.metrics.SparseCategoricalCrossentropy(\n"
      "    from_logits=True, name='xent')\n"
      f"settings = dict({settings!r}, epochs=1, steps_per_epoch=3, "
      "verbose=0)\n"
      "try:\n"
      "  tfdist.fit('tests.user_models:functional', metrics=[xent], "
      "**settings)\n"
      "except tfdist.ConfigError as e:\n"
      "  print('ConfigError:', e)\n"
      "for _ in range(2):\n"
      "  result = tfdist.fit('tests.user_models:functional', metrics=[xent],"
      " num_cpu_devices=1, **settings)\n"
      "  print(json.dumps(result))\n")
  done = run([sys.executable, "-c", script], timeout=180)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.startswith(
      "ConfigError: TensorFlow was started before tfdist could set up "
      "--num_cpu_devices=2 replicas"), done.stdout
  assert "train on the 1 CPU device it has (--num_cpu_devices=1)" in (
      done.stdout)
  results = json_lines(done.stdout)
  assert len(results) == 2
  for result in results:
    assert result["num_replicas"] == 1 and result["global_step"] == 3
    assert set(result["test_metrics"]) == {"accuracy", "xent"}


# --- the tasks, and weights ---------------------------------------------------


def _table_jobs(out_dir, *names) -> dict:
  """tests/table_job.py's jobs, one after another in one process: their
  results by name (``NAME@STRATEGY`` as given)."""
  done = run([sys.executable, os.path.join(REPO, "tests", "table_job.py"),
              str(out_dir), *names], timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "Traceback" not in done.stderr
  results = json_lines(done.stdout)
  assert [r["model"] for r in results] == [n.split("@")[0] for n in names]
  return dict(zip(names, results))


@pytest.fixture(scope="module")
def mirrored_tables(tmp_path_factory):
  """Diabetes progression (with the user's RMSE), iris with setosa and
  versicolor weighing 0 in training, and two yes/no labels: mirrored, the
  fused step; then the two yes/no labels under ps (an in-process cluster):
  one process (one job after the other, as tfdist.fit in a sweep)."""
  return _table_jobs(tmp_path_factory.mktemp("tables"), "regression",
                     "weighted", "multilabel@mirrored", "multilabel")


@pytest.fixture(scope="module")
def regression(mirrored_tables):
  return mirrored_tables["regression"]


@pytest.fixture(scope="module")
def weighted(mirrored_tables):
  return mirrored_tables["weighted"]


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory, mirrored_tables):
  """Two yes/no columns of diabetes, a sigmoid each: under ps (an
  in-process cluster), mirrored, and two workers through the launcher."""
  out = tmp_path_factory.mktemp("multilabel-multiworker")
  done = run([sys.executable, "-m", "tfdist.launch", "--workers=2", "--",
              sys.executable, os.path.join(REPO, "tests", "table_job.py"),
              str(out), "multilabel@multiworker"], timeout=240)
  assert done.returncode == 0, done.stdout[-3000:]
  assert "Traceback" not in done.stdout
  return {"ps": mirrored_tables["multilabel"],
          "mirrored": mirrored_tables["multilabel@mirrored"],
          **{name: result for name in ("worker-0", "worker-1")
             for result in json_lines(done.stdout, f"[{name}] ")}}


@pytest.mark.slow
def test_a_regression_trains_and_reports_its_own_metrics(regression):
  result = regression
  assert (result["ml_task"], result["model_outputs"], result["loss"]) == (
      "regression", "values", "mean_squared_error")
  assert result["fused_step"]
  assert set(result["train_metrics"]) == {"mae", "root_mean_squared_error"}
  metrics = result["test_metrics"]
  assert set(metrics) == {"mse", "mae", "r2", "root_mean_squared_error"}
  assert "test_accuracy" not in result
  # Learned: predicting the mean scores 0. Mirrored on 2 devices, Adam at
  # 0.1: 0.36 to 0.43 in 6 runs of tests/table_job.py (2026-12-06, this
  # suite's 2-core machine), 0.3494 once in the suite; a linear model
  # explains about half the variance on this table.
  assert metrics["r2"] > 0.3, metrics
  # The user's metric saw the same test examples as tfdist's.
  assert metrics["root_mean_squared_error"] ** 2 == pytest.approx(
      metrics["mse"], rel=1e-3)


@pytest.mark.slow
def test_a_sigmoid_head_trains_as_probabilities(multilabel):
  assert {r["strategy"] for r in multilabel.values()} == {
      "ps", "mirrored", "multiworker"}
  for name, result in multilabel.items():
    assert (result["ml_task"], result["model_outputs"], result["loss"]) == (
        "multilabel", "probabilities", "binary_crossentropy"), name
    assert result["fused_step"] == (name != "ps"), name
    # Chance is 0.5 on both labels.
    assert result["test_metrics"]["binary_accuracy"] >= 0.68, (name, result)
  # Two workers, one model: the same test metrics on both.
  assert (multilabel["worker-0"]["test_metrics"]
          == multilabel["worker-1"]["test_metrics"])


@pytest.mark.slow
def test_the_step_trains_with_the_example_weights(weighted):
  # Setosa weighs nothing by the records' weight column, versicolor nothing
  # by --class_weight: the model learns only virginica, a third of the test
  # flowers (0.29). With the weight column or the class weights left out
  # it learns two species (0.61, 0.63); with the weights dropped in the
  # step, all three (0.95).
  assert weighted["fused_step"] and weighted["strategy"] == "mirrored"
  assert weighted["test_metrics"]["accuracy"] < 0.5, weighted


# --- the first five minutes ---------------------------------------------------


def test_helpfull_states_the_model_function_contract():
  done = run([sys.executable, "-m", "tfdist.train", "--helpfull"], timeout=60)
  text = " ".join(done.stdout.split())
  assert "FUNCTION(features, num_outputs)" in text
  assert "input_shape" not in text


def test_a_program_flag_named_like_a_tfdist_flag_is_one_line(tmp_path):
  program = tmp_path / "train.py"
  program.write_text("from absl import flags\n"
                     "import tfdist\n"
                     "flags.DEFINE_integer('epochs', 3, 'my epochs')\n"
                     "tfdist.main(lambda features, num_outputs: None)\n")
  done = run([sys.executable, str(program)], timeout=60)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      "error: the program defines its own flag --epochs, which is a tfdist "
      "flag (Training epochs); rename yours, or set tfdist's default with "
      "tfdist.main(..., defaults={'epochs': ...})"]


def test_fit_raises_config_error_for_bad_settings():
  script = ("import tfdist\n"
            "for settings in ({'no_such_setting': 1}, {'epochs': 0}):\n"
            "  try:\n"
            "    tfdist.fit(lambda features, num_outputs: None, **settings)\n"
            "  except tfdist.ConfigError as e:\n"
            "    print('ConfigError:', e)\n")
  done = run([sys.executable, "-c", script], timeout=60)
  assert done.returncode == 0, done.stderr
  assert done.stdout.splitlines() == [
      "ConfigError: fit(..., no_such_setting=...): no such setting; the "
      "settings are tfdist's flags (python -m tfdist.train --helpfull)",
      "ConfigError: --epochs=0: must be at least 1"]


def _readme_example() -> tuple:
  """The README's own-model example: (the model file, the commands)."""
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    text = f.read()
  section = text[text.index("## Your own model"):]
  python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  commands = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
  return python, commands


@pytest.mark.slow
def test_the_readme_example_trains_iris_verbatim(tmp_path):
  python, commands = _readme_example()
  assert python.startswith("# my_project/model.py\n")
  (tmp_path / "my_project").mkdir()
  (tmp_path / "my_project" / "model.py").write_text(python)
  (tmp_path / "tests" / "data").mkdir(parents=True)
  shutil.copy(os.path.join(REPO, "tests", "data", "iris.csv"),
              tmp_path / "tests" / "data")
  done = run(["bash", "-c", "set -euo pipefail\n" + commands],
             cwd=str(tmp_path), env=child_env(), timeout=240)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json_lines(done.stdout)[-1]
  assert result["test_accuracy"] >= 0.9, result
  # The default batch is larger than the 120 training flowers: one line.
  assert ("--batch_size=100 x 2 replicas is more than the 120 training "
          "examples: batch 60 instead") in done.stderr
  assert "Traceback" not in done.stderr


@pytest.mark.parametrize("settings, flag", [
    (dict(learning_rate=0.1), "--learning_rate"),
    (dict(lr_scaling="linear"), "--lr_scaling"),
    (dict(warmup_epochs=1.0), "--warmup_epochs"),
])
def test_a_compiled_optimizer_keeps_its_own_rate_or_says_why(settings, flag):
  from tfdist.training import config as config_lib  # pylint: disable=g-import-not-at-top
  from tfdist.training import trainable  # pylint: disable=g-import-not-at-top

  class Adam:  # what the model was compiled with (its class names it)
    pass

  trainable.check_keeps_its_rate(config_lib.TrainConfig(), Adam())
  with pytest.raises(ConfigError, match=(
      f"^{flag}: the model is compiled with its own optimizer \\(Adam\\), "
      "which tfdist keeps at its own learning rate")):
    trainable.check_keeps_its_rate(config_lib.TrainConfig(**settings), Adam())
