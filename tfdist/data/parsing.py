"""From a serialized ``tf.train.Example`` to what the model is fed.

Owns :class:`RecordSpec` (the features of a record, its label and task,
classes and weights) and the parse functions built from it: per record
where a record holds an image (decoded, then cropped or upscaled to the
model's size), per batch of records otherwise (one ``tf.io.parse_example``
for numbers, strings, ids and id lists, whose batch is a RaggedTensor).
The model's inputs are always a dict by feature name; a label is an int64
class index (classification) or a float32 vector (regression, multilabel);
a training batch carries each example's weight too when the records have a
weight or classes are weighted (:func:`weights_of`). Every id and class
index is checked against its range in the pipeline; a failure names the
file (tfdist.data.records.reading turns it into one line). Images travel
as uint8 and are scaled to float32 0..1 once per batch (:func:`scaled`).
Imports tfdist.data.features; TensorFlow lazily.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from tfdist.data import features as features_lib

# The marker of the pipeline's range checks: [marker] [what] [value] [bound]
# [file name] (tfdist.data.records.reading parses it).
RANGE_ERROR = "out of range:"


@dataclasses.dataclass(frozen=True)
class RecordSpec:
  """How a record becomes a model input, a label and a weight.

  Attributes:
    features: the features of the records, as stored (an image's shape is
      the stored one, when known).
    label_key: the label's key.
    num_classes: the model's outputs: classification labels lie in
      [0, num_classes); a regression or multilabel label has num_classes
      values.
    image_shape: the model's image size when it differs from the stored
      one (images are then cropped or upscaled to it); None: as stored.
    task: classification, regression or multilabel.
    class_names: classification: each class's name; multilabel: the label
      columns.
    label_names: the label column(s).
    weight_key: "" or the key of each record's float weight.
    class_weights: () or each class's weight (``--class_weight``),
      multiplying the record's.
  """
  features: Tuple[features_lib.Feature, ...]
  label_key: str
  num_classes: int
  image_shape: Optional[tuple] = None
  task: str = "classification"
  class_names: Tuple[str, ...] = ()
  label_names: Tuple[str, ...] = ("label",)
  weight_key: str = ""
  class_weights: Tuple[float, ...] = ()

  @property
  def model_features(self) -> dict:
    """``{name: Feature}`` as the model gets them (images at its size)."""
    return {f.name: (dataclasses.replace(f, shape=tuple(self.image_shape))
                     if f.kind == "image" and self.image_shape else f)
            for f in self.features}

  @property
  def has_image(self) -> bool:
    return any(f.kind == "image" for f in self.features)

  @property
  def has_weights(self) -> bool:
    """Whether training batches carry a weight per example."""
    return bool(self.weight_key or self.class_weights)

  def stored_shape(self, feature: features_lib.Feature) -> Optional[tuple]:
    """An image's stored shape, when every record has it (else None)."""
    return tuple(feature.shape) if None not in feature.shape else None


class FromSpec:
  """What a source with a ``spec`` tells the trainer: its features, image
  shape, task, outputs, classes, labels and whether it weights examples."""
  spec: RecordSpec

  @property
  def features(self) -> dict:
    return self.spec.model_features

  @property
  def image_shape(self) -> Optional[tuple]:
    image = features_lib.single_image(self.features)
    return tuple(image.shape) if image else None

  @property
  def num_classes(self) -> int:
    return self.spec.num_classes

  @property
  def num_outputs(self) -> int:
    return self.spec.num_classes

  @property
  def task(self) -> str:
    return self.spec.task

  @property
  def class_names(self) -> list:
    return list(self.spec.class_names)

  @property
  def label_names(self) -> list:
    return list(self.spec.label_names)

  @property
  def has_weights(self) -> bool:
    return self.spec.has_weights


_PARSED_AS = {"image": "string", "category": "string", "text": "string",
              "numeric": "float32", "id": "int64"}


