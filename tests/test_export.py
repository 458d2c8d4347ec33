"""Export (SavedModel + TFLite), tfdist.predict and the serving manifests.

Softmax regression trains on real MNIST under ps and under multiworker,
started by the real launcher (conftest's jobs, shared with the strategy
tests); the chief exports. The exports are
then checked by running ``python -m tfdist.predict`` on the real 10,000-image
test split: the SavedModel must score the trainer's own test accuracy, and the
TFLite model must agree with it image by image. Each training run is shared by
the tests of its strategy (module-scoped fixtures).
"""

import os
import shutil
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, json_lines, run, trainer
# One `error:` line, exit 2, no traceback, no result: the project's rule.
from test_bad_input import _fails_with  # pylint: disable=g-bad-import-order
from tfdist import data as data_lib

SERVING_DIR = os.path.join(REPO, "k8s", "serving")
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"


def _predict(*args, timeout=120):
  return run([sys.executable, "-m", "tfdist.predict", *args], timeout=timeout)


def _predictions(done):
  """(summary, classes) of a successful predict run."""
  assert done.returncode == 0, done.stderr[-3000:]
  summary = json_lines(done.stdout)[-1]
  classes = np.array([int(line.split("\t")[1])
                      for line in done.stdout.splitlines() if "\t" in line])
  assert len(classes) == summary["images"]
  return summary, classes


def _predict_test_split(mnist_dir, model, *flags):
  return _predictions(_predict(
      f"--model={model}", os.path.join(mnist_dir, TEST_IMAGES),
      f"--labels={os.path.join(mnist_dir, TEST_LABELS)}", *flags))


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
  # One SavedModel version, both TFLite models, no half-written leftovers.
  assert sorted(os.listdir(export_dir)) == [
      "1", "model.tflite", "model_quant.tflite"]
  assert (export_dir / "1" / "saved_model.pb").is_file()
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
      mnist_dir, ps_job["export_dir"], "--signature=serving_float")
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
    summary, classes = _predictions(_predict(f"--model={model}", *paths,
                                             str(bilevel)))
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
      "1", "2", "model.tflite", "model_quant.tflite"]
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
    ("tflite", ["notes.txt"], "notes.txt is neither a PNG image nor an IDX"),
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
