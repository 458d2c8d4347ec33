"""How fast the file input pipeline alone delivers examples; test images.

Owns: :func:`examples_per_second` (the training pipeline of a FileSource,
without a model, on a bounded number of threads) and
:func:`write_random_jpegs` (photo-like JPEGs in the ``CLASS_NAME/*.jpg``
layout, for benchmarks at ImageNet's sizes). ``python -m tfdist.bench`` and
``python -m tfdist.data.throughput`` call them. Imports tfdist.data.sources;
TensorFlow lazily.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np

from tfdist.data import sources


def examples_per_second(source: sources.FileSource, *, batch_size: int = 128,
                        batches: int = 50, warmup_batches: int = 5,
                        threads: int = 1, augment: bool = False) -> float:
  """Examples/s of ``source``'s training pipeline: read, shuffle, decode,
  crop, batch, scale, on ``threads`` threads (1: one core)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  source = dataclasses.replace(source, augment=augment)
  dataset = source.train_dataset_fn(batch_size, seed=0,
                                    report=lambda _: None)(
                                        tf.distribute.InputContext())
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  iterator = iter(dataset.with_options(options))
  for _ in range(warmup_batches):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def write_random_jpegs(directory: str, *, count: int, size: int = 299,
                       num_classes: int = 10, seed: int = 0) -> None:
  """``count`` JPEGs of ``size`` px in ``directory/classK/N.jpg``.

  Smooth colour fields plus mild noise: they compress and decode like
  photographs, not like white noise (which is several times larger).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for i in range(count):
    label = i % num_classes
    coarse = rng.uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
    image = tf.image.resize(coarse, (size, size), method="bicubic")[0]
    image += rng.normal(0, 8, (size, size, 3))
    folder = os.path.join(directory, f"class{label}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{i:06d}.jpg"), "wb") as f:
      f.write(tf.io.encode_jpeg(tf.cast(tf.clip_by_value(
          tf.round(image), 0, 255), tf.uint8), quality=90).numpy())


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m tfdist.data.throughput",
      description="examples/s of the TFRecord input pipeline alone")
  parser.add_argument("--train_files", required=True)
  parser.add_argument("--test_files", required=True)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--batches", type=int, default=50)
  parser.add_argument("--threads", type=int, default=1)
  parser.add_argument("--augment", action="store_true")
  args = parser.parse_args(argv)
  source = sources.open_files(args.train_files, args.test_files)
  rate = examples_per_second(source, batch_size=args.batch_size,
                             batches=args.batches, threads=args.threads,
                             augment=args.augment)
  print(json.dumps({"image_shape": list(source.image_shape),
                    "encoding": source.spec.encoding,
                    "threads": args.threads,
                    "examples_per_sec": round(rate, 1)}), flush=True)
  return 0


if __name__ == "__main__":
  from tfdist import cli  # pylint: disable=g-import-not-at-top
  raise SystemExit(cli.run(main))
