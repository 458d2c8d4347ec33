"""What an export serves: its signatures' inputs and outputs, and its
description file.

Every SavedModel's ``serving_default`` signature takes the training data's
features by name, **raw**, as a CSV row or an image file holds them (the
model's own first layers do every preprocessing step: a category the
training split never had becomes the model's unknown id inside it):

============  ==============================================================
kind          input
============  ==============================================================
``image``     uint8 ``[batch, H, W, C]``, pixels 0..255 (``images`` for the
              image datasets of tfdist.data)
``numeric``   float32 ``[batch, n]``, raw values (NaN: missing)
``category``  string ``[batch]``
``text``      string ``[batch]``
``id``        int64 ``[batch]``
``id_list``   int64 ``[batch, length]``, each row's ids padded with -1 to
              the batch's longest list (a signature takes no ragged tensor)
============  ==============================================================

and returns, by task (tfdist.data's manifest: ``task``):

==================  ========================================================
task                outputs
==================  ========================================================
``classification``  ``probabilities`` float32 ``[batch, classes]``,
                    ``classes`` int64 ``[batch]`` (the most probable),
                    ``class_names`` string ``[batch]`` (its name)
``multilabel``      ``probabilities`` float32 ``[batch, labels]``,
                    ``labels`` int64 0/1 ``[batch, labels]`` (probability
                    at least 0.5)
``regression``      ``values`` float32 ``[batch, labels]``
==================  ========================================================

A dataset of one image also gets ``serving_float``: the image as float32 scaled
to 0..1. Every export also holds its **description** (:class:`Description`,
``assets.extra/tfdist.json`` in a SavedModel): the features with the CSV columns
each is read from, the task, the label columns and the class names, so that
tfdist.serving.predict reads new CSV rows as the converter read the training
rows. TensorFlow Serving ignores the file.

Owns :func:`target_of`, :class:`Description`, the signature functions
(:func:`serving_module`) and :func:`check_tflite`. Imports tfdist.errors,
data.features and data.rows (its Target); TensorFlow lazily (the description
reads without it).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Optional, Tuple

from tfdist.data import features as features_lib
from tfdist.data import rows as rows_lib
from tfdist.errors import ConfigError

OUTPUTS = {"classification": ("probabilities", "classes", "class_names"),
           "multilabel": ("probabilities", "labels"),
           "regression": ("values",)}
# Where a SavedModel keeps its description (TensorFlow Serving's place for
# files of its own: it reads nothing there).
DESCRIPTION_FILE = os.path.join("assets.extra", "tfdist.json")
DESCRIPTION_FORMAT = 1
# The kinds a CSV row holds (tfdist.data.tables); images and ids come from
# image files and records.
TABLE_KINDS = ("numeric", "category", "text")
# A multilabel model's label is on at this probability.
THRESHOLD = 0.5


def target_of(source) -> rows_lib.Target:
  """What a model trained on ``source`` predicts (any training source of
  tfdist.data, or a records' RecordSpec): its task, label columns and
  classes (classification: one name per class, in class-id order;
  multilabel: the label columns; regression: none)."""
  return rows_lib.Target(source.task, tuple(source.label_names),
                         tuple(source.class_names))


@dataclasses.dataclass(frozen=True)
class Description:
  """What an export takes and predicts (its ``tfdist.json``).

  Attributes:
    features: ``{name: Feature}``, the serving inputs, in order.
    target: the task, label columns and classes (:func:`target_of`).
  """
  features: Dict[str, features_lib.Feature]
  target: rows_lib.Target

  def __post_init__(self):
    if self.target.task not in OUTPUTS:
      raise ValueError(f"task {self.target.task!r} is not one of "
                       f"{', '.join(OUTPUTS)}")

  @property
  def columns(self) -> Dict[str, Tuple[str, ...]]:
    """``{feature name: its CSV columns}`` of the table features."""
    return {name: f.csv_columns for name, f in self.features.items()
            if f.kind in TABLE_KINDS}

  def to_json(self) -> str:
    body = {"format": DESCRIPTION_FORMAT, "task": self.target.task,
            "label_names": list(self.target.label_names),
            "class_names": list(self.target.class_names),
            "outputs": list(OUTPUTS[self.target.task]),
            "features": [f.to_json() for f in self.features.values()],
            "columns": {n: list(c) for n, c in self.columns.items()}}
    return json.dumps(body, indent=1) + "\n"

  @classmethod
  def from_json(cls, text: str, *, path: str) -> "Description":
    try:
      body = json.loads(text)
      if body.get("format") != DESCRIPTION_FORMAT:
        raise ValueError(f"format {body.get('format')!r}")
      features = features_lib.by_name(
          features_lib.Feature.from_json(f) for f in body["features"])
      return cls(features, rows_lib.Target(
          body["task"], tuple(body["label_names"]),
          tuple(body["class_names"])))
    except (ValueError, KeyError, TypeError, ConfigError) as e:
      raise ConfigError(f"{path}: not a description this tfdist reads "
                        f"({type(e).__name__}: {e}); export the model again "
                        "with this tfdist") from None


def write_description(description: Description, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(description.to_json())


def read_description(path: str) -> Optional[Description]:
  """The description at ``path``, or None when there is none (an export
  of an older tfdist)."""
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return Description.from_json(f.read(), path=path)


def check_tflite(features: features_lib.Features) -> None:
  """Raises ConfigError when TFLite's built-in ops cannot serve
  ``features`` (a list of ids, a string): before training, not after."""
  for feature in features.values():
    if feature.ragged:
      raise ConfigError(f"--tflite: TFLite models take fixed-size inputs, "
                        f"and {feature.name!r} is a list of ids; drop "
                        "--tflite (the SavedModel serves it)")
    if feature.dtype == "string":
      raise ConfigError(f"--tflite: TFLite's built-in ops look up no "
                        f"strings, and {feature.name!r} is a {feature.kind} "
                        "feature; drop --tflite (the SavedModel serves it)")


def _input_spec(tf, feature: features_lib.Feature):
  """The serving input of one feature (see the module docstring)."""
  if feature.kind == "image":
    return tf.TensorSpec([None, *feature.shape], tf.uint8, name=feature.name)
  if feature.kind == "numeric":
    return tf.TensorSpec([None, *feature.shape], tf.float32,
                         name=feature.name)
  if feature.dtype == "string":
    return tf.TensorSpec([None], tf.string, name=feature.name)
  if feature.kind == "id":
    return tf.TensorSpec([None], tf.int64, name=feature.name)
  return tf.TensorSpec([None, None], tf.int64, name=feature.name)


def _model_inputs(tf, features, served: dict):
  """What the model is called with, from the serving inputs: the dict by
  feature name (as tfdist.data feeds it, also for one feature), images
  scaled to 0..1, id lists made ragged; raw numbers and strings as they
  are (the model preprocesses them)."""
  inputs = {}
  for name, feature in features.items():
    value = served[name]
    if feature.kind == "image" and value.dtype == tf.uint8:
      value = tf.cast(value, tf.float32) / 255.0
    elif feature.kind == "id_list":
      value = tf.RaggedTensor.from_tensor(value, padding=-1)
    inputs[name] = value
  return inputs


def _outputs(tf, scores, target: rows_lib.Target, *,
             probabilities: bool) -> dict:
  """The signature's outputs of the model's ``scores`` (see the module
  docstring); ``probabilities``: the model's own outputs already are."""
  if target.task == "regression":
    return {"values": tf.cast(scores, tf.float32)}
  if target.task == "multilabel":
    probs = scores if probabilities else tf.sigmoid(scores)
    return {"probabilities": probs,
            "labels": tf.cast(probs >= THRESHOLD, tf.int64)}
  probs = scores if probabilities else tf.nn.softmax(scores)
  classes = tf.argmax(probs, axis=-1)
  return {"probabilities": probs, "classes": classes,
          "class_names": tf.gather(tf.constant(list(target.class_names)),
                                   classes)}


def serving_module(model, *, features, target: rows_lib.Target,
                   probabilities: bool = False):
  """A ``tf.Module`` whose functions are the serving signatures.

  ``model`` must take its inputs as tfdist.data feeds them (a dict by
  feature name: images scaled to 0..1, numbers and strings raw) and output
  logits, or
  ``probabilities`` (classification and multilabel).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  names = list(features)

  class Serving(tf.Module):
    """Raw features in, the task's predictions out."""

    def __init__(self):
      super().__init__(name="serving")
      self.model = model  # tracked: the SavedModel saves its variables

    def predict(self, served: dict):
      scores = self.model(_model_inputs(tf, features, served),
                          training=False)
      return _outputs(tf, scores, target, probabilities=probabilities)

  module = Serving()
  module.serve = tf.function(
      lambda *args: module.predict(dict(zip(names, args))),
      input_signature=[_input_spec(tf, f) for f in features.values()])
  image = features_lib.single_image(features)
  if image is not None:
    module.serve_float = tf.function(
        lambda images: module.predict({image.name: images}),
        input_signature=[tf.TensorSpec([None, *image.shape], tf.float32,
                                       name=image.name)])
  return module
