"""Tables to records: every value kept raw, every column what it means.

Real tables (tests/data, README there: iris, wine and diabetes exported
from scikit-learn's copies) convert through the real command
(``tfdist.data.__main__.main``, in this process: TensorFlow is loaded here
anyway); the records are read back raw and compared with the CSV rows
value by value. Tables with a specific defect (a missing value, a stray
word, labels 90000..90002, reviews ...) are generated in the test that
needs them, as said there. Bad input runs as a process in which TensorFlow
cannot be imported: its one ``error:`` line comes before TensorFlow.
"""

import collections
import contextlib
import csv
import functools
import glob
import io
import json
import math
import os
import sys

import numpy as np
import pytest

from conftest import json_lines, run

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tensorflow as tf  # pylint: disable=wrong-import-position

from tfdist import cli  # pylint: disable=wrong-import-position
from tfdist import data as data_lib  # pylint: disable=wrong-import-position
from tfdist.data import __main__ as data_main  # pylint: disable=wrong-import-position
from tfdist.data import csv_files  # pylint: disable=wrong-import-position
from tfdist.data import manifest as manifest_lib  # pylint: disable=wrong-import-position
from tfdist.data import options  # pylint: disable=wrong-import-position
from tfdist.data import records  # pylint: disable=wrong-import-position
from tfdist.data import rows as rows_lib  # pylint: disable=wrong-import-position
from tfdist.data import sources  # pylint: disable=wrong-import-position
from tfdist.model import preprocessing  # pylint: disable=wrong-import-position
from tfdist.training import measurement  # pylint: disable=wrong-import-position
import tfdist  # pylint: disable=wrong-import-position

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def convert(source, out, *flags):
  """``python -m tfdist.data write`` in this process: its JSON line and
  its log."""
  stdout, stderr = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    status = cli.run(lambda: data_main.main(
        ["write", f"--source={source}", f"--out_dir={out}", "--shards=2",
         *flags]))
  assert status == 0, stderr.getvalue()
  # No error line (a column may be named "... error": the cancer table's).
  assert not [line for line in stderr.getvalue().lower().splitlines()
              if line.startswith("error")], stderr.getvalue()
  return json_lines(stdout.getvalue())[-1], stderr.getvalue()


def table(path, rows, encoding="utf-8"):
  with open(path, "w", newline="", encoding=encoding) as f:
    csv.writer(f).writerows(rows)
  return str(path)


def csv_rows(path):
  with open(path, newline="", encoding="utf-8-sig") as f:
    return list(csv.DictReader(f))


def manifest(out):
  with open(os.path.join(out, "manifest.json")) as f:
    return json.load(f)


def raw_records(out, split="*"):
  """Every record of ``out``'s split(s): ``{key: list of values}``."""
  found = []
  for path in sorted(glob.glob(os.path.join(out, f"{split}-*.tfrecord"))):
    for record in tf.data.TFRecordDataset(path):
      example = tf.train.Example.FromString(record.numpy())
      found.append({key: list(getattr(f, f.WhichOneof("kind")).value)
                    for key, f in example.features.feature.items()})
  return found


def records_as_rows(out, split="*"):
  """Each record as a CSV row would say it: ``{column: value}``, numbers
  as float32, strings as text, the label(s) by name."""
  described = manifest(out)
  label_names = described["label_names"]
  rows = []
  for record in raw_records(out, split):
    row = {}
    for feature in described["features"]:
      values = record[feature["key"]]
      for column, value in zip(feature.get("columns", [feature["key"]]),
                               values):
        row[column] = value.decode() if isinstance(value, bytes) else value
    label = record[described["label_key"]]
    if described["task"] == "classification":
      row[label_names[0]] = described["class_names"][label[0]]
    else:
      row.update(zip(label_names, label))
    rows.append(row)
  return rows


def as_float32(text):
  return np.float32(float(text))


