"""What a model is fed: the features of a dataset, by name, kind and shape.

Owns :class:`Feature` (one input of the model, as a manifest describes it
and the model receives it), the kinds of feature and their checks, and
:func:`keras_inputs`, the Keras inputs that match a dataset's features.
No TensorFlow at import (only :meth:`Feature.keras_input` and
:func:`keras_inputs` load it); imports tfdist.errors.

==========  ===============================  =============  ===============
kind        in a record (tf.train.Example)   the model gets  shape
==========  ===============================  =============  ===============
``image``   PNG, JPEG or raw uint8 bytes      float32, 0..1  (H, W, C)
``numeric`` ``n`` floats                      float32        (n,)
``id``      one int64 in [0, num_ids)         int64          ()
``id_list`` any number of int64 ids           int64, ragged  (None,)
``category`` one raw string                   string         ()
``text``    one raw string                    string         ()
==========  ===============================  =============  ===============

A model receives the tensor itself when its dataset has one feature, and a
dict of tensors keyed by feature name when it has several.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Tuple

from tfdist.errors import ConfigError

KINDS = ("image", "numeric", "id", "id_list", "category", "text")
IMAGE_ENCODINGS = ("png", "jpeg", "raw", "auto")
_DTYPES = {"image": "float32", "numeric": "float32", "id": "int64",
           "id_list": "int64", "category": "string", "text": "string"}


@dataclasses.dataclass(frozen=True)
class Feature:
  """One input of the model.

  Attributes:
    name: what the model (a dict key) and the serving signature call it.
    kind: one of KINDS (see the module docstring).
    shape: of one example as the model gets it: ``(H, W, C)`` for an
      image (in records, H and W are None when they vary), ``(n,)``
      numeric, ``()`` an id, ``(None,)`` an id list.
    key: its ``tf.train.Example`` key in the records (default: name).
    num_ids: ``id`` and ``id_list``: every id lies in ``[0, num_ids)``
      (an embedding table of that many rows takes them).
    vocabulary: ``id`` made from strings (a CSV column): the string of
      each id, in id order.
    encoding: ``image``: png, jpeg, raw or auto (PNG or JPEG per record).
    mean, std: ``numeric``: each value's mean and standard deviation over
      the training split, when known (for a normalisation layer).
    fill: ``numeric``: "" (no value may be missing) or "mean" (a missing
      value, NaN, is filled with the mean inside the model).
    columns: ``numeric``: the CSV columns grouped into this feature.
  """
  name: str
  kind: str
  shape: Tuple[Optional[int], ...]
  key: str = ""
  num_ids: int = 0
  vocabulary: Tuple[str, ...] = ()
  encoding: str = ""
  mean: Tuple[float, ...] = ()
  std: Tuple[float, ...] = ()
  fill: str = ""
  columns: Tuple[str, ...] = ()

  def __post_init__(self):
    where = f"feature {self.name!r}"
    if not self.name or not self.name.replace("_", "a").isalnum():
      raise ConfigError(f"{where}: a feature name is letters, digits and _ "
                        "(it names a model input and a serving input)")
    if self.kind not in KINDS:
      raise ConfigError(f"{where}: kind {self.kind!r} is not one of "
                        f"{', '.join(KINDS)}")
    object.__setattr__(self, "shape", tuple(self.shape))
    object.__setattr__(self, "key", self.key or self.name)
    expected = {"image": 3, "numeric": 1, "id": 0, "id_list": 1,
                "category": 0, "text": 0}[self.kind]
    if len(self.shape) != expected:
      raise ConfigError(f"{where}: a {self.kind} has {expected} dimensions, "
                        f"not shape {list(self.shape)}")
    # An image's height and width may vary between records (None).
    fixed = (self.shape[2:] if self.kind == "image" else self.shape
             if self.kind == "numeric" else ())
    if (not all(_positive(d) for d in fixed)
        or not all(d is None or _positive(d) for d in self.shape)):
      raise ConfigError(f"{where}: shape {list(self.shape)} must be positive "
                        "sizes")
    if self.kind in ("id", "id_list") and self.num_ids < 1:
      raise ConfigError(f"{where}: an {self.kind} needs num_ids, how many "
                        "distinct ids there are (ids lie in [0, num_ids))")
    if self.kind == "image" and self.encoding not in IMAGE_ENCODINGS:
      raise ConfigError(f"{where}: encoding {self.encoding!r} is not one of "
                        f"{', '.join(IMAGE_ENCODINGS)}")

  @property
  def dtype(self) -> str:
    """The dtype the model gets (float32, int64 or string)."""
    return _DTYPES[self.kind]

  @property
  def ragged(self) -> bool:
    """Whether a batch of it is a RaggedTensor (an id list)."""
    return self.kind == "id_list"

  def describe(self) -> str:
    """``name: kind dtype[shape]``, for lines and checkpoints."""
    dims = ",".join("None" if d is None else str(d) for d in self.shape)
    return f"{self.name}: {self.kind} {self.dtype}[{dims}]"

  def keras_input(self):
    """A ``tf.keras.Input`` for this feature (name, shape, dtype, ragged)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.keras.Input(shape=self.shape, dtype=self.dtype, name=self.name,
                          ragged=self.ragged)

  def to_json(self) -> dict:
    """The manifest's entry: the fields that are set."""
    body = dataclasses.asdict(self)
    body["shape"] = list(self.shape)
    return {k: v for k, v in body.items()
            if v not in ("", (), [], 0) or k in ("name", "kind", "shape")}

  @classmethod
  def from_json(cls, body: Mapping) -> "Feature":
    body = dict(body)
    for name in ("shape", "vocabulary", "mean", "std", "columns"):
      if name in body:
        body[name] = tuple(body[name])
    return cls(**body)


Features = Mapping[str, Feature]


def _positive(size) -> bool:
  return isinstance(size, int) and not isinstance(size, bool) and size > 0


def image_feature(shape, *, name: str = "images", key: str = "",
                  encoding: str = "auto") -> Feature:
  """The one feature of an image dataset."""
  return Feature(name=name, kind="image", shape=tuple(shape), key=key,
                 encoding=encoding)


def by_name(features) -> dict:
  """``{name: Feature}`` of a sequence of features, in order; ConfigError
  names a name used twice."""
  named = {}
  for feature in features:
    if feature.name in named:
      raise ConfigError(f"feature {feature.name!r} is named twice; give "
                        "every feature its own name")
    named[feature.name] = feature
  return named


def single_image(features: Features) -> Optional[Feature]:
  """The image feature when it is the only feature, else None."""
  if len(features) == 1:
    (feature,) = features.values()
    if feature.kind == "image":
      return feature
  return None


def keras_inputs(features: Features):
  """The Keras inputs of ``features``: the one input when there is one
  feature, else a dict of them by name (what the model is called with)."""
  inputs = {name: feature.keras_input() for name, feature in features.items()}
  if len(inputs) == 1:
    return next(iter(inputs.values()))
  return inputs


def signature(features: Features) -> dict:
  """What a checkpoint records of the inputs (tfdist.checkpoint)."""
  return {name: [f.kind, list(f.shape)] for name, f in features.items()}
