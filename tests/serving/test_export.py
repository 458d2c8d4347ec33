"""Export (SavedModel + TFLite), tfdist.serving.predict and the serving
manifests.

Softmax regression trains on real MNIST under ps and under multiworker,
started by the real launcher (conftest's jobs, shared with the strategy
tests); the chief exports. The exports are
then checked by running ``python -m tfdist.predict`` on the real 10,000-image
test split: the SavedModel must score the trainer's own test accuracy, and the
TFLite model must agree with it image by image. Each training run is shared by
the tests of its strategy (module-scoped fixtures).

A table end to end (the breast-cancer CSV with a category and a text
column made of its measurements, split into train.csv and test.csv,
converted, trained by ``python -m tfdist.train`` with a model of
``tfdist.encoded``, exported, its test.csv predicted) must score the
trainer's accuracy, one shared job; other rows of it (another file without
one category, other columns) are then predicted in this process and must
predict as the same rows of test.csv and as their records. Exports made in
this process (every task, TFLite of a table, image folders):
tests/serving/test_serving.py.
"""

import csv
import io
import json
import os
import shutil
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, json_lines, run, trainer
from test_tables import convert, table
from test_your_model import CANCER, CSV as CANCER_CSV
# One `error:` line, exit 2, no traceback, no result: the project's rule.
from test_bad_input import _fails_with  # pylint: disable=g-bad-import-order
from tfdist import data as data_lib

SERVING_DIR = os.path.join(REPO, "k8s", "serving")
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"


def _predict(*args, timeout=120):
  return run([sys.executable, "-m", "tfdist.predict", *args], timeout=timeout)


def _predictions(model, *images, **flags):
  """(summary, classes) of predict on ``images``, in this process (the
  command line's own runs: the bad-input tests)."""
  summary, lines = _predicted(model, inputs=[str(i) for i in images],
                              **flags)
  classes = np.array([int(line.split("\t")[1])
                      for line in lines.splitlines() if "\t" in line])
  assert len(classes) == summary["images"]
  return summary, classes


def _predict_test_split(mnist_dir, model, **flags):
  return _predictions(model, os.path.join(mnist_dir, TEST_IMAGES),
                      labels=os.path.join(mnist_dir, TEST_LABELS), **flags)


@pytest.fixture(scope="module")
def ps_job(ps_launched, mnist_dir):
  (result,) = json_lines(ps_launched["stdout"], "[chief-0] ")
  saved = _predict_test_split(mnist_dir, ps_launched["export_dir"])
  return dict(ps_launched, result=result, saved_model=saved)


@pytest.fixture(scope="module")
def multiworker_job(multiworker_launched, mnist_dir):
  results = {r["task"]: r for prefix in ("[worker-0] ", "[worker-1] ")
             for r in json_lines(multiworker_launched["stdout"], prefix)}
  saved = _predict_test_split(mnist_dir, multiworker_launched["export_dir"])
  return dict(multiworker_launched, results=results, saved_model=saved)


def _check_export_layout(export_dir):
  # One SavedModel version, both TFLite models with their descriptions, no
  # half-written leftovers.
  assert sorted(os.listdir(export_dir)) == [
      "1", "model.tflite", "model.tflite.json", "model_quant.tflite",
      "model_quant.tflite.json"]
  assert (export_dir / "1" / "saved_model.pb").is_file()
  description = json.loads(
      (export_dir / "1" / "assets.extra" / "tfdist.json").read_text())
  assert (description["task"], description["class_names"]) == (
      "classification", [str(i) for i in range(10)])
  [image] = description["features"]
  assert (image["name"], image["kind"], image["shape"]) == (
      "images", "image", [28, 28, 1])
  # Dynamic-range quantisation stores int8 weights: clearly smaller.
  assert (export_dir / "model_quant.tflite").stat().st_size < \
      0.6 * (export_dir / "model.tflite").stat().st_size


