"""Raw-pixel shards at the model's size take the window-shuffle fast path.

Real MNIST converted to raw shards; pipelines run in this process with
simulated input contexts, and the tests compare what each one read in an
epoch with the files' contents.
"""

import collections
import os
import sys

import numpy as np
import pytest

from conftest import run

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tensorflow as tf  # pylint: disable=wrong-import-position

from tfdist.data import records  # pylint: disable=wrong-import-position
from tfdist.data import sources  # pylint: disable=wrong-import-position
from tfdist.data import window  # pylint: disable=wrong-import-position


def examples(batches, count: int):
  """The first ``count`` examples of float batches, as (bytes, label)."""
  seen = []
  for inputs, labels in batches:
    pixels = np.round(np.asarray(inputs["images"]) * 255).astype(np.uint8)
    seen.extend((image.tobytes(), int(label))
                for image, label in zip(pixels, np.asarray(labels)))
    if len(seen) >= count:
      return seen[:count]
  return seen


@pytest.fixture(scope="module")
def raw_shards(mnist_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("window") / "raw")
  result = run([sys.executable, "-m", "tfdist.data", "write",
                f"--source={mnist_dir}", f"--out_dir={out}", "--shards=4",
                "--encoding=raw"], timeout=180)
  assert result.returncode == 0, result.stderr
  return out


# Small files are parsed once and kept in memory; a limit of 0 bytes makes
# the same files stream every epoch.
@pytest.mark.slow
@pytest.mark.parametrize("small_bytes", [window.SMALL_BYTES, 0])
def test_each_pipeline_reads_its_files_once_per_epoch_shuffled(
    raw_shards, monkeypatch, small_bytes):
  monkeypatch.setattr(window, "SMALL_BYTES", small_bytes)
  out = raw_shards
  source = sources.open_files(f"{out}/train-*", f"{out}/test-*")
  assert window.small(source.train_files) == bool(small_bytes)
  assert source.spec.features[0].encoding == "raw"
  fn = records.train_dataset_fn(source.train_files, source.spec,
                                global_batch_size=60, seed=1,
                                shuffle_buffer=2000, report=lambda _: None)
  for pipeline in range(2):
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=pipeline,
        num_replicas_in_sync=2)
    files = source.train_files[pipeline::2]
    in_order = examples(records.test_dataset(files, source.spec,
                                             batch_size=1000), 10**6)
    two_epochs = examples(fn(context), 2 * len(in_order))
    first, second = two_epochs[:len(in_order)], two_epochs[len(in_order):]
    # Each epoch is one whole pass over the pipeline's files ...
    assert collections.Counter(first) == collections.Counter(in_order)
    assert collections.Counter(second) == collections.Counter(in_order)
    # ... in a shuffled order that differs between epochs.
    assert first != in_order and first != second
    labels = [label for _, label in first[:60]]
    assert len(set(labels)) >= 8  # a batch mixes the classes