def same_rows(records, rows, numbers, strings=()):
  """The records' and the CSV rows' multisets agree, value by value:
  ``numbers`` as float32 (NaN for a missing value), ``strings`` as text (a
  class by its name). A record whose two columns were swapped differs."""

  def number(value):
    if isinstance(value, str):
      return ("nan" if rows_lib.is_missing(value.strip())
              else as_float32(value))
    return "nan" if math.isnan(value) else np.float32(value)

  def key(row):
    return (*(number(row[c]) for c in numbers), *(row[c] for c in strings))

  return (collections.Counter(map(key, records))
          == collections.Counter(map(key, rows)))


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("iris") / "records")
  printed, log = convert(os.path.join(DATA, "iris.csv"), out,
                         "--label=species", "--test_fraction=0.2")
  return out, printed, log


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("diabetes") / "records")
  printed, log = convert(os.path.join(DATA, "diabetes.csv"), out,
                         "--label=progression", "--task=regression",
                         "--test_fraction=0.2")
  return out, printed, log


def reviews(path, cities, n=160, seed=0, missing_every=17):
  """A generated table: a city (category), a review of a few words whose
  sentiment is the label (text: every review's string is unique), a size
  with NA every ``missing_every`` rows, three grouped columns and a
  weight."""
  rng = np.random.default_rng(seed)
  good, bad = ["great", "good", "lovely", "fine"], ["bad", "awful", "poor"]
  rows = [["city", "review", "size", "x_1", "x_2", "x_3", "w", "label"]]
  for i in range(n):
    positive = bool(rng.integers(2))
    words = list(rng.choice(good if positive else bad, 2)) + [
        "plot", "movie", f"scene{i}"]
    rng.shuffle(words)
    rows.append([cities[i % len(cities)], " ".join(words),
                 "NA" if i % missing_every == 3 else f"{rng.normal(5, 2):.4f}",
                 *(f"{v:.5f}" for v in rng.random(3)), f"{1 + i % 3}",
                 "pos" if positive else "neg"])
  return table(path, rows)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
  root = tmp_path_factory.mktemp("mixed")
  source = reviews(root / "reviews.csv", ["rome", "oslo", "paris"])
  out = str(root / "records")
  printed, log = convert(source, out, "--label=label", "--weight=w",
                         "--missing=fill", "--test_fraction=0.25")
  return source, out, printed, log


# --- the records hold the rows ----------------------------------------------


def test_iris_records_hold_every_row_value_by_value(iris):
  out, printed, log = iris
  rows = csv_rows(os.path.join(DATA, "iris.csv"))
  numbers = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
  assert same_rows(records_as_rows(out), rows, numbers, strings=["species"])
  described = manifest(out)
  assert (described["format"], described["task"], described["label_names"],
          described["class_names"]) == (
              3, "classification", ["species"],
              ["setosa", "versicolor", "virginica"])
  assert printed["counts"] == {"train": 120, "test": 30}
  assert [f["name"] for f in described["features"]] == numbers
  training = collections.Counter(
      described["class_names"][r[described["label_key"]][0]]
      for r in raw_records(out, "train"))
  assert described["class_counts"] == dict(training)
  assert ("label 'species': 3 classes (setosa, versicolor, virginica) -> "
          "classification") in log


def test_batches_are_dicts_of_the_raw_values(iris):
  out, _, _ = iris
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  assert (source.task, source.num_outputs, source.has_weights,
          source.label_names) == ("classification", 3, False, ["species"])
  names = list(source.features)
  got = collections.Counter()
  for inputs, labels in source.test_batches(7):
    assert list(inputs) == names
    columns = [inputs[name].numpy()[:, 0] for name in names]
    got.update(zip(*columns, labels.numpy()))
  assert got == collections.Counter(
      (*(np.float32(r[name][0]) for name in names), r["species"][0])
      for r in raw_records(out, "test"))
  batch = next(iter(source.train_dataset_fn(8)(tf.distribute.InputContext())))
  assert len(batch) == 2 and set(batch[0]) == set(source.features)


