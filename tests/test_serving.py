"""What an export serves, exported in this process: raw features in, the
task's predictions out (tfdist.serving, export, exported, predict).

A table of real rows (the breast-cancer CSV, with one category column
derived from it, ``smoothness band``) trains three small Keras models with
their own preprocessing layers (StringLookup, Normalization) for a few
epochs: a classifier ending in softmax, a two-value regression and a
two-label multilabel model giving logits. Each is exported and its CSV rows
predicted: the served outputs must be the Keras model's on the same raw
rows, a category training never had must be the model's unknown id, and
rows must predict the same from any file. A folder of real MNIST digits
(PNG and JPEG, grayscale and colour) is converted, trained and exported:
images given to predict must be read pixel for pixel as the training
records hold them, and printed by class name.
"""

import csv
import functools
import io
import os
import shutil
import types

import numpy as np
import pytest

from conftest import REPO

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tensorflow as tf  # pylint: disable=wrong-import-position

from tfdist import data as data_lib  # pylint: disable=wrong-import-position
from tfdist import export as export_lib  # pylint: disable=wrong-import-position
from tfdist import exported  # pylint: disable=wrong-import-position
from tfdist import features as features_lib  # pylint: disable=wrong-import-position
from tfdist import image_files  # pylint: disable=wrong-import-position
from tfdist import models  # pylint: disable=wrong-import-position
from tfdist import predict  # pylint: disable=wrong-import-position
from tfdist import rows as rows_lib  # pylint: disable=wrong-import-position
from tfdist import serving  # pylint: disable=wrong-import-position
from tfdist.data import convert  # pylint: disable=wrong-import-position
from tfdist.data import records  # pylint: disable=wrong-import-position
from tfdist.data import sources  # pylint: disable=wrong-import-position
from tfdist.errors import ConfigError  # pylint: disable=wrong-import-position

CANCER_CSV = os.path.join(REPO, "examples", "breast_cancer", "data",
                          "breast_cancer.csv")
BANDS = ("low", "mid", "high")
INPUTS = ("mean radius", "mean texture", "smoothness band", "diagnosis")


def _table():
  """The breast-cancer rows with derived columns: ``smoothness band`` (the
  training rows' terciles of mean smoothness), ``malignant`` and
  ``rough`` (mean texture above the training median), 0/1. Every 4th row
  is a test row. Returns (header, training rows, test rows)."""
  with open(CANCER_CSV, newline="") as f:
    header, *rows = csv.reader(f)
  column = {name: i for i, name in enumerate(header)}
  train = [r for i, r in enumerate(rows) if i % 4 != 3]
  smooth = [float(r[column["mean smoothness"]]) for r in train]
  edges = np.quantile(smooth, [1 / 3, 2 / 3])
  rough = np.median([float(r[column["mean texture"]]) for r in train])
  derived = ["smoothness band", "malignant", "rough"]
  table = [r + [BANDS[int(np.searchsorted(edges, float(
      r[column["mean smoothness"]])))],
                str(int(r[column["diagnosis"]] == "malignant")),
                str(int(float(r[column["mean texture"]]) > rough))]
           for r in rows]
  return (header + derived, [r for i, r in enumerate(table) if i % 4 != 3],
          [r for i, r in enumerate(table) if i % 4 == 3])


def _features(header, train, columns):
  """The features of ``columns`` from the training rows: numbers with
  their float64 mean and std, strings with their sorted vocabulary."""
  found = []
  for column in columns:
    cells = [r[header.index(column)] for r in train]
    name = column.replace(" ", "_")
    if column in ("smoothness band", "diagnosis"):
      found.append(features_lib.Feature(
          name=name, kind="category", shape=(), key=column,
          vocabulary=tuple(sorted(set(cells)))))
    else:
      values = np.array(cells, np.float64)
      found.append(features_lib.Feature(
          name=name, kind="numeric", shape=(1,), key=column,
          mean=(float(values.mean()),), std=(float(values.std()),)))
  return features_lib.by_name(found)


def table_model(features, num_outputs, *, activation=None):
  """Raw inputs, the model's own preprocessing layers, a hidden layer."""
  inputs = {name: f.keras_input() for name, f in features.items()}
  parts = [tf.keras.layers.StringLookup(
      vocabulary=list(f.vocabulary), output_mode="one_hot")(inputs[name])
           if f.kind == "category" else tf.keras.layers.Normalization(
               mean=list(f.mean), variance=[s * s for s in f.std])(
                   inputs[name])
           for name, f in features.items()]
  x = tf.keras.layers.Dense(8, activation="relu")(
      tf.keras.layers.Concatenate()(parts))
  return tf.keras.Model(inputs, tf.keras.layers.Dense(
      num_outputs, activation=activation)(x))


