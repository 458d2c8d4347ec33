"""What a model is fed: the features of a dataset, by name, kind and shape.

Owns :class:`Feature` (one input of the model, as a manifest describes it
and the model receives it), the kinds of feature and their checks, and
:func:`keras_inputs`, the Keras inputs that match a dataset's features.
No TensorFlow at import (only :meth:`Feature.keras_input` and
:func:`keras_inputs` load it); imports tfdist.errors.

============  ===============================  ==============  ==========
kind          in a record (tf.train.Example)   the model gets  shape
============  ===============================  ==============  ==========
``image``     PNG, JPEG or raw uint8 bytes      float32, 0..1   (H, W, C)
``numeric``   ``n`` raw floats (NaN: missing)   float32, raw    (n,)
``category``  one raw string                    string          ()
``text``      one raw string                    string          ()
``id``        one int64 in [0, num_ids)         int64           ()
``id_list``   any number of int64 ids           int64, ragged   (None,)
============  ===============================  ==============  ==========

Records hold raw values; what turns them into numbers a dense layer takes
(the training split's statistics and vocabularies, kept here from the
manifest) is applied inside the model by tfdist.model.preprocessing. A model is
always called with a dict of tensors keyed by feature name, also when the
dataset has one feature.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Optional, Tuple

from tfdist.errors import ConfigError

KINDS = ("image", "numeric", "category", "text", "id", "id_list")
IMAGE_ENCODINGS = ("png", "jpeg", "raw", "auto")
_DTYPES = {"image": "float32", "numeric": "float32", "category": "string",
           "text": "string", "id": "int64", "id_list": "int64"}
_DIMENSIONS = {"image": 3, "numeric": 1, "category": 0, "text": 0, "id": 0,
               "id_list": 1}
# How a missing value is filled (tfdist.data.tables --missing=fill): a
# number by the training mean, a string by the unknown value.
FILLS = {"numeric": ("", "mean"), "category": ("", "unknown"),
         "text": ("", "unknown")}
# A name a model input, a SavedModel signature and TensorFlow's op names
# all take.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class Feature:
  """One input of the model.

  Attributes:
    name: what the model (a dict key) and the serving signature call it:
      ASCII letters, digits and ``_``, starting with a letter.
    kind: one of KINDS (see the module docstring).
    shape: of one example as the model gets it: ``(H, W, C)`` for an
      image (in records, H and W are None when they vary), ``(n,)``
      numeric, ``()`` a category, a text or an id, ``(None,)`` an id list.
    key: its ``tf.train.Example`` key in the records (default: name).
    num_ids: ``id`` and ``id_list``: every id lies in ``[0, num_ids)``
      (an embedding table of that many rows takes them).
    vocabulary: ``category``: the training split's values, sorted (any
      other value is unknown); ``text``: the training split's most frequent
      tokens (tf.keras TextVectorization's own, most frequent first).
    encoding: ``image``: png, jpeg, raw or auto (PNG or JPEG per record).
    mean, std: ``numeric``: each value's mean and standard deviation over
      the training split (float64, as computed), when known.
    fill: how a missing value was left in the records (FILLS): ``mean``, a
      number stored as NaN and filled with the mean in the model;
      ``unknown``, a string stored empty (an unknown value); "" none.
    columns: ``numeric`` made of several CSV columns: their names, one per
      value, in order (one column: its name is the key).
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
    if not NAME_PATTERN.fullmatch(self.name or ""):
      raise ConfigError(f"{where}: a feature name is ASCII letters, digits "
                        "and _, starting with a letter (it names a model "
                        "input and a serving input)")
    if self.kind not in KINDS:
      raise ConfigError(f"{where}: kind {self.kind!r} is not one of "
                        f"{', '.join(KINDS)}")
    for name in ("shape", "vocabulary", "mean", "std", "columns"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    object.__setattr__(self, "key", self.key or self.name)
    self._check_shape(where)
    self._check_kind_fields(where)

  def _check_shape(self, where: str) -> None:
    expected = _DIMENSIONS[self.kind]
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

  def _check_kind_fields(self, where: str) -> None:
    if self.kind in ("id", "id_list") and self.num_ids < 1:
      raise ConfigError(f"{where}: an {self.kind} needs num_ids, how many "
                        "distinct ids there are (ids lie in [0, num_ids))")
    if self.kind == "image" and self.encoding not in IMAGE_ENCODINGS:
      raise ConfigError(f"{where}: encoding {self.encoding!r} is not one of "
                        f"{', '.join(IMAGE_ENCODINGS)}")
    if self.kind in ("category", "text") and not self.vocabulary:
      raise ConfigError(f"{where}: a {self.kind} needs its vocabulary (the "
                        "training split's values or tokens)")
    if self.vocabulary and self.kind not in ("category", "text"):
      raise ConfigError(f"{where}: a vocabulary belongs to a category or a "
                        f"text, not to a {self.kind}")
    if self.fill not in FILLS.get(self.kind, ("",)):
      raise ConfigError(f"{where}: fill {self.fill!r} is not one of "
                        f"{', '.join(map(repr, FILLS.get(self.kind, ('',))))}")
    width = self.shape[0] if self.kind == "numeric" else None
    for name in ("mean", "std", "columns"):
      value = getattr(self, name)
      if value and (self.kind != "numeric" or len(value) != width):
        raise ConfigError(f"{where}: {name} has {len(value)} values; it "
                          f"belongs to a numeric feature, one per value")
    if self.fill == "mean" and not self.mean:
      raise ConfigError(f"{where}: fill 'mean' needs the mean")

  @property
  def dtype(self) -> str:
    """The dtype the model gets (float32, string or int64)."""
    return _DTYPES[self.kind]

  @property
  def ragged(self) -> bool:
    """Whether a batch of it is a RaggedTensor (an id list)."""
    return self.kind == "id_list"

  @property
  def csv_columns(self) -> Tuple[str, ...]:
    """The CSV columns its values come from (a table's feature)."""
    return self.columns or (self.key,)

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
    return {k: (list(v) if isinstance(v, tuple) else v)
            for k, v in body.items()
            if v not in ("", (), [], 0) or k in ("name", "kind", "shape")}

  @classmethod
  def from_json(cls, body: Mapping) -> "Feature":
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


def keras_inputs(features: Features) -> dict:
  """The Keras inputs of ``features``, a dict by name, also for one
  feature: what the model is called with (the records' raw values)."""
  return {name: feature.keras_input() for name, feature in features.items()}


def signature(features: Features) -> dict:
  """What a checkpoint records of the inputs (tfdist.training.checkpoint)."""
  return {name: [f.kind, list(f.shape)] for name, f in features.items()}
