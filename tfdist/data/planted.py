"""Generated id lists with a planted class, and their best possible accuracy.

No sparse dataset ships offline, so the sparse model (trainers.sparse)
trains on generated records. They stand for the input of a click or topic
model: each example is a bag of hashed token ids, a few of which give its
class away among many that say nothing.

The generator (all draws from one seed, so every task of a cluster that
generates it gets the same bytes):

* every id has a background frequency ``b(id)``: Zipf's law with exponent
  ``zipf`` (word and hashed-token counts follow it), the ranks dealt to
  the ids by a seeded permutation, so frequent ids are scattered over the
  whole table (a batch's lookups touch every shard);
* each of ``num_classes`` classes owns ``topic_ids`` ids, disjoint sets
  drawn by another seeded permutation;
* an example's class is uniform, its length uniform in ``[min_length,
  max_length]``, and each of its ids is, with probability ``signal``, one
  of its class's ids (uniform), else a background id (drawn by ``b``).

The best possible accuracy is the Bayes rule's. An id's likelihood under
class c is ``signal / topic_ids`` (if c owns it) ``+ (1 - signal) b(id)``,
and the length does not depend on the class, so the posterior of class c
is, up to a factor common to all classes, the product over the example's
ids that c owns of ``1 + signal / (topic_ids (1 - signal) b(id))``. The
Bayes rule predicts the class with the largest sum of those logarithms; a
tie among m classes (no owned id at all: every class scores 0) is right
1/m of the time. Its expected accuracy on the test split
(:func:`bayes_accuracy`) is ``best_accuracy``: no classifier does better
in expectation on those examples, and a bag of ids through an embedding
into one score per class can express the rule (a weight per id and
class).

Owns :class:`Planted` (the generator's settings), the examples, the Bayes
accuracy and :func:`ensure`, which writes the records once into a
directory named by the settings (tfdist.data.shards: TFRecord shards and a
manifest; ``planted.json`` beside them) and finds them there afterwards.
The directory appears whole, by one rename: tasks that generate at once
each build their own copy and the first rename wins. Imports
tfdist.console, errors, data.features and data (manifest, shards); TensorFlow
lazily.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Callable, Iterator, Tuple

import numpy as np

from tfdist import console
from tfdist.data import features as features_lib
from tfdist.data import manifest as manifest_lib
from tfdist.data import shards
from tfdist.errors import ConfigError

FEATURE = "tokens"
LABEL = "label"
INFO_FILE = "planted.json"
# Bumped whenever the same settings would give other examples: a directory
# of an older generator is never taken for this one's.
GENERATOR_VERSION = 1
NUM_SHARDS = 4
# Seconds of writing: one line per split is enough.
PROGRESS_EVERY = 1 << 30


@dataclasses.dataclass(frozen=True)
class Planted:
  """The generator's settings (see the module docstring)."""
  vocab_size: int
  num_classes: int = 10
  topic_ids: int = 100
  signal: float = 0.15
  zipf: float = 1.1
  min_length: int = 10
  max_length: int = 30
  train_examples: int = 50_000
  test_examples: int = 10_000
  seed: int = 0

  def __post_init__(self):
    owned = self.num_classes * self.topic_ids
    if self.vocab_size < owned:
      raise ConfigError(f"--vocab_size={self.vocab_size}: the generated data "
                        f"plants {self.topic_ids} ids for each of "
                        f"{self.num_classes} classes; use at least {owned}")
    if not 0 < self.signal <= 1 or not 1 <= self.min_length <= self.max_length:
      raise ValueError(f"bad generator settings {self}")

  @property
  def name(self) -> str:
    """The directory name: every setting that changes the examples."""
    return (f"planted-v{GENERATOR_VERSION}-ids{self.vocab_size}"
            f"-c{self.num_classes}-t{self.topic_ids}-p{self.signal:g}"
            f"-z{self.zipf:g}"
            f"-l{self.min_length}to{self.max_length}-n{self.train_examples}"
            f"+{self.test_examples}-s{self.seed}")

  def topics(self) -> np.ndarray:
    """``[num_classes, topic_ids]``: the ids each class owns."""
    rng = np.random.default_rng([self.seed, 1])
    return rng.permutation(self.vocab_size)[
        :self.num_classes * self.topic_ids].reshape(self.num_classes, -1)

  def background(self) -> np.ndarray:
    """``b``: each id's background frequency (sums to 1)."""
    by_rank = np.arange(1, self.vocab_size + 1, dtype=np.float64) ** -self.zipf
    frequency = np.empty(self.vocab_size)
    frequency[np.random.default_rng([self.seed, 3]).permutation(
        self.vocab_size)] = by_rank / by_rank.sum()
    return frequency

  def split(self, name: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels, lengths, ids)`` of split ``name`` (train or test): the
    ids of example i are ``ids[sum(lengths[:i]):][:lengths[i]]``."""
    count = {"train": self.train_examples, "test": self.test_examples}[name]
    rng = np.random.default_rng([self.seed, 2, name == "test"])
    labels = rng.integers(0, self.num_classes, count)
    lengths = rng.integers(self.min_length, self.max_length + 1, count)
    owner = np.repeat(labels, lengths)
    ids = rng.choice(self.vocab_size, size=lengths.sum(),
                     p=self.background())
    planted = rng.random(ids.size) < self.signal
    ids[planted] = self.topics()[owner[planted],
                                 rng.integers(0, self.topic_ids,
                                              planted.sum())]
    return labels, lengths, ids


def bayes_accuracy(planted: Planted, labels: np.ndarray, lengths: np.ndarray,
                   ids: np.ndarray) -> float:
  """The Bayes rule's expected accuracy on these examples (module
  docstring): ties among m classes count 1/m."""
  topics = planted.topics()
  owner = np.full(planted.vocab_size, -1)
  owner[topics.ravel()] = np.repeat(np.arange(planted.num_classes),
                                    planted.topic_ids)
  # Each owned id's evidence for its class: log(1 + s / (k (1 - s) b)).
  evidence = np.log1p(planted.signal / (
      planted.topic_ids * (1 - planted.signal) * planted.background()))
  example = np.repeat(np.arange(labels.size), lengths)
  owned = owner[ids] >= 0
  scores = np.zeros((labels.size, planted.num_classes))
  np.add.at(scores, (example[owned], owner[ids[owned]]),
            evidence[ids[owned]])
  best = np.isclose(scores, scores.max(axis=1, keepdims=True), rtol=1e-12,
                    atol=0)
  return float(np.mean(best[np.arange(labels.size), labels]
                       / best.sum(axis=1)))


def _examples(tf, labels, lengths, ids) -> Callable[[], Iterator[bytes]]:
  def serialized() -> Iterator[bytes]:
    ends = np.cumsum(lengths).tolist()
    values = ids.tolist()
    for label, start, end in zip(labels.tolist(), [0, *ends], ends):
      yield tf.train.Example(features=tf.train.Features(feature={
          FEATURE: tf.train.Feature(int64_list=tf.train.Int64List(
              value=values[start:end])),
          LABEL: tf.train.Feature(int64_list=tf.train.Int64List(
              value=[label]))})).SerializeToString()
  return serialized


def feature(planted: Planted) -> features_lib.Feature:
  return features_lib.Feature(name=FEATURE, kind="id_list", shape=(None,),
                              num_ids=planted.vocab_size)


def write(planted: Planted, out_dir: str, *,
          report: Callable[[str], None] = console.info) -> dict:
  """Generates the examples into a new ``out_dir``; returns planted.json's
  contents (the settings and ``best_accuracy``)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  splits = {name: planted.split(name) for name in ("train", "test")}
  info = {"generator": GENERATOR_VERSION, **dataclasses.asdict(planted),
          "best_accuracy": round(bayes_accuracy(planted, *splits["test"]), 5)}

  def manifest(written):
    return manifest_lib.Manifest(
        num_classes=planted.num_classes,
        class_names=[f"topic_{c}" for c in range(planted.num_classes)],
        features=(feature(planted),), label_key=LABEL, splits=written,
        source=f"generated ({planted.name})")

  shards.write({name: (labels.size, _examples(tf, labels, lengths, ids))
                for name, (labels, lengths, ids) in splits.items()},
               out_dir=out_dir, num_shards=NUM_SHARDS, manifest=manifest,
               progress_every=PROGRESS_EVERY, report=report)
  with open(os.path.join(out_dir, INFO_FILE), "w") as f:
    json.dump(info, f, indent=1)
  return info


def ensure(planted: Planted, base_dir: str, *,
           report: Callable[[str], None] = console.info) -> Tuple[str, dict]:
  """The directory of ``planted``'s records under ``base_dir``, written
  first if missing; returns it and planted.json's contents.

  Every task of a cluster may call this at once on one filesystem: each
  writes its own copy beside the target and renames it into place; a task
  that finds the target there already discards its copy (the same
  examples: the same seed).
  """
  target = os.path.join(base_dir, planted.name)
  info_path = os.path.join(target, INFO_FILE)
  if not os.path.exists(info_path):
    os.makedirs(base_dir, exist_ok=True)
    building = tempfile.mkdtemp(prefix=f".{planted.name}.", dir=base_dir)
    try:
      write(planted, building, report=report)
      os.rename(building, target)
      report(f"data: generated {target}")
    except OSError:
      if not os.path.exists(info_path):
        raise  # not another task's copy in place: a real failure
    finally:
      shutil.rmtree(building, ignore_errors=True)
  with open(info_path) as f:
    return target, json.load(f)