def test_diabetes_target_is_regression_never_a_feature(diabetes):
  out, printed, log = diabetes
  rows = csv_rows(os.path.join(DATA, "diabetes.csv"))
  numbers = ["age", "sex", "bmi", "bp", *(f"s{i}" for i in range(1, 7))]
  assert same_rows(records_as_rows(out), rows, [*numbers, "progression"])
  described = manifest(out)
  assert (described["task"], described["num_classes"],
          described["class_names"]) == ("regression", 1, [])
  # s1 .. s6: one feature of six values, its columns listed in order.
  (serum,) = [f for f in described["features"] if f["name"] == "s"]
  assert serum["columns"] == [f"s{i}" for i in range(1, 7)]
  assert serum["shape"] == [6]
  assert "columns 's1' .. 's6' (6) -> s: numeric float32[6]" in log
  assert "progression" not in {f["key"] for f in described["features"]}
  assert printed["task"] == "regression"


def test_statistics_are_float64_as_computed(diabetes):
  """Issue 28, silent wrong result 2: statistics were rounded to 6
  decimals."""
  out, _, _ = diabetes
  path = os.path.join(DATA, "diabetes.csv")
  # The training split's rows (the converter's seeded pick), checked to be
  # those of the training records.
  table = csv_files.open_table(path, test_fraction=0.2)
  train = [row for _, row in csv_files.rows(table, "train")]
  numbers = ["age", "sex", "bmi", "bp", *(f"s{i}" for i in range(1, 7))]
  assert same_rows(records_as_rows(out, "train"), train,
                   [*numbers, "progression"])
  for feature in manifest(out)["features"]:
    for i, column in enumerate(feature.get("columns", [feature["key"]])):
      values = np.array([float(r[column]) for r in train], np.float64)
      assert feature["mean"][i] == pytest.approx(values.mean(), rel=1e-12)
      assert feature["std"][i] == pytest.approx(values.std(), rel=1e-12)


def test_tiny_units_keep_their_statistics(iris, tmp_path):
  """Issue 28, silent wrong result 2: the same table in units a billion
  times larger (iris' values times 1e-9, generated from iris.csv): rounded
  statistics made every mean 0 and every std 1; and Keras' Normalization
  divides by at least 1e-7, which these standard deviations are below."""
  rows = csv_rows(os.path.join(DATA, "iris.csv"))
  numbers = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
  source = table(tmp_path / "tiny.csv", [[*numbers, "species"]] + [
      [repr(float(r[c]) * 1e-9) for c in numbers] + [r["species"]]
      for r in rows])
  out = str(tmp_path / "records")
  convert(source, out, "--label=species", "--test_fraction=0.2")
  features = sources.open_files(f"{out}/train-*", f"{out}/test-*").features
  train = raw_records(out, "train")
  for name, feature in features.items():
    values = np.array([r[name][0] for r in train], np.float64)
    assert feature.mean[0] == pytest.approx(values.mean(), rel=1e-6)
    assert feature.std[0] == pytest.approx(values.std(), rel=1e-6)
    encoded = tfdist.preprocessing_layer(feature)(
        tf.constant(values[:, None], tf.float32)).numpy()
    assert abs(encoded.mean()) < 1e-3 and abs(encoded.std() - 1) < 1e-3


# --- labels -----------------------------------------------------------------


def test_whole_number_labels_are_their_distinct_values(tmp_path):
  """Issue 28, silent wrong result 4: labels 90000..90002 became 90,003
  classes (generated table; 007 is class 7)."""
  rows = [["a", "b", "label"]] + [
      [str(i), str(i % 5), str(90000 + i % 3)] for i in range(30)]
  rows[4][2] = "090001"
  out = str(tmp_path / "records")
  printed, log = convert(table(tmp_path / "t.csv", rows), out,
                         "--label=label", "--test_fraction=0.2")
  assert printed["num_classes"] == 3
  described = manifest(out)
  assert described["class_names"] == ["90000", "90001", "90002"]
  assert "label 'label': whole numbers, 3 classes (90000, 90001, 90002)" in log
  labels = [described["class_names"][r["label"][0]] for r in raw_records(out)]
  expected = [str(int(r[2])) for r in rows[1:]]
  assert collections.Counter(labels) == collections.Counter(expected)


