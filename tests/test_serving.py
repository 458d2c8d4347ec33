"""What an export serves, exported in this process: raw features in, the
task's predictions out (tfdist.serving.signatures, export, exported, predict).

A table of real rows (the breast-cancer CSV, with a category column made
of its measurements, ``concavity``) trains three small Keras models, each
a user's model function whose first layers are ``tfdist.encoded``'s (one-hot
lookup, normalisation), for a few epochs: a classifier ending in softmax,
a two-value regression (numbers only, one of them filled where missing;
also exported to TFLite) and a two-label multilabel model giving logits.
Each is exported and its CSV rows predicted: the served outputs must be
the Keras model's on the same raw rows, a category training never had must
be the model's unknown id, a missing number of a filled feature the mean.
A folder of real MNIST digits (PNG and JPEG, grayscale and colour) is
converted, trained and exported: images given to predict must be read
pixel for pixel as the training records hold them, and printed by class
name.
"""

import functools
import io
import json
import os
import shutil
import types

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tensorflow as tf  # pylint: disable=wrong-import-position

import user_models  # pylint: disable=wrong-import-position
from test_export import cancer_table  # pylint: disable=wrong-import-position
from test_tables import table  # pylint: disable=wrong-import-position

from tfdist import data as data_lib  # pylint: disable=wrong-import-position
from tfdist.data import convert  # pylint: disable=wrong-import-position
from tfdist.data import features as features_lib  # pylint: disable=wrong-import-position
from tfdist.data import records  # pylint: disable=wrong-import-position
from tfdist.data import sources  # pylint: disable=wrong-import-position
from tfdist.errors import ConfigError  # pylint: disable=wrong-import-position
from tfdist.model import models  # pylint: disable=wrong-import-position
from tfdist.serving import export as export_lib  # pylint: disable=wrong-import-position
from tfdist.serving import image_files  # pylint: disable=wrong-import-position
from tfdist.serving import loading  # pylint: disable=wrong-import-position
from tfdist.serving import predict  # pylint: disable=wrong-import-position
from tfdist.serving import signatures  # pylint: disable=wrong-import-position

INPUTS = ("mean radius", "mean texture", "concavity")
FILLED = "mean texture"  # the regression's numbers: missing ones filled


def _table():
  """The table of test_export.cancer_table (its ``concavity`` category),
  with two 0/1 columns: ``malignant``, and ``rough`` (mean texture above
  the training median). Returns (header, training rows, test rows)."""
  header, train, test = cancer_table()
  column = {name: i for i, name in enumerate(header)}
  rough = np.median([float(r[column["mean texture"]]) for r in train])

  def derived(rows):
    return [r + [str(int(r[column["diagnosis"]] == "malignant")),
                 str(int(float(r[column["mean texture"]]) > rough))]
            for r in rows]

  return header + ["malignant", "rough"], derived(train), derived(test)


def _features(header, train, columns, *, fill=()):
  """The features of ``columns`` from the training rows: numbers with
  their float64 mean and std (``fill``: missing ones filled with the mean),
  strings with their sorted vocabulary."""
  found = []
  for column in columns:
    cells = [r[header.index(column)] for r in train]
    name = column.replace(" ", "_")
    if column in ("concavity", "diagnosis"):
      found.append(features_lib.Feature(
          name=name, kind="category", shape=(), key=column,
          vocabulary=tuple(sorted(set(cells)))))
    else:
      values = np.array(cells, np.float64)
      found.append(features_lib.Feature(
          name=name, kind="numeric", shape=(1,), key=column,
          mean=(float(values.mean()),), std=(float(values.std()),),
          fill="mean" if column in fill else ""))
  return features_lib.by_name(found)


def _raw(header, table_rows, features):
  """The Keras model's inputs of ``table_rows`` (raw, by feature name; an
  empty cell NaN)."""
  return {name: np.array([[float(r[header.index(f.key)] or "nan")]
                          for r in table_rows], np.float32)
          if f.kind == "numeric"
          else np.array([r[header.index(f.key)] for r in table_rows], object)
          for name, f in features.items()}


# The three models: task, inputs, label columns, last activation, loss.
# The regression takes numbers only: its export has a TFLite model too.
TASKS = {
    "classification": (INPUTS, ("diagnosis",), "softmax",
                       "sparse_categorical_crossentropy"),
    "regression": (("mean radius", FILLED), ("mean area", "mean perimeter"),
                   None, "mse"),
    "multilabel": (("mean radius", "concavity", "diagnosis"),
                   ("malignant", "rough"), None,
                   tf.keras.losses.BinaryCrossentropy(from_logits=True)),
}