def _raw(header, table, features):
  """The Keras model's inputs of ``table``'s rows (raw, by feature name)."""
  return {name: np.array([[float(r[header.index(f.key)])] for r in table],
                         np.float32) if f.kind == "numeric"
          else np.array([r[header.index(f.key)] for r in table], object)
          for name, f in features.items()}


# The three models: task, inputs, label columns, last activation, loss.
TASKS = {
    "classification": (INPUTS[:3], ("diagnosis",), "softmax",
                       "sparse_categorical_crossentropy"),
    "regression": (("mean radius", "smoothness band", "diagnosis"),
                   ("mean area", "mean perimeter"), None, "mse"),
    "multilabel": (INPUTS[:3], ("malignant", "rough"), None,
                   tf.keras.losses.BinaryCrossentropy(from_logits=True)),
}


def _train_and_export(task, header, train, export_dir):
  columns, labels, activation, loss = TASKS[task]
  features = _features(header, train, columns)
  classes = (("benign", "malignant") if task == "classification"
             else labels if task == "multilabel" else ())
  width = len(classes) if task == "classification" else len(labels)
  model_fn = functools.partial(table_model, activation=activation)
  tf.keras.utils.set_random_seed(0)
  model = model_fn(features, width)
  if task == "classification":
    y = np.array([classes.index(r[header.index("diagnosis")]) for r in train])
  else:
    y = np.array([[float(r[header.index(c)]) for c in labels]
                  for r in train], np.float32)
  model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss=loss)
  model.fit(_raw(header, train, features), y, epochs=15, batch_size=64,
            verbose=0)
  source = types.SimpleNamespace(
      features=features, num_classes=width, task=task, class_names=classes,
      label_names=labels)
  export_lib.export(model, model_fn=model_fn, source=source,
                    export_dir=str(export_dir),
                    probabilities=activation == "softmax")
  return model, features


def write_csv(path, header, rows):
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows([header, *rows])


@pytest.fixture(scope="module")
def table_exports(tmp_path_factory):
  """Each task's model trained, exported; the test rows as test.csv."""
  base = tmp_path_factory.mktemp("served")
  header, train, test = _table()
  write_csv(base / "test.csv", header, test)
  exports = {task: (base / task, *_train_and_export(task, header, train,
                                                    base / task))
             for task in TASKS}
  return {"base": base, "header": header, "test": test, "exports": exports}


@functools.lru_cache(maxsize=None)
def _loaded(export_dir):
  return exported.load_model(exported.resolve_model(str(export_dir)))


def _served(export_dir, inputs):
  """The export's outputs on ``inputs`` (its serving_default, raw)."""
  return _loaded(export_dir).predict_fn(inputs)


def _both(table_exports, task):
  """(export, header, test rows, the Keras model's outputs, the export's
  outputs) of ``task``'s model on the test rows."""
  export_dir, model, features = table_exports["exports"][task]
  header, test = table_exports["header"], table_exports["test"]
  raw = _raw(header, test, features)
  return (export_dir, header, test, model.predict(raw, verbose=0),
          _served(export_dir, raw))


def _predicted(export_dir, *paths):
  out = io.StringIO()
  summary = predict.predict(model=str(export_dir),
                            inputs=[str(p) for p in paths], out=out)
  return summary, [line.split("\t") for line in out.getvalue().splitlines()]


def test_class_names_and_probabilities_are_the_keras_models(table_exports):
  # The model ends in a softmax: its outputs are the probabilities.
  export_dir, header, test, keras, served = _both(table_exports,
                                                  "classification")
  np.testing.assert_allclose(served["probabilities"], keras, atol=1e-6)
  names = np.array(["benign", "malignant"])[keras.argmax(axis=1)]
  assert list(served["class_names"]) == list(names)
  summary, lines = _predicted(export_dir, table_exports["base"] / "test.csv")
  assert [name for _, name, _ in lines] == list(names)
  truth = [r[header.index("diagnosis")] for r in test]
  assert summary["accuracy"] == round(float(np.mean(names == truth)), 5)
  assert summary["accuracy"] >= 0.85  # always "benign" scores 0.63


def test_an_unseen_category_is_the_models_unknown_id(table_exports):
  export_dir, model, features = table_exports["exports"]["classification"]
  header, test = table_exports["header"], table_exports["test"][:20]
  band = header.index("smoothness band")
  for value in ("very high", "zzz"):
    unseen = [r[:band] + [value] + r[band + 1:] for r in test]
    raw = _raw(header, unseen, features)
    outputs = _served(export_dir, raw)["probabilities"]
    np.testing.assert_allclose(outputs, model.predict(raw, verbose=0),
                               atol=1e-6)
    if value == "zzz":  # any unseen string: the one unknown id
      np.testing.assert_array_equal(outputs, previous)
    previous = outputs