def test_wine_whole_number_classes_and_renamed_columns(tmp_path):
  out = str(tmp_path / "records")
  _, log = convert(os.path.join(DATA, "wine.csv"), out, "--label=class",
                   "--test_fraction=0.2")
  described = manifest(out)
  assert (described["task"], described["class_names"]) == (
      "classification", ["0", "1", "2"])
  rows = csv_rows(os.path.join(DATA, "wine.csv"))
  columns = [c for c in rows[0] if c != "class"]
  assert same_rows(records_as_rows(out), rows, columns, strings=["class"])
  assert [f["key"] for f in described["features"]] == columns
  assert ("column 'od280/od315_of_diluted_wines' -> "
          "od280_od315_of_diluted_wines: numeric float32[1]") in log
  assert ("label 'class': whole numbers, 3 classes (0, 1, 2) -> "
          "classification (--task=regression to predict the number)") in log


def test_several_labels_of_0_and_1_are_multilabel(tmp_path):
  """Labels are never features (silent wrong result 4's leakage); a UTF-8
  byte-order mark is no part of the first column's name. Generated."""
  rng = np.random.default_rng(1)
  rows = [["f", "g", "a", "b"]] + [
      [f"{x:.3f}", f"{y:.3f}", str(int(x > 0)), str(int(y > x))]
      for x, y in rng.normal(size=(40, 2))]
  source = table(tmp_path / "t.csv", rows, encoding="utf-8-sig")
  out = str(tmp_path / "records")
  printed, log = convert(source, out, "--label=a,b", "--test_fraction=0.25")
  described = manifest(out)
  assert (described["task"], described["num_classes"],
          described["class_names"]) == ("multilabel", 2, ["a", "b"])
  assert [f["name"] for f in described["features"]] == ["f", "g"]
  assert "labels 'a', 'b': 0 and 1 -> multilabel, 2 outputs" in log
  assert same_rows(records_as_rows(out), csv_rows(source),
                   ["f", "g", "a", "b"])
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  _, labels = next(iter(source.test_batches(4)))
  assert labels.dtype == tf.float32 and labels.shape == (4, 2)
  assert printed["task"] == "multilabel"


# --- strings: categories and text -------------------------------------------


def test_text_is_tokenised_by_the_manifests_vocabulary(mixed):
  """Issue 28, silent wrong result 6: a text column became one id per
  distinct string, so every test review was unknown."""
  _, out, _, log = mixed
  features = sources.open_files(f"{out}/train-*", f"{out}/test-*").features
  review = features["review"]
  assert review.kind == "text"
  # The vocabulary is TextVectorization's own, adapted on the training
  # reviews.
  train_reviews = [r[review.key][0].decode()
                   for r in raw_records(out, "train")]
  adapted = tf.keras.layers.TextVectorization(max_tokens=10_002)
  adapted.adapt(train_reviews)
  assert list(review.vocabulary) == adapted.get_vocabulary()[2:]
  test_reviews = [r[review.key][0].decode() for r in raw_records(out, "test")]
  assert not set(test_reviews) & set(train_reviews)
  ids = tfdist.preprocessing_layer(review, output="ids")(
      tf.constant(test_reviews)).numpy()
  assert np.array_equal(ids, adapted(tf.constant(test_reviews)).numpy())
  # Every unseen review still has its known words: 4 of its 5.
  assert ((ids > 1).sum(axis=1) >= 4).all()
  assert "column 'review' -> review: text string[]" in log