def _check_accuracy_and_tflite(job, result, mnist_dir):
  summary, classes = job["saved_model"]
  assert summary["format"] == "saved_model"
  assert summary["model"] == str(job["export_dir"] / "1")
  assert summary["images"] == 10000
  # The export holds the trained weights: the trainer's own test accuracy.
  assert abs(summary["accuracy"] - result["test_accuracy"]) <= 0.001, \
      (summary, result["test_accuracy"])
  tflite, tflite_classes = _predict_test_split(
      mnist_dir, job["export_dir"] / "model.tflite")
  assert tflite["format"] == "tflite"
  assert np.mean(tflite_classes == classes) >= 0.995
  quant, _ = _predict_test_split(
      mnist_dir, job["export_dir"] / "model_quant.tflite")
  assert abs(quant["accuracy"] - result["test_accuracy"]) <= 0.01


@pytest.mark.timeout(240)
def test_ps_chief_exports_the_ps_variables(ps_job, mnist_dir):
  result = ps_job["result"]
  # Trained on the ps task; the export's plain copy holds the same weights.
  assert result["variable_devices"] == ["/job:ps/replica:0/task:0/device:CPU:0"]
  assert result["export"]["weights_digest"] == result["weights_digest"]
  assert result["export"]["version"] == 1
  _check_export_layout(ps_job["export_dir"])
  _check_accuracy_and_tflite(ps_job, result, mnist_dir)
  # Only the chief exported.
  exported = [l for l in ps_job["stdout"].splitlines() if "exported version" in l]
  assert len(exported) == 1 and exported[0].startswith("[chief-0] ")


@pytest.mark.timeout(240)
def test_multiworker_only_the_chief_exports(multiworker_job, mnist_dir):
  results = multiworker_job["results"]
  assert set(results) == {"worker-0", "worker-1"}
  chief = results["worker-0"]
  assert chief["weights_digest"] == results["worker-1"]["weights_digest"]
  assert chief["export"]["weights_digest"] == chief["weights_digest"]
  assert "export" not in results["worker-1"]
  _check_export_layout(multiworker_job["export_dir"])
  _check_accuracy_and_tflite(multiworker_job, chief, mnist_dir)
  # Worker 1 wrote nothing anywhere, not even a temporary directory.
  assert os.listdir(multiworker_job["tmp"]) == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_float_signature_predicts_the_same(ps_job, mnist_dir):
  summary, classes = _predict_test_split(
      mnist_dir, ps_job["export_dir"], signature="serving_float")
  assert summary["signature"] == "serving_float"
  assert np.array_equal(classes, ps_job["saved_model"][1])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_png_files_predict_as_their_idx_images(ps_job, mnist_dir, tmp_path):
  images = data_lib.read_idx(os.path.join(mnist_dir, TEST_IMAGES),
                             expect_magic=2051)
  indices = [0, 1, 2, 3, 4, 7, 11, 18, 61, 247]
  paths = []
  for index in indices:
    paths.append(str(tmp_path / f"test-{index}.png"))
    Image.fromarray(images[index]).save(paths[-1])
  # 1-bit and palette PNGs are common too; they decode to the same pixels.
  bilevel = tmp_path / "bilevel.png"
  Image.fromarray(images[0]).convert("1").save(bilevel)
  for model in (ps_job["export_dir"], ps_job["export_dir"] / "model.tflite"):
    summary, classes = _predictions(model, *paths, bilevel)
    assert summary["images"] == len(indices) + 1
    assert "accuracy" not in summary
    assert list(classes[:-1]) == list(ps_job["saved_model"][1][indices])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_second_export_is_the_next_version(ps_job, mnist_dir, tmp_path):
  export_dir = tmp_path / "export"
  shutil.copytree(ps_job["export_dir"], export_dir)
  done = run(trainer("mnist", "--strategy=mirrored", "--epochs=1",
                     "--steps_per_epoch=5", f"--mnist_dir={mnist_dir}",
                     f"--export_dir={export_dir}"), timeout=100)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json_lines(done.stdout)[-1]
  assert result["export"]["version"] == 2
  assert result["export"]["tflite"] is None
  assert sorted(os.listdir(export_dir)) == [
      "1", "2", "model.tflite", "model.tflite.json", "model_quant.tflite",
      "model_quant.tflite.json"]
  # The newest version is what TensorFlow Serving and predict pick.
  summary, _ = _predict_test_split(mnist_dir, export_dir)
  assert summary["model"] == str(export_dir / "2")
  assert abs(summary["accuracy"] - result["test_accuracy"]) <= 0.001