def test_rows_of_another_file_with_other_categories_predict_the_same(
    table_exports, tmp_path):
  export_dir, _, _ = table_exports["exports"]["classification"]
  header, test = table_exports["header"], table_exports["test"]
  band = header.index("smoothness band")
  # Next month's file: the same rows in reverse, its columns in another
  # order, without some bands, among rows of a band training never had.
  order = [header.index(c) for c in reversed(header)]
  others = [r[:band] + ["very high"] + r[band + 1:] for r in test[:30]]
  kept = [r for r in test if r[band] != "low"]
  write_csv(tmp_path / "next.csv", [header[i] for i in order],
            [[r[i] for i in order] for r in others + kept[::-1]])
  _, lines = _predicted(export_dir, table_exports["base"] / "test.csv")
  by_row = dict(zip(map(tuple, test), (line[1:] for line in lines)))
  _, next_lines = _predicted(export_dir, tmp_path / "next.csv")
  assert [line[1:] for line in next_lines[30:]] == [
      by_row[tuple(r)] for r in kept[::-1]]


def test_regression_serves_values_and_predict_scores_them(table_exports):
  export_dir, header, test, keras, served = _both(table_exports,
                                                  "regression")
  assert set(served) == {"values"} and served["values"].shape == (142, 2)
  np.testing.assert_allclose(served["values"], keras, rtol=1e-5)
  summary, lines = _predicted(export_dir, table_exports["base"] / "test.csv")
  assert summary["ml_task"] == "regression"
  assert [line[1] for line in lines] == [
      ",".join(f"{v:.6g}" for v in row) for row in served["values"]]
  truth = np.array([[float(r[header.index(c)]) for c in
                     ("mean area", "mean perimeter")] for r in test])
  errors = keras.astype(np.float64) - truth
  r2 = np.mean(1 - np.sum(errors ** 2, axis=0) / np.sum(
      (truth - truth.mean(axis=0)) ** 2, axis=0))
  assert summary["mse"] == pytest.approx(np.mean(errors ** 2), rel=1e-4)
  assert summary["mae"] == pytest.approx(np.mean(np.abs(errors)), rel=1e-4)
  assert summary["r2"] == pytest.approx(r2, rel=1e-4, abs=1e-5)


def test_multilabel_serves_probabilities_and_labels(table_exports):
  export_dir, header, test, logits, served = _both(table_exports,
                                                   "multilabel")
  probabilities = 1 / (1 + np.exp(-logits.astype(np.float64)))
  np.testing.assert_allclose(served["probabilities"], probabilities,
                             atol=1e-6)
  np.testing.assert_array_equal(served["labels"],
                                (served["probabilities"] >= 0.5).astype(int))
  summary, lines = _predicted(export_dir, table_exports["base"] / "test.csv")
  names = np.array(["malignant", "rough"])
  assert [line[1] for line in lines] == [
      ",".join(names[on == 1]) or "-" for on in served["labels"]]
  truth = np.array([[float(r[header.index(c)]) for c in names]
                    for r in test])
  assert summary["binary_accuracy"] == round(
      float(np.mean(served["labels"] == truth)), 5)
  assert summary["binary_accuracy"] >= 0.8


def test_tflite_is_refused_for_strings_before_training():
  features = _features(*_table()[:2], INPUTS[:3])
  with pytest.raises(ConfigError, match="--tflite: TFLite's built-in ops "
                     "look up no strings, and 'smoothness_band' is a "
                     "category feature; drop --tflite"):
    serving.check_tflite(features)
  serving.check_tflite({"mean_radius": features["mean_radius"]})


def test_rows_read_missing_numbers_as_nan_only_for_a_filled_feature(tmp_path):
  header, train, test = _table()
  features = _features(header, train, INPUTS[:3])
  filled = dict(features, mean_texture=features_lib.Feature(
      name="mean_texture", kind="numeric", shape=(1,), key="mean texture",
      mean=(1.0,), std=(1.0,), fill="mean"))
  texture = header.index("mean texture")
  rows = [r[:texture] + [cell] + r[texture + 1:]
          for r, cell in zip(test, ["", "NA", "nan", "null", "17.5"])]
  write_csv(tmp_path / "rows.csv", header, rows)
  description = serving.Description(filled, serving.Target(
      class_names=("benign", "malignant"), label_names=("diagnosis",)))
  read = rows_lib.read([str(tmp_path / "rows.csv")], description)
  values = read.inputs["mean_texture"][:, 0]
  assert np.isnan(values[:4]).all() and values[4] == 17.5
  assert read.inputs["smoothness_band"].dtype == object
  assert list(read.labels) == [("benign", "malignant").index(
      r[header.index("diagnosis")]) for r in rows]
  with pytest.raises(ConfigError, match=":2: column 'mean texture' is "
                     "missing a value"):
    rows_lib.read([str(tmp_path / "rows.csv")], serving.Description(
        features, description.target))