def test_categories_keep_their_strings_across_conversions(mixed, tmp_path):
  """Issue 28, silent wrong result 1: next month's rows converted on
  their own (one city absent) shifted every id. Generated tables."""
  source_a, out_a, _, _ = mixed
  source_b = reviews(tmp_path / "next.csv", ["rome", "paris"], n=40, seed=3)
  out_b = str(tmp_path / "records")
  convert(source_b, out_b, "--label=label", "--missing=fill",
          "--test_fraction=0.25")
  city_a = sources.open_files(f"{out_a}/train-*",
                              f"{out_a}/test-*").features["city"]
  assert city_a.vocabulary == ("oslo", "paris", "rome")
  features_b = sources.open_files(f"{out_b}/train-*",
                                  f"{out_b}/test-*").features
  assert features_b["city"].vocabulary == ("paris", "rome")
  lookup = tfdist.preprocessing_layer(city_a)
  for out in (out_a, out_b):
    cities = [r["city"][0].decode() for r in raw_records(out)]
    encoded = lookup(tf.constant(cities)).numpy()
    assert [city_a.vocabulary[i - 1] for i in encoded.argmax(axis=1)] == cities
  # A CSV row reads as its record (the function predict shares).
  rows = csv_rows(source_b)
  values = [rows_lib.feature_values(r, list(features_b.values()),
                                    where=f"row {i}")
            for i, r in enumerate(rows)]
  got = collections.Counter(
      (v["city"], v["review"], *np.float32(v["x"]).tolist())
      for v in values)
  want = collections.Counter(
      (r["city"][0].decode(), r["review"][0].decode(), *r["x"])
      for r in raw_records(out_b))
  assert got == want
  assert lookup(tf.constant(["lisbon"])).numpy().tolist() == [[1, 0, 0, 0]]


def test_missing_numbers_are_filled_inside_the_model(mixed):
  """Issue 28, silent wrong result 3: a NaN or NA turned a numeric column
  into ids."""
  source_csv, out, _, log = mixed
  size = sources.open_files(f"{out}/train-*",
                            f"{out}/test-*").features["size"]
  assert (size.kind, size.fill) == ("numeric", "mean")
  rows = csv_rows(source_csv)
  assert same_rows(records_as_rows(out), rows, ["size", "x_1", "x_2", "x_3"],
                   strings=["city", "review", "label"])
  stored = np.array([r["size"][0] for r in raw_records(out)], np.float32)
  assert np.isnan(stored).sum() == sum(r["size"] == "NA" for r in rows) > 0
  encoded = tfdist.preprocessing_layer(size)(stored[:, None]).numpy()
  assert not np.isnan(encoded).any()
  assert np.all(encoded[np.isnan(stored)] == 0)  # the mean
  assert "size: numeric float32[1], missing values filled with the " \
         "training mean" in log


def test_weights_ride_with_training_batches_only(mixed):
  _, out, _, log = mixed
  assert "column 'w' -> each example's weight" in log
  config = options.DataConfig(
      train_files=f"{out}/train-*", test_files=f"{out}/test-*",
      class_weight='{"pos": 3}')
  source = sources.open_source(config, report=lambda _: None)
  assert source.has_weights and source.spec.class_weights == (1.0, 3.0)
  inputs, labels, weights = next(iter(source.train_dataset_fn(
      512, seed=0)(tf.distribute.InputContext())))
  by_review = {r["review"][0]: r["w"][0] for r in raw_records(out, "train")}
  expected = [by_review[t] * (3.0 if l == 1 else 1.0)
              for t, l in zip(inputs["review"].numpy(), labels.numpy())]
  assert np.allclose(weights.numpy(), expected)
  assert all(len(batch) == 2 for batch in source.test_batches(64))


def test_serving_inputs_are_the_raw_values(mixed):
  """What predict --records feeds a served model: every record's raw
  values by feature name, strings as bytes, NaN where missing."""
  _, out, _, _ = mixed
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  inputs, labels = records.serving_inputs(source.test_files, source.spec)
  assert (inputs["city"].dtype, inputs["size"].shape,
          inputs["x"].shape) == (object, (40, 1), (40, 3))
  got = collections.Counter(
      (c, r, "nan" if np.isnan(s[0]) else s[0], l)
      for c, r, s, l in zip(inputs["city"], inputs["review"], inputs["size"],
                            labels))
  want = collections.Counter(
      (r["city"][0], r["review"][0],
       "nan" if np.isnan(r["size"][0]) else np.float32(r["size"][0]),
       r["label"][0]) for r in raw_records(out, "test"))
  assert got == want


# --- the model side ---------------------------------------------------------