def _train_and_export(task, header, train, export_dir):
  columns, labels, activation, loss = TASKS[task]
  features = _features(header, train, columns,
                       fill=(FILLED,) if task == "regression" else ())
  classes = (("benign", "malignant") if task == "classification"
             else labels if task == "multilabel" else ())
  width = len(classes) if task == "classification" else len(labels)
  # What a user writes: tfdist.keras_inputs, tfdist.encoded, a hidden layer.
  model_fn = functools.partial(user_models.encoded, activation=activation)
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
      features=features, num_outputs=width, task=task, class_names=classes,
      label_names=labels)
  export_lib.export(model, source=source,
                    export_dir=str(export_dir),
                    probabilities=activation == "softmax",
                    tflite=task == "regression")
  return model, features


@pytest.fixture(scope="module")
def table_exports(tmp_path_factory):
  """Each task's model trained, exported; the test rows as test.csv."""
  base = tmp_path_factory.mktemp("served")
  header, train, test = _table()
  table(base / "test.csv", [header, *test])
  exports = {task: (base / task, *_train_and_export(task, header, train,
                                                    base / task))
             for task in TASKS}
  return {"base": base, "header": header, "test": test, "exports": exports}


@functools.lru_cache(maxsize=None)
def _loaded(export_dir):
  return loading.load_model(loading.resolve_model(str(export_dir)))


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
  band = header.index("concavity")
  for value in ("very high", "zzz"):
    unseen = [r[:band] + [value] + r[band + 1:] for r in test]
    raw = _raw(header, unseen, features)
    outputs = _served(export_dir, raw)["probabilities"]
    np.testing.assert_allclose(outputs, model.predict(raw, verbose=0),
                               atol=1e-6)
    if value == "zzz":  # any unseen string: the one unknown id
      np.testing.assert_array_equal(outputs, previous)
    previous = outputs


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


def test_missing_numbers_of_a_filled_feature_predict_as_the_mean(
    table_exports, tmp_path):
  export_dir, model, features = table_exports["exports"]["regression"]
  header, test = table_exports["header"], table_exports["test"][:5]
  texture = header.index(FILLED)
  # Every way of writing a missing value; the model fills the mean.
  missing = [r[:texture] + [cell] + r[texture + 1:]
             for r, cell in zip(test, ["", "NA", "nan", "null", "N/A"])]
  table(tmp_path / "rows.csv", [header, *missing])
  _, lines = _predicted(export_dir, tmp_path / "rows.csv")
  mean = repr(features["mean_texture"].mean[0])
  filled = _raw(header, [r[:texture] + [mean] + r[texture + 1:]
                         for r in test], features)
  assert [line[1] for line in lines] == [
      ",".join(f"{v:.6g}" for v in row)
      for row in model.predict(filled, verbose=0)]


def test_the_tflite_model_reads_rows_by_its_own_description(table_exports):
  export_dir = table_exports["exports"]["regression"][0]
  assert json.loads((export_dir / "model.tflite.json").read_text())[
      "columns"] == {"mean_radius": ["mean radius"],
                     "mean_texture": ["mean texture"]}
  test_csv = table_exports["base"] / "test.csv"
  summary, lines = _predicted(export_dir / "model.tflite", test_csv)
  assert summary["format"] == "tflite"
  _, saved = _predicted(export_dir, test_csv)
  assert [line[0] for line in lines] == [line[0] for line in saved]
  np.testing.assert_allclose(
      [[float(v) for v in line[1].split(",")] for line in lines],
      [[float(v) for v in line[1].split(",")] for line in saved], rtol=1e-4)


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
  features = _features(*_table()[:2], INPUTS)
  with pytest.raises(ConfigError, match="--tflite: TFLite's built-in ops "
                     "look up no strings, and 'concavity' is a "
                     "category feature; drop --tflite"):
    signatures.check_tflite(features)
  signatures.check_tflite({"mean_radius": features["mean_radius"]})


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
  grayscale JPEGs, 18 as RGB PNGs, 18 as grayscale PNGs; converted (every
  6th of a class a test image), softmax regression trained on the records
  for 5 epochs and exported."""
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
  export_lib.export(model, source=source, export_dir=str(base / "export"))
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