@pytest.fixture
def bad_files(tmp_path):
  notes = tmp_path / "notes.txt"
  notes.write_text("not an image\n")
  Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "big.png")
  Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(tmp_path / "rgb.png")
  Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "ok.png")
  (tmp_path / "empty").mkdir()
  (tmp_path / "corrupt" / "1").mkdir(parents=True)
  (tmp_path / "corrupt" / "1" / "saved_model.pb").write_bytes(b"garbage")
  return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("model,inputs,message", [
    ("tflite", ["notes.txt"], "notes.txt is neither a PNG or JPEG image nor "
     "an IDX"),
    ("tflite", ["big.png"], "big.png is 32x32 pixels, the model takes 28x28"),
    ("tflite", ["rgb.png"], "rgb.png has 3 channels, the model takes 1 "
     "(grayscale)"),
    ("tflite", ["ok.png", "missing.png"], "missing.png: no such file"),
    ("empty", ["ok.png"], "is not an export (a directory without "
     "saved_model.pb or numbered versions)"),
    ("notes.txt", ["ok.png"], "is not an export (a file that is not a TFLite "
     "model)"),
    ("corrupt", ["ok.png"], "is not an export (TensorFlow cannot load it"),
    ("saved_model", ["rgb.png"], "rgb.png has 3 channels"),
])
@pytest.mark.timeout(60)
def test_bad_predict_input(ps_job, bad_files, model, inputs, message):
  model_path = {"tflite": ps_job["export_dir"] / "model.tflite",
                "saved_model": ps_job["export_dir"]}.get(
                    model, bad_files / model)
  done = _predict(f"--model={model_path}",
                  *[str(bad_files / name) for name in inputs], timeout=50)
  _fails_with(done, message)


@pytest.mark.timeout(60)
def test_labels_need_one_idx_input(ps_job, mnist_dir, bad_files):
  done = _predict(f"--model={ps_job['export_dir'] / 'model.tflite'}",
                  str(bad_files / "ok.png"),
                  f"--labels={os.path.join(mnist_dir, TEST_LABELS)}")
  _fails_with(done, "needs exactly one IDX images file")
  done = _predict(f"--model={ps_job['export_dir'] / 'model.tflite'}",
                  os.path.join(mnist_dir, TEST_IMAGES),
                  f"--labels={os.path.join(mnist_dir, 'train-labels-idx1-ubyte.gz')}")
  _fails_with(done, "has 24345 labels for 10000 images")