def test_encoded_inputs_of_every_kind(mixed):
  _, out, _, _ = mixed
  features = sources.open_files(f"{out}/train-*", f"{out}/test-*").features
  inputs = tfdist.keras_inputs(features)
  assert isinstance(inputs, dict) and list(inputs) == list(features)
  model = tf.keras.Model(inputs, tfdist.encoded(inputs, features))
  width = (4 + len(features["review"].vocabulary) + 1) + 1 + 3
  assert model.output_shape == (None, width)
  # One example: Keras' lookup layers alone would give it a 1-D output.
  one = {"city": tf.constant(["oslo"]), "review": tf.constant(["good plot"]),
         "size": tf.constant([[np.nan]]), "x": tf.constant([[0.5, 0.5, 0.5]])}
  assert model(one).shape == (1, width)
  parts = tfdist.encoded(one, features, combine=False)
  assert parts["city"].numpy().tolist() == [[0, 1, 0, 0]]
  with pytest.raises(tfdist.ConfigError, match="input 'nothing' is no"):
    tfdist.encoded({"nothing": one["city"]}, features)
  with pytest.raises(tfdist.ConfigError, match="'size' is numeric: it has no"):
    preprocessing.preprocessing_layer(features["size"], output="ids")


def test_consecutive_numbers_share_one_layer_that_computes_the_same():
  """tfdist.encoded standardises consecutive numeric features in one layer
  (a table of 30 columns: one, not 30); column by column it computes what
  each feature's own layer does: its fill, and its own scaling (tiny
  units beside ordinary ones; a constant column). Features made here."""
  numeric = functools.partial(tfdist.Feature, kind="numeric", shape=(1,))
  features = {f.name: f for f in [
      numeric(name="tiny", mean=(3e-9,), std=(4e-10,)),
      tfdist.Feature(name="pair", kind="numeric", shape=(2,), fill="mean",
                     mean=(5.0, -1.0), std=(2.0, 0.0)),
      tfdist.Feature(name="city", kind="category", shape=(),
                     vocabulary=("oslo", "rome")),
      numeric(name="big", mean=(1e3,), std=(10.0,)),
      numeric(name="plain", mean=(0.5,), std=(0.25,))]}
  batch = {"tiny": tf.constant([[3.5e-9], [2e-9], [np.nan]]),
           "pair": tf.constant([[6.0, np.nan], [np.nan, -1.0], [1.0, 2.0]]),
           "city": tf.constant(["rome", "paris", "oslo"]),
           "big": tf.constant([[990.0], [1e3], [1017.5]]),
           "plain": tf.constant([[0.0], [0.75], [np.nan]])}
  inputs = tfdist.keras_inputs(features)
  model = tf.keras.Model(inputs, tfdist.encoded(inputs, features))
  own = np.concatenate([tfdist.preprocessing_layer(f)(batch[n]).numpy()
                        for n, f in features.items()], axis=1)
  np.testing.assert_array_equal(model(batch).numpy(), own)
  assert [type(layer).__name__ for layer in model.layers].count(
      "NumericEncoding") == 2  # tiny+pair, big+plain
  # The combined layer is saved and made again as it was.
  copy = tf.keras.Model.from_config(model.get_config())
  copy.set_weights(model.get_weights())
  np.testing.assert_array_equal(copy(batch).numpy(), own)


def test_in_memory_batches_are_dicts_with_class_weights():
  dataset = data_lib.synthetic(image_shape=(4, 4, 1), num_classes=3,
                               train_examples=60, test_examples=10)
  source = sources.InMemorySource(dataset, class_weights=(1.0, 2.0, 0.5))
  inputs, labels, weights = next(iter(source.train_dataset_fn(
      16)(tf.distribute.InputContext())))
  assert list(inputs) == ["images"] and inputs["images"].shape == (16, 4, 4, 1)
  assert np.array_equal(weights.numpy(),
                        np.array([1.0, 2.0, 0.5])[labels.numpy()])
  test_inputs, _ = next(iter(source.test_batches(5)))
  assert list(test_inputs) == ["images"]


