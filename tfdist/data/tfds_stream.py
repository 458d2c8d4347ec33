"""TFDS datasets streamed from their prepared files (:class:`TfdsSource`).

Owns reading a tensorflow-datasets dataset as ``tf.data``: each input
pipeline reads its share of the prepared shards through
``tfds.ReadConfig(input_context=...)`` (by file), or every n-th record when
there are fewer shards than pipelines, as TFRecord sources do; images are
cropped (or randomly cropped and flipped) in the pipeline, nothing is held
in memory and no split is loaded with ``batch_size=-1``. The pipeline is
built inside ``dataset_fn``: under ps the traced function names files.
Imports tfdist.console, errors, data and data.records; TensorFlow and
tensorflow-datasets lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Iterator, Optional

from tfdist import console
from tfdist import data as data_lib
from tfdist.data import features as features_lib
from tfdist.data import records
from tfdist.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TfdsSource(records.FromSpec):
  """A prepared TFDS dataset, read split by split from its files."""
  name: str
  tfds_name: str
  data_dir: Optional[str]
  test_split: str
  spec: records.RecordSpec
  train_examples: int
  test_examples: int
  train_shards: tuple
  augment: bool = False

  def _split(self, split: str, *, input_context=None, seed=None,
             shuffle_files: bool = False):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(self.tfds_name, data_dir=self.data_dir)
    return builder.as_dataset(
        split=split, as_supervised=True, shuffle_files=shuffle_files,
        read_config=tfds.ReadConfig(input_context=input_context,
                                    shuffle_seed=seed))

  def train_dataset_fn(self, global_batch_size: int, *,
                       seed: Optional[int] = 0,
                       shuffle_buffer: int = records.SHUFFLE_BUFFER,
                       report: Callable[[str], None] = console.info):
    """``dataset_fn(input_context)`` of endless shuffled training batches."""

    def dataset_fn(input_context):
      plan = records.plan_shards(list(self.train_shards),
                                 input_context.num_input_pipelines,
                                 input_context.input_pipeline_id)
      report(f"{self.name}: {plan.describe()}")
      pipeline_seed = None if seed is None else seed + plan.pipeline
      by_file = plan.by == "file"
      ds = self._split("train", seed=pipeline_seed, shuffle_files=by_file,
                       input_context=input_context if by_file else None)
      if plan.by == "record":
        ds = ds.shard(plan.pipelines, plan.pipeline)
      ds = ds.shuffle(shuffle_buffer, seed=pipeline_seed,
                      reshuffle_each_iteration=True).repeat()
      return records.fitted_batches(
          ds, self.spec, augment=self.augment, seed=pipeline_seed,
          batch_size=input_context.get_per_replica_batch_size(
              global_batch_size), drop_remainder=True, deterministic=False,
          weights=True)

    return dataset_fn

  def test_batches(self, batch_size: int) -> Iterator:
    """Every test example exactly once, centre-cropped, in order."""
    yield from records.fitted_batches(self._split(self.test_split), self.spec,
                                      batch_size=batch_size,
                                      drop_remainder=False)

  def reading(self):
    return contextlib.nullcontext()


def _prepared_builder(name: str, data_dir: Optional[str]):
  """The TFDS builder of ``name``, prepared (downloaded only when it is not
  on disk and its server answers within seconds)."""
  known = data_lib.TFDS_DATASETS.get(name, data_lib.TfdsDataset(name, ()))
  on_disk = data_lib.tfds_on_disk(name, data_dir)
  try:
    if not on_disk:
      data_lib.check_reachable(known.download_host)
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    builder = tfds.builder(known.tfds_name, data_dir=data_dir)
    if not on_disk:
      builder.download_and_prepare()
    return known, builder
  except Exception as e:  # pylint: disable=broad-except
    # TFDS raises many types (DatasetNotFoundError, network errors ...); the
    # user needs to know which dataset failed and the offline alternative.
    raise ConfigError(f"tensorflow-datasets could not load {name!r} "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                      "without network use --mnist_dir=DIR, --data=tfrecord "
                      "or --data=synthetic") from None


def open_tfds(name: str, *, data_dir: Optional[str] = None,
              image_shape: Optional[tuple] = None,
              augment: bool = False) -> TfdsSource:
  """The prepared TFDS dataset ``name`` (a key of data.TFDS_DATASETS or any
  TFDS name of supervised image classification).

  Args:
    image_shape: the model's input; default the known shape of ``name``,
      else the stored one (images are cropped or upscaled to it).
    augment: random crop and flip of the training images.
  """
  known, builder = _prepared_builder(name, data_dir)
  info = builder.info
  image_key, label_key = info.supervised_keys[:2]
  stored = tuple(info.features[image_key].shape)
  shape = tuple(image_shape or known.image_shape or stored)
  if None in shape:
    raise ConfigError(f"{name}: images of varying size; pass --image_shape")
  splits = info.splits
  label = info.features[label_key]
  spec = records.RecordSpec(
      features=(features_lib.image_feature(stored, key=image_key),),
      label_key=label_key, num_classes=label.num_classes, image_shape=shape,
      class_names=tuple(label.names))
  return TfdsSource(
      name=name, tfds_name=known.tfds_name, data_dir=data_dir,
      test_split=known.test_split, spec=spec,
      train_examples=splits["train"].num_examples,
      test_examples=splits[known.test_split].num_examples,
      train_shards=tuple(splits["train"].filenames), augment=augment)
