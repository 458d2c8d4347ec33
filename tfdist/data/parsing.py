"""From a serialized ``tf.train.Example`` to what the model is fed.

Owns :class:`RecordSpec` (the features of a record, its label and classes)
and the parse functions built from it: per record where a record holds an
image (decoded, then cropped or upscaled to the model's size), per batch of
records otherwise (one ``tf.io.parse_example`` for numeric vectors, ids and
id lists, whose batch is a RaggedTensor). Every id and label is checked
against its range in the pipeline; a failure names the file
(tfdist.data.records.reading turns it into one line). Images travel as
uint8 and are scaled to float32 0..1 once per batch (:func:`scaled`).
Imports tfdist.features; TensorFlow lazily.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from tfdist import features as features_lib

# The marker of the pipeline's range checks: [marker] [what] [value] [bound]
# [file name] (tfdist.data.records.reading parses it).
RANGE_ERROR = "out of range:"


@dataclasses.dataclass(frozen=True)
class RecordSpec:
  """How a record becomes a model input and a label.

  Attributes:
    features: the features of the records, as stored (an image's shape is
      the stored one, when known).
    label_key: the int64 label's key.
    num_classes: labels lie in [0, num_classes).
    image_shape: the model's image size when it differs from the stored
      one (images are then cropped or upscaled to it); None: as stored.
  """
  features: Tuple[features_lib.Feature, ...]
  label_key: str
  num_classes: int
  image_shape: Optional[tuple] = None

  @property
  def model_features(self) -> dict:
    """``{name: Feature}`` as the model gets them (images at its size)."""
    return {f.name: (dataclasses.replace(f, shape=tuple(self.image_shape))
                     if f.kind == "image" and self.image_shape else f)
            for f in self.features}

  @property
  def has_image(self) -> bool:
    return any(f.kind == "image" for f in self.features)

  def stored_shape(self, feature: features_lib.Feature) -> Optional[tuple]:
    """An image's stored shape, when every record has it (else None)."""
    return tuple(feature.shape) if None not in feature.shape else None


class FromSpec:
  """``features``, ``image_shape`` and ``num_classes`` of a source with a
  ``spec``."""
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


def _parse_features(tf, spec: RecordSpec) -> dict:
  """The ``tf.io.parse_*`` feature map of every feature and the label."""
  parsed = {spec.label_key: tf.io.FixedLenFeature([], tf.int64)}
  for feature in spec.features:
    if feature.kind == "image":
      parsed[feature.key] = tf.io.FixedLenFeature([], tf.string)
    elif feature.kind == "numeric":
      parsed[feature.key] = tf.io.FixedLenFeature(feature.shape, tf.float32)
    elif feature.kind == "id":
      parsed[feature.key] = tf.io.FixedLenFeature([], tf.int64)
    else:
      parsed[feature.key] = tf.io.RaggedFeature(tf.int64,
                                                row_splits_dtype=tf.int64)
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


def _model_input(spec: RecordSpec, values: dict, as_dict: bool = False):
  """The tensor when there is one feature, else the dict by name."""
  if len(spec.features) == 1 and not as_dict:
    return values[spec.features[0].name]
  return values


def _checked_label(tf, spec: RecordSpec, label, filenames):
  return _checked(tf, label, what="label", bound=spec.num_classes,
                  filenames=filenames)


def _inputs(tf, spec: RecordSpec, parsed: dict, filenames, image_fn,
            as_dict: bool = False):
  """The model's inputs of parsed records: ids range-checked, images made
  by ``image_fn(feature, encoded)``."""
  values = {}
  for feature in spec.features:
    value = parsed[feature.key]
    if feature.kind == "image":
      value = image_fn(feature, value)
    elif feature.kind in ("id", "id_list"):
      value = _checked(tf, value, what=f"id of {feature.name}",
                       bound=feature.num_ids, filenames=filenames)
    values[feature.name] = value
  return _model_input(spec, values, as_dict)


def example_fn(spec: RecordSpec, *, augment: bool = False, seed=None,
               as_dict: bool = False):
  """``(file name, serialized Example) -> (inputs, int64 label)`` of one
  record, images as uint8 at the model's size (see :func:`scaled`);
  ``as_dict``: a dict of inputs even for one feature."""
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
    label = _checked_label(tf, spec, example[spec.label_key], filename)
    return _inputs(tf, spec, example, filename, image, as_dict), label

  return parse


def batch_fn(spec: RecordSpec):
  """``(file names, serialized Examples) -> (inputs, labels)`` of a batch
  of records parsed at once: numeric vectors, ids and id lists (ragged),
  or raw-pixel images stored at the model's size."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  parsed_features = _parse_features(tf, spec)

  def raw_pixels(feature, encoded):  # at the model's size
    return tf.reshape(tf.io.decode_raw(encoded, tf.uint8),
                      (-1,) + tuple(feature.shape))

  def parse(filenames, batch):
    examples = tf.io.parse_example(batch, parsed_features)
    labels = _checked_label(tf, spec, examples[spec.label_key], filenames)
    return _inputs(tf, spec, examples, filenames, raw_pixels), labels

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


def _scale(tf, spec: RecordSpec, inputs):
  # As the in-memory path: uint8 through the pipeline, float32 / 255 once
  # per batch.
  if not isinstance(inputs, dict):
    return tf.cast(inputs, tf.float32) / 255.0 if spec.has_image else inputs
  kinds = {f.name: f.kind for f in spec.features}
  return {name: (tf.cast(value, tf.float32) / 255.0
                 if kinds[name] == "image" else value)
          for name, value in inputs.items()}


def scaled(batches, spec: RecordSpec):
  """Batches with their images as float32 0..1, prefetched."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return batches.map(lambda inputs, labels: (_scale(tf, spec, inputs), labels),
                     num_parallel_calls=tf.data.AUTOTUNE).prefetch(
                         tf.data.AUTOTUNE)