@pytest.mark.slow
def test_a_model_of_encoded_iris_learns(iris):
  out, _, _ = iris
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  tf.keras.utils.set_random_seed(0)
  inputs = tfdist.keras_inputs(source.features)
  hidden = tf.keras.layers.Dense(16, activation="relu")(
      tfdist.encoded(inputs, source.features))
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(3)(hidden))
  model.compile(optimizer=tf.keras.optimizers.Adam(0.02),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  data = tf.keras.utils.experimental.DatasetCreator(
      source.train_dataset_fn(16, seed=0))
  model.fit(data, epochs=15, steps_per_epoch=source.train_examples // 16,
            verbose=0)
  assert measurement.accuracy(model, source.test_batches(30)) >= 0.9


# --- bad tables: one line, before TensorFlow, nothing written ---------------

# Runs the command in a process where ``import tensorflow`` fails: a line
# that comes before TensorFlow is the only output.
_NO_TENSORFLOW = ("import runpy, sys; sys.modules['tensorflow'] = None; "
                  "sys.argv[0] = 'tfdist.data'; "
                  "runpy.run_module('tfdist.data', run_name='__main__', "
                  "alter_sys=True)")


def one_line_before_tensorflow(source, out, *flags) -> str:
  done = run([sys.executable, "-c", _NO_TENSORFLOW, "write",
              f"--source={source}", f"--out_dir={out}", *flags], timeout=60)
  assert done.returncode == 2, done.stderr[-2000:]
  assert done.stderr.strip().splitlines() == [done.stderr.strip()], \
      done.stderr[-2000:]
  assert done.stderr.startswith("error: ") and not done.stdout
  assert not os.path.exists(out)
  return done.stderr.strip()


def _numbers(n, *, labels=("x", "y")):
  return [[str(i), f"{i * 0.5}", labels[i % len(labels)]] for i in range(n)]


HEADER = ["a", "b", "y"]
BAD_TABLES = [
    # Issue 28, silent wrong result 7: a column named twice was dropped.
    ([["a", "b", "a", "y"], ["1", "2", "3", "x"], ["4", "5", "6", "y"]], [],
     "{path}:1: column 'a' is named twice (fields 1 and 3); give every "
     "column its own name"),
    ([HEADER], [], "{path}: a header and no rows; give it rows"),
    ([HEADER, *_numbers(6, labels=("x",))], [],
     "--label=y: the training split has one class ('x'); a classifier needs "
     "two or more"),
    ([HEADER, *_numbers(6)], ["--columns=y:category"],
     "--columns/--drop name 'y', which is a label column: it is never a "
     "feature; leave it out"),
    ([["a", "größe", "y"], *_numbers(6)], [],
     "column 'größe': a feature name is ASCII (it names a serving input), "
     "and 'öß' is not; rename the column in the header, or drop it with "
     "--drop=größe"),
    ([["a b", "a_b", "y"], *_numbers(6)], [],
     "column(s) 'a b' and column(s) 'a_b' both become feature 'a_b'"),
    # Issue 28, silent wrong result 3: a stray word or NA made ids.
    ([HEADER, *_numbers(3), ["3", "abc", "x"], *_numbers(3)], [],
     "{path}:5: column 'b' holds numbers, but this row has 'abc'; correct it, "
     "write a missing value as NA, or read the column as words with "
     "--columns=b:category"),
    ([HEADER, *_numbers(2), ["NA", "1", "x"], ["", "2", "y"], *_numbers(4)],
     [], "column 'a' has 2 missing values (empty, NA, N/A, NaN or null), the "
     "first at {path}:4; fill them in, remove those rows, or pass "
     "--missing=fill"),
    ([HEADER, *_numbers(3), ["1", "2", "null"], *_numbers(3)],
     ["--missing=fill"], "{path}:5: the label 'y' is missing ('null'); fill "
     "it in or remove the row"),
    # Issue 28, silent wrong result 4: whole numbers became range(max + 1).
    ([HEADER, *[[str(i), "1", str(i % 40)] for i in range(60)]], [],
     "--label=y: 40 distinct whole numbers in 48 training rows may be classes "
     "or a quantity; pass --task=regression (predict the number) or "
     "--task=classification (one class per value)"),
    ([["a", "y", "z"], *_numbers(6)], ["--label=y,z", "--task=classification"],
     "--task=classification takes one label column, not 2 ('y', 'z')"),
    ([HEADER, *_numbers(6)], ["--task=regression"],
     "the label 'y' is 'x', not a number; --task=regression needs a number "
     "in every row"),
    ([["a", "w", "y"], *_numbers(2), ["1", "-1", "x"], *_numbers(3)],
     ["--weight=w"], "{path}:4: the weight 'w' is '-1', not a number >= 0"),
    ([HEADER, *_numbers(6)], ["--columns=b:float"],
     "--columns=b:float: 'b:float' is not NAME:KIND, KIND one of number, "
     "category, text, drop"),
    ([HEADER, *_numbers(6)], ["--columns=q:text"],
     "--columns: {path} has no column 'q' (it has a, b, y)"),
    ([HEADER, ["1", "[UNK]", "x"], ["2", "b", "y"], *_numbers(4)],
     ["--columns=b:category"], "column 'b' holds '[UNK]', the unknown value "
     "of Keras' lookup layers; rename that value"),
]


@pytest.mark.parametrize("rows, flags, message", BAD_TABLES)
def test_a_bad_table_is_one_line_before_tensorflow(tmp_path, rows, flags,
                                                   message):
  path = table(tmp_path / "t.csv", rows)
  line = one_line_before_tensorflow(
      path, tmp_path / "out", "--test_fraction=0.2",
      *([] if any(f.startswith("--label") for f in flags) else ["--label=y"]),
      *flags)
  assert message.format(path=path) in line, line


@pytest.mark.parametrize("train, test, message", [
    ([HEADER, *_numbers(4)], [HEADER], "{test}: a header and no rows"),
    ([HEADER], [HEADER, *_numbers(4)], "{train}: a header and no rows"),
    ([HEADER, *_numbers(4)], [HEADER, ["1", "2", "z"]],
     "{test}:2: label 'z' is no class of the training split; every test "
     "class must appear in training"),
])
def test_a_bad_table_directory_is_one_line(tmp_path, train, test, message):
  paths = {"train": table(tmp_path / "train.csv", train),
           "test": table(tmp_path / "test.csv", test)}
  line = one_line_before_tensorflow(tmp_path, tmp_path / "out", "--label=y")
  assert message.format(**paths) in line, line


def test_old_table_manifests_ask_to_be_rewritten(tmp_path):
  """Issue 28's old records: string ids and standardised numbers; image and
  id records of the earlier layouts still read."""
  splits = {"train": {"files": ["train-0"], "examples": [1], "sizes": [9]},
            "test": {"files": ["test-0"], "examples": [1], "sizes": [9]}}
  old = {"format": 2, "num_classes": 2, "class_names": ["a", "b"],
         "label_key": "y", "source": "t", "splits": splits}
  tables_2 = [
      {"name": "city", "kind": "id", "shape": [], "num_ids": 3,
       "vocabulary": ["[UNKNOWN]", "oslo", "rome"]},
      {"name": "size", "kind": "numeric", "shape": [1], "mean": [1.5],
       "std": [0.5]}]
  for feature in tables_2:
    with pytest.raises(tfdist.ConfigError, match=(
        r"^m.json: written by an older tfdist \(string columns stored as ids, "
        r"statistics rounded\): rewrite the records with python -m "
        r"tfdist.data write$")):
      manifest_lib.Manifest.from_json(json.dumps(
          {**old, "features": [feature]}), path="m.json")
  ids = manifest_lib.Manifest.from_json(json.dumps({**old, "features": [
      {"name": "tokens", "kind": "id_list", "shape": [None],
       "num_ids": 100}]}), path="m.json")
  assert (ids.task, ids.num_outputs, ids.label_names) == (
      "classification", 2, ["label"])
  first = {k: v for k, v in old.items() if k != "format"}
  images = manifest_lib.Manifest.from_json(json.dumps({
      **first, "image_shape": [28, 28, 1], "encoding": "png",
      "keys": {"image": "image/encoded", "label": "image/class/label",
               "format": "image/format", "height": "image/height",
               "width": "image/width"}}), path="m.json")
  assert images.image.shape == (28, 28, 1)
