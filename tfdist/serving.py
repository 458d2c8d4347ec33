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

A dataset of one image also gets ``serving_float``: the image as float32
scaled to 0..1. Every export also holds its **description**
(:class:`Description`, ``assets.extra/tfdist.json`` in a SavedModel): the
features with the CSV columns each is read from, the task, the label
columns and the class names, so that tfdist.predict reads new CSV rows as
the converter read the training rows. TensorFlow Serving ignores the file.

Owns :class:`Target`, :class:`Description`, the signature functions
(:func:`serving_module`) and :func:`check_tflite`. Imports tfdist.errors and
tfdist.features; TensorFlow lazily (the description reads without it).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Optional, Tuple

from tfdist import features as features_lib
from tfdist.errors import ConfigError

TASKS = ("classification", "regression", "multilabel")
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


@dataclasses.dataclass(frozen=True)
class Target:
  """What a model predicts: the task, its label columns, its classes.

  ``class_names``: classification: one name per class, in class-id order;
  multilabel: the label columns; regression: none.
  """
  task: str = "classification"
  class_names: Tuple[str, ...] = ()
  label_names: Tuple[str, ...] = ()

  def __post_init__(self):
    if self.task not in TASKS:
      raise ValueError(f"task {self.task!r} is not one of {TASKS}")
    object.__setattr__(self, "class_names", tuple(self.class_names))
    object.__setattr__(self, "label_names", tuple(self.label_names))

  @property
  def num_outputs(self) -> int:
    """The model's output width."""
    if self.task == "classification":
      return len(self.class_names)
    return len(self.label_names)

  @classmethod
  def of(cls, source) -> "Target":
    """The target of a training source (tfdist.data.sources)."""
    # MERGE(tables): every source has task, class_names and label_names
    # (design-28.md); these defaults serve the sources that predate them
    # (MNIST in memory, a TFDS stream: classification, classes by id; a
    # table's records: the label's key is its column).
    task = getattr(source, "task", "classification")
    names = getattr(source, "class_names", None)
    if names is None and task == "classification":
      names = [str(i) for i in range(source.num_classes)]
    labels = getattr(source, "label_names", None)
    if labels is None:
      table = any(f.kind in TABLE_KINDS for f in source.features.values())
      labels = (source.spec.label_key,) if table else ()
    return cls(task, tuple(names or ()), tuple(labels))


def csv_columns(feature: features_lib.Feature) -> Tuple[str, ...]:
  """The CSV columns a table feature is read from (none for other kinds)."""
  if feature.kind not in TABLE_KINDS:
    return ()
  # MERGE(tables): a grouped numeric feature lists its columns; any other
  # table feature is the column its record key names.
  return tuple(feature.columns) or (feature.key,)


@dataclasses.dataclass(frozen=True)
class Description:
  """What an export takes and predicts (its ``tfdist.json``).

  Attributes:
    features: ``{name: Feature}``, the serving inputs, in order.
    target: the task, label columns and classes.
  """
  features: Dict[str, features_lib.Feature]
  target: Target

  @property
  def columns(self) -> Dict[str, Tuple[str, ...]]:
    """``{feature name: its CSV columns}`` of the table features."""
    return {name: csv_columns(f) for name, f in self.features.items()
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
      return cls(features, Target(body["task"], body["class_names"],
                                  body["label_names"]))
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
  """What the model is called with, from the serving inputs: images
  scaled to 0..1 (as tfdist.data feeds them), id lists made ragged; raw
  numbers and strings as they are (the model preprocesses them)."""
  inputs = {}
  for name, feature in features.items():
    value = served[name]
    if feature.kind == "image" and value.dtype == tf.uint8:
      value = tf.cast(value, tf.float32) / 255.0
    elif feature.kind == "id_list":
      value = tf.RaggedTensor.from_tensor(value, padding=-1)
    inputs[name] = value
  # MERGE(training): the model is always called with the dict (design-28);
  # until then, as tfdist.contract calls it: one feature, its tensor.
  return next(iter(inputs.values())) if len(inputs) == 1 else inputs


def _outputs(tf, scores, target: Target, *, probabilities: bool) -> dict:
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


def serving_module(model, *, features, target: Target,
                   probabilities: bool = False):
  """A ``tf.Module`` whose functions are the serving signatures.

  ``model`` must take its inputs as tfdist.data feeds them (images scaled
  to 0..1, numbers and strings raw) and output logits, or
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