def _parse_features(tf, spec: RecordSpec) -> dict:
  """The ``tf.io.parse_*`` feature map of every feature, the label and the
  weight."""
  if spec.task == "classification":
    parsed = {spec.label_key: tf.io.FixedLenFeature([], tf.int64)}
  else:
    parsed = {spec.label_key: tf.io.FixedLenFeature([spec.num_classes],
                                                    tf.float32)}
  if spec.weight_key:
    parsed[spec.weight_key] = tf.io.FixedLenFeature([], tf.float32)
  for feature in spec.features:
    if feature.kind == "id_list":
      parsed[feature.key] = tf.io.RaggedFeature(tf.int64,
                                                row_splits_dtype=tf.int64)
    else:
      shape = feature.shape if feature.kind == "numeric" else []
      parsed[feature.key] = tf.io.FixedLenFeature(
          shape, tf.as_dtype(_PARSED_AS[feature.kind]))
  return parsed


def _checked(tf, values, *, what: str, bound: int, filenames):
  """``values`` after an assertion that each lies in [0, bound)."""
  values_flat = values.flat_values if hasattr(values, "flat_values") else values
  flat = tf.reshape(values_flat, [-1])
  names = tf.reshape(filenames, [-1])
  bad = tf.logical_or(flat < 0, flat >= bound)
  index = tf.argmax(tf.cast(bad, tf.int32))
  first = tf.cond(tf.size(flat) > 0, lambda: flat[index],
                  lambda: tf.constant(0, flat.dtype))
  # A batch's file name per value is not kept: the first record's names the
  # batch (records.reading reads the files through to name the bad one).
  name = tf.cond(tf.size(names) > 0, lambda: names[0],
                 lambda: tf.constant(""))
  check = tf.debugging.Assert(
      tf.logical_not(tf.reduce_any(bad)),
      [RANGE_ERROR, what, first, bound, name], summarize=1)
  with tf.control_dependencies([check]):
    return tf.identity(values) if not hasattr(values, "flat_values") else (
        values.with_flat_values(tf.identity(values.flat_values)))


def _decode(tf, feature: features_lib.Feature, encoded, stored_shape,
            channels: int):
  if feature.encoding == "png":
    return tf.io.decode_png(encoded, channels=channels)
  if feature.encoding == "jpeg":
    return tf.io.decode_jpeg(encoded, channels=channels)
  if feature.encoding == "raw":
    return tf.reshape(tf.io.decode_raw(encoded, tf.uint8), stored_shape)
  image = tf.io.decode_image(encoded, channels=channels,
                             expand_animations=False)
  image.set_shape([None, None, channels])
  return image


def fit_image(tf, image, *, stored_shape, image_shape, augment: bool, seed):
  """Crops ``image`` to ``image_shape`` (upscaled first if it is smaller).

  Centre crop, or a random crop and left-right flip when ``augment``.
  """
  height, width, channels = image_shape
  if tuple(stored_shape or ()) != tuple(image_shape):
    size = tf.shape(image)[:2]
    scale = tf.reduce_max(tf.constant([height, width], tf.float32)
                          / tf.cast(size, tf.float32))
    image = tf.cond(
        scale > 1.0,
        lambda: tf.cast(tf.round(tf.clip_by_value(tf.image.resize(
            image, tf.cast(tf.math.ceil(tf.cast(size, tf.float32) * scale),
                           tf.int32)), 0, 255)), tf.uint8),
        lambda: image)
    if augment:
      image = tf.image.random_crop(image, [height, width, channels], seed=seed)
    else:
      image = tf.image.resize_with_crop_or_pad(image, height, width)
  if augment:
    image = tf.image.random_flip_left_right(image, seed=seed)
  return tf.ensure_shape(image, image_shape)


def _checked_label(tf, spec: RecordSpec, label, filenames):
  if spec.task != "classification":
    return label
  return _checked(tf, label, what="label", bound=spec.num_classes,
                  filenames=filenames)


def weights_of(tf, labels, *, class_weights=(), record_weights=None):
  """Each example's weight: its class's weight (``class_weights``, by
  class index) times its own (``record_weights``), float32."""
  weights = record_weights
  if class_weights:
    by_class = tf.gather(tf.constant(class_weights, tf.float32), labels)
    weights = by_class if weights is None else weights * by_class
  return weights