# ---- A folder of real digits: PNG and JPEG, grayscale and colour ---------

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven",
         "eight", "nine")


def _save(path, image, kind):
  """``kind``: a grayscale PNG or JPEG, or the same pixels as an RGB PNG."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  encoded = (tf.io.encode_jpeg(image, quality=90) if kind == "jpeg" else
             tf.io.encode_png(np.repeat(image, 3, axis=-1) if kind == "rgb"
                              else image))
  with open(path, "wb") as f:
    f.write(encoded.numpy())


@pytest.fixture(scope="module")
def digit_folder(mnist_dir, tmp_path_factory):
  """60 real MNIST digits of each class in folders named by word, 24 as
  grayscale JPEGs, 18 as RGB PNGs, 18 as grayscale PNGs; converted (every 6th of a class a test image), softmax regression
  trained on the records for 5 epochs and exported."""
  base = tmp_path_factory.mktemp("digits")
  mnist = data_lib.load_mnist_idx(mnist_dir)
  for digit, word in enumerate(WORDS):
    for j, image in enumerate(
        mnist.test.images[mnist.test.labels == digit][:60]):
      # Every kind among the training and the test images (every 6th).
      kind = ("jpeg", "rgb", "png")[j // 6 % 3]
      _save(str(base / "digits" / word /
                f"{j:02d}.{'jpg' if kind == 'jpeg' else 'png'}"), image, kind)
  folder = convert.folder_source(str(base / "digits"), test_every=6)
  said = []
  convert.write(folder, out_dir=str(base / "records"), num_shards=1,
                report=said.append)
  source = sources.open_files(f"{base}/records/train-*",
                              f"{base}/records/test-*")
  model = models.softmax_regression(source.features, source.num_classes)
  model.compile(optimizer=tf.keras.optimizers.Adam(0.01),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  model.fit(source.train_dataset_fn(50, seed=0)(tf.distribute.InputContext()),
            epochs=5, steps_per_epoch=10, verbose=0)
  export_lib.export(model, model_fn=models.softmax_regression,
                    source=source, export_dir=str(base / "export"))
  test_files = [name for name, _, _ in folder.splits["test"][1]()]
  return {"base": base, "source": source, "said": said,
          "test_files": test_files}


def test_images_are_read_as_their_records_hold_them(digit_folder):
  # The folder mixes grayscale and colour: RGB records, said in one line.
  source = digit_folder["source"]
  assert source.image_shape == (28, 28, 3)
  assert digit_folder["said"][-1].startswith(
      "the images mix channels (420 grayscale, 180 RGB)")
  files = digit_folder["test_files"]
  assert {os.path.splitext(f)[1] for f in files} == {".png", ".jpg"}
  image_files.check_all(files, source.image_shape)
  _, images = image_files.read(files, image_shape=source.image_shape)
  stored, labels = records.serving_inputs(source.test_files, source.spec)
  # Pixel for pixel: JPEGs through TensorFlow's decoder, grayscale images
  # repeated in the three channels, as the training pipeline reads them.
  np.testing.assert_array_equal(images, stored["images"])
  assert list(labels) == [sorted(WORDS).index(f.split(os.sep)[-2])
                          for f in files]


def test_images_print_class_names(digit_folder):
  export_dir = digit_folder["base"] / "export"
  files = digit_folder["test_files"]
  summary, lines = _predicted(export_dir, *files)
  assert summary["images"] == 100
  names = [line[1] for line in lines]
  assert set(names) <= set(WORDS)
  truth = [f.split(os.sep)[-2] for f in files]
  assert np.mean(np.array(names) == truth) >= 0.7, list(zip(names, truth))
  out = io.StringIO()
  by_records = predict.predict(
      model=str(export_dir), out=out,
      records=f"{digit_folder['base']}/records/test-*")
  assert [line.split("\t")[1:] for line in out.getvalue().splitlines()] == [
      line[1:] for line in lines]
  assert by_records["accuracy"] == round(float(np.mean(
      np.array(names) == truth)), 5)


def test_an_older_export_prints_class_ids_and_says_so(digit_folder, tmp_path,
                                                      capsys):
  older = tmp_path / "export"
  shutil.copytree(digit_folder["base"] / "export", older)
  os.remove(older / "1" / "assets.extra" / "tfdist.json")
  files = digit_folder["test_files"][:10]
  _, lines = _predicted(older, *files)
  _, named = _predicted(digit_folder["base"] / "export", *files)
  sorted_words = sorted(WORDS)
  assert [sorted_words[int(line[1])] for line in lines] == [
      line[1] for line in named]
  assert (f"{older / '1'} has no class names (an export of an older "
          "tfdist): printing class ids; export the model again to print "
          "names") in capsys.readouterr().err