@pytest.mark.parametrize("flags,message", [
    (["--tflite"], "--tflite writes into the export: add --export_dir"),
    (["--tflite_quantize"], "--tflite_quantize writes into the export"),
    (["--export_dir={file}/sub"], "--export_dir={file}/sub is not writable"),
])
@pytest.mark.timeout(60)
def test_bad_export_flags(flags, message, mnist_dir, tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("")
  done = run(trainer("mnist", "--strategy=mirrored", f"--mnist_dir={mnist_dir}",
                     *[f.format(file=a_file) for f in flags]), timeout=50)
  _fails_with(done, message.format(file=a_file))


def _serving_objects():
  objects = {}
  for name in sorted(os.listdir(SERVING_DIR)):
    with open(os.path.join(SERVING_DIR, name)) as f:
      for document in yaml.safe_load_all(f):
        objects[document["kind"]] = document
  return objects


@pytest.mark.timeout(60)
def test_serving_manifests_are_valid_and_locked_down():
  files = sorted(os.path.join(SERVING_DIR, n) for n in os.listdir(SERVING_DIR))
  done = run(["kubernetes-validate", "--strict", *files], timeout=50)
  assert done.returncode == 0, done.stdout + done.stderr
  objects = _serving_objects()
  assert set(objects) == {"Deployment", "Service", "NetworkPolicy"}
  pod = objects["Deployment"]["spec"]["template"]["spec"]
  assert pod["automountServiceAccountToken"] is False
  assert pod["securityContext"]["runAsNonRoot"] is True
  assert pod["securityContext"]["runAsUser"] != 0
  (container,) = pod["containers"]
  assert container["securityContext"] == {
      "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
      "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
  # Never exposed outside the cluster.
  assert objects["Service"]["spec"]["type"] == "ClusterIP"
  assert objects["NetworkPolicy"]["spec"]["policyTypes"] == ["Ingress",
                                                             "Egress"]
  # The server reads the export where the volume is mounted, read-only, and
  # the readiness probe asks for the model it serves.
  args = dict(a.lstrip("-").split("=", 1) for a in container["args"])
  (mount,) = [m for m in container["volumeMounts"]
              if m["mountPath"] == args["model_base_path"]]
  assert mount["readOnly"] is True
  assert container["readinessProbe"]["httpGet"]["path"] == \
      f"/v1/models/{args['model_name']}"


# ---- A table end to end: CSV rows in, class names out ---------------------

BANDS = ("low", "mid", "high")


def cancer_table():
  """(header, training rows, test rows) of the breast-cancer table, every
  4th row a test row, with two columns made of its measurements: in the
  stead of ``worst concave points``, ``concavity``, a category (the
  training rows' terciles: low, mid, high); and ``notes``, a text
  (``large tumour with irregular outline``: the terciles of worst area,
  and worst concavity above the training median or not). The label,
  ``diagnosis``, stays last."""
  with open(CANCER_CSV, newline="") as f:
    header, *rows = csv.reader(f)
  column = {name: i for i, name in enumerate(header)}
  train = [r for i, r in enumerate(rows) if i % 4 != 3]

  def band(name, names):
    cuts = np.quantile([float(r[column[name]]) for r in train],
                       np.arange(1, len(names)) / len(names))
    return lambda r: names[int(np.searchsorted(cuts, float(r[column[name]])))]

  concavity = band("worst concave points", BANDS)
  size = band("worst area", ("small", "medium", "large"))
  outline = band("worst concavity", ("regular", "irregular"))
  gone = column["worst concave points"]
  header = header[:gone] + header[gone + 1:-1] + [
      "concavity", "notes", header[-1]]
  table = [r[:gone] + r[gone + 1:-1] + [
      concavity(r), f"{size(r)} tumour with {outline(r)} outline", r[-1]]
           for r in rows]
  return (header, [r for i, r in enumerate(table) if i % 4 != 3],
          [r for i, r in enumerate(table) if i % 4 == 3])


@pytest.fixture(scope="module")
def table_job(tmp_path_factory):
  """The table of cancer_table as train.csv and test.csv, converted (one
  shard per split: the test records in test.csv's order), trained by
  python -m tfdist.train with tests/user_models.py's ``encoded`` (every
  feature through tfdist.encoded) and exported; then predict on test.csv.
  Returns the directories, the trainer's result and predict's run."""
  base = tmp_path_factory.mktemp("table")
  header, train, test = cancer_table()
  (base / "table").mkdir()
  table(base / "table" / "train.csv", [header, *train])
  table(base / "table" / "test.csv", [header, *test])
  records, export_dir = base / "records", base / "export"
  # Converted in this process (TensorFlow is loaded here already).
  convert(base / "table", records, "--label=diagnosis", "--shards=1")
  done = run([sys.executable, "-m", "tfdist.train",
              "--model=tests.user_models:encoded",
              f"--train_files={records}/train-*",
              f"--test_files={records}/test-*",
              f"--export_dir={export_dir}", *CANCER], timeout=180)
  assert done.returncode == 0, done.stderr[-3000:]
  # In this process too: the command line is
  # test_a_bad_row_fails_before_tensorflow's.
  from tfdist.serving import predict  # pylint: disable=g-import-not-at-top
  out = io.StringIO()
  summary = predict.predict(model=str(export_dir), out=out,
                            inputs=[str(base / "table" / "test.csv")])
  return {"base": base, "records": records, "export_dir": export_dir,
          "result": json_lines(done.stdout)[-1],
          "summary": summary, "lines": out.getvalue()}


def _predicted(export_dir, **inputs):
  """(summary, predict's output) of predict in this process."""
  from tfdist.serving import predict  # pylint: disable=g-import-not-at-top
  out = io.StringIO()
  summary = predict.predict(model=str(export_dir), out=out, **inputs)
  return summary, out.getvalue()


def _lines(text):
  """``{row: (prediction, probability)}`` of predict's example lines."""
  return {name.rsplit(":", 1)[-1]: rest for name, *rest in
          (line.split("\t") for line in text.splitlines() if "\t" in line)}


def test_csv_rows_predict_class_names_at_the_trainers_accuracy(table_job):
  summary, result = table_job["summary"], table_job["result"]
  assert (summary["ml_task"], summary["rows"]) == ("classification", 142)
  assert abs(summary["accuracy"] - result["test_accuracy"]) <= 0.005, (
      summary, result["test_accuracy"])
  assert summary["accuracy"] >= 0.9  # always "benign" scores 0.63
  lines = _lines(table_job["lines"])
  assert len(lines) == 142
  assert {name for name, _ in lines.values()} == {"benign", "malignant"}


def test_the_export_describes_its_columns_task_and_classes(table_job):
  version = table_job["export_dir"] / "1"
  description = json.loads((version / "assets.extra" / "tfdist.json")
                           .read_text())
  assert description["task"] == "classification"
  assert description["label_names"] == ["diagnosis"]
  assert description["class_names"] == ["benign", "malignant"]
  assert description["outputs"] == ["probabilities", "classes",
                                    "class_names"]
  header, _, _ = cancer_table()
  assert description["columns"] == {
      column.replace(" ", "_"): [column] for column in header[:-1]}
  features = {f["name"]: f for f in description["features"]}
  assert (features["mean_radius"]["kind"], features["mean_radius"]["key"]) \
      == ("numeric", "mean radius")
  assert features["concavity"]["vocabulary"] == sorted(BANDS)
  assert features["concavity"]["kind"] == "category"
  assert features["notes"]["kind"] == "text"


def test_rows_predict_as_their_records(table_job):
  # The same test rows, read by predict from test.csv and by the training
  # pipeline from their records: the same lines, in the same order.
  _, by_records = _predicted(table_job["export_dir"],
                             records=f"{table_job['records']}/test-*")
  assert [line.split("\t")[1:] for line in by_records.splitlines()] == list(
      _lines(table_job["lines"]).values())


def test_rows_of_another_file_with_a_category_absent_predict_the_same(
    table_job, tmp_path):
  """Issue 28, silent wrong result 1: rows of another file, whose
  categories were not the training file's, shifted every id."""
  header, _, test = cancer_table()
  band = header.index("concavity")
  # Next month's file: no "low" row, the rows in reverse, the columns in
  # another order, the label gone.
  kept = [(line, r) for line, r in enumerate(test, start=2)
          if r[band] != "low"][::-1]
  assert 0 < len(kept) < len(test)
  order = list(range(len(header) - 1))[::-1]
  table(tmp_path / "next.csv", [[header[i] for i in order]] +
        [[r[i] for i in order] for _, r in kept])
  summary, next_lines = _predicted(table_job["export_dir"],
                                   inputs=[str(tmp_path / "next.csv")])
  assert summary["rows"] == len(kept) and "accuracy" not in summary
  before = _lines(table_job["lines"])
  assert list(_lines(next_lines).values()) == [
      before[str(line)] for line, _ in kept]


def test_rows_without_labels_in_any_column_order_predict_the_same(
    table_job, tmp_path):
  header, _, test = cancer_table()
  # Columns reversed, the label gone, a column the model does not read.
  table(tmp_path / "new.csv", [["patient"] + header[-2::-1]] +
        [[f"p{i}"] + r[-2::-1] for i, r in enumerate(test)])
  summary, lines = _predicted(table_job["export_dir"],
                              inputs=[str(tmp_path / "new.csv")])
  assert summary["rows"] == 142 and "accuracy" not in summary
  assert _lines(lines) == _lines(table_job["lines"])


def test_an_older_export_predicts_records_and_says_how_to_read_rows(
    table_job, tmp_path, capsys):
  from tfdist.serving import predict  # pylint: disable=g-import-not-at-top
  older = tmp_path / "export"
  shutil.copytree(table_job["export_dir"], older)
  os.remove(older / "1" / "assets.extra" / "tfdist.json")
  # Its records (with their manifest) still predict, with class names.
  summary, lines = _predicted(older, records=f"{table_job['records']}/test-*")
  assert summary["accuracy"] == table_job["result"]["test_accuracy"]
  assert {line.split("\t")[1] for line in lines.splitlines()} == {
      "benign", "malignant"}
  status = predict.main([f"--model={older}",
                         str(table_job["base"] / "table" / "test.csv")])
  assert status == 2
  assert capsys.readouterr().err.splitlines() == [
      f"error: {older / '1'} is an export of an older tfdist, without the "
      "description of the CSV columns it reads; export the model again "
      "(train with --export_dir), or predict on --records=PATTERN"]


def _bad_rows(path, change):
  header, _, test = cancer_table()
  header, test = change(list(header), [list(r) for r in test[:5]])
  table(path, [header, *test])


def _without(column):
  def change(header, rows):
    index = header.index(column)
    return (header[:index] + header[index + 1:],
            [r[:index] + r[index + 1:] for r in rows])
  return change


def _cell(line, column, value):
  def change(header, rows):
    rows[line - 2][header.index(column)] = value
    return header, rows
  return change


@pytest.mark.parametrize("change, message", [
    (_without("mean texture"), "{csv}:2: no column 'mean texture' (feature "
     "'mean_texture' reads it); give the rows every column the model was "
     "trained on"),
    (_cell(3, "mean area", "abc"), "{csv}:3: column 'mean area' holds "
     "numbers (feature 'mean_area'), not 'abc'; correct the value"),
    (_cell(4, "mean area", "NA"), "{csv}:4: column 'mean area' is missing "
     "('NA') and feature 'mean_area' was written without missing values"),
    (_cell(5, "concavity", "n/a"), "{csv}:5: column 'concavity' is missing "
     "('n/a') and feature 'concavity' was written without missing values"),
    (_cell(2, "diagnosis", ""), "{csv}:2: the label 'diagnosis' is missing "
     "(''); fill it in or remove the row; or remove the label column(s) to "
     "predict without scoring"),
    (_cell(2, "diagnosis", "unsure"), "{csv}:2: label 'unsure' is not one of "
     "the 2 classes (benign, malignant); or remove the label column(s)"),
    (lambda header, rows: (header, []), "{csv}: a header and no rows; give "
     "it the rows to predict"),
    (lambda header, rows: (header + ["mean area"], [r + ["1"] for r in rows]),
     "{csv}:1: column 'mean area' is named twice"),
])
def test_bad_rows_are_one_line(table_job, tmp_path, capsys, change, message):
  from tfdist.serving import predict  # pylint: disable=g-import-not-at-top
  path = tmp_path / "rows.csv"
  _bad_rows(path, change)
  status = predict.main([f"--model={table_job['export_dir']}", str(path)])
  assert status == 2
  [line] = capsys.readouterr().err.splitlines()
  assert line.startswith("error: ") and message.format(csv=path) in line, line


def test_a_bad_row_fails_before_tensorflow(table_job, tmp_path):
  path = tmp_path / "rows.csv"
  _bad_rows(path, _cell(3, "mean area", "abc"))
  done = _predict(f"--model={table_job['export_dir']}", str(path))
  _fails_with(done, f"{path}:3: column 'mean area'")
  # One line and nothing else: TensorFlow, which logs as it starts, never
  # started.
  assert len(done.stderr.strip().splitlines()) == 1, done.stderr
  # The rows fixed, the command predicts them: lines, then the summary
  # line, written once, whole, last.
  _bad_rows(path, lambda header, rows: (header, rows))
  done = _predict(f"--model={table_job['export_dir']}", str(path))
  assert done.returncode == 0, done.stderr[-3000:]
  assert _lines(done.stdout) == {
      row: line for row, line in _lines(table_job["lines"]).items()
      if int(row) <= 6}
  assert [json.loads(line) for line in done.stdout.splitlines()
          if line.startswith("{")] == [json_lines(done.stdout)[-1]]
  assert done.stdout.splitlines()[-1].startswith("{")