def _parsed(tf, spec: RecordSpec, parsed: dict, filenames, image_fn,
            weights: bool) -> tuple:
  """``(inputs, labels[, weights])`` of parsed records: the inputs a dict
  by feature name, ids range-checked, images made by
  ``image_fn(feature, encoded)``."""
  values = {}
  for feature in spec.features:
    value = parsed[feature.key]
    if feature.kind == "image":
      value = image_fn(feature, value)
    elif feature.kind in ("id", "id_list"):
      value = _checked(tf, value, what=f"id of {feature.name}",
                       bound=feature.num_ids, filenames=filenames)
    values[feature.name] = value
  labels = _checked_label(tf, spec, parsed[spec.label_key], filenames)
  if not (weights and spec.has_weights):
    return values, labels
  return values, labels, weights_of(
      tf, labels, class_weights=spec.class_weights,
      record_weights=parsed[spec.weight_key] if spec.weight_key else None)


def example_fn(spec: RecordSpec, *, augment: bool = False, seed=None,
               weights: bool = False):
  """``(file name, serialized Example) -> (inputs, label[, weight])`` of
  one record, images as uint8 at the model's size (see :func:`scaled`);
  ``weights``: with its weight, when the spec has weights."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  parsed_features = _parse_features(tf, spec)
  model_features = spec.model_features

  def image(feature, encoded):
    shape = model_features[feature.name].shape
    stored = spec.stored_shape(feature)
    decoded = _decode(tf, feature, encoded, stored, shape[2])
    return fit_image(tf, decoded, stored_shape=stored, image_shape=shape,
                     augment=augment, seed=seed)

  def parse(filename, record):
    example = tf.io.parse_single_example(record, parsed_features)
    return _parsed(tf, spec, example, filename, image, weights)

  return parse


def batch_fn(spec: RecordSpec, *, weights: bool = False):
  """``(file names, serialized Examples) -> (inputs, labels[, weights])``
  of a batch of records parsed at once: numbers, strings, ids and id lists
  (ragged), or raw-pixel images stored at the model's size."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  parsed_features = _parse_features(tf, spec)

  def raw_pixels(feature, encoded):  # at the model's size
    return tf.reshape(tf.io.decode_raw(encoded, tf.uint8),
                      (-1,) + tuple(feature.shape))

  def parse(filenames, batch):
    examples = tf.io.parse_example(batch, parsed_features)
    return _parsed(tf, spec, examples, filenames, raw_pixels, weights)

  return parse


def batch_parses(spec: RecordSpec, *, augment: bool) -> bool:
  """Whether whole batches of records parse at once (:func:`batch_fn`):
  no image, or one raw-pixel image stored at the model's size."""
  images = [f for f in spec.features if f.kind == "image"]
  if not images:
    return True
  if len(spec.features) != 1 or augment:
    return False
  (image,) = images
  return (image.encoding == "raw"
          and spec.stored_shape(image) == tuple(
              spec.model_features[image.name].shape))


def raw_images(spec: RecordSpec, *, augment: bool) -> bool:
  """One raw-pixel image at the model's size, parsed per batch: small
  images for tfdist.data.window's shuffle (softmax MNIST)."""
  return spec.has_image and batch_parses(spec, augment=augment)


def _scale(tf, spec: RecordSpec, inputs: dict) -> dict:
  # As the in-memory path: uint8 through the pipeline, float32 / 255 once
  # per batch.
  kinds = {f.name: f.kind for f in spec.features}
  return {name: (tf.cast(value, tf.float32) / 255.0
                 if kinds[name] == "image" else value)
          for name, value in inputs.items()}


def scaled(batches, spec: RecordSpec):
  """Batches with their images as float32 0..1, prefetched."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return batches.map(lambda inputs, *rest: (_scale(tf, spec, inputs), *rest),
                     num_parallel_calls=tf.data.AUTOTUNE).prefetch(
                         tf.data.AUTOTUNE)
