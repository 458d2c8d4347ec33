r"""Data-at-scale figures: ``python -m tfdist.bench.data_figures``.

    python -m tfdist.bench.data_figures --out_dir=docs/bench/data \
        --work_dir=/tmp/tfdist-data-bench [--parts=decode,streaming,...]

Measures the parts named by --parts (default: all), writing
``results.json`` and, with the memory part, ``memory.png`` in --out_dir
(the generated shards, over 1 GB with the memory part, go to --work_dir,
never into the repository); ``python -m tfdist.bench`` runs it for its data
figures:

* memory: peak RSS of one training task as the training set grows 10x,
  streamed from JPEG shards against held in memory;
* decode: examples/s of the input pipeline alone (one thread) for 28 px PNG
  and 299 px JPEG, against the examples/s a mini-Inception step consumes on
  one core;
* streaming cost: softmax MNIST from TFRecord shards against in memory,
  test accuracy and examples/s under each strategy;
* ps function size: the serialised dataset function a ps worker receives,
  for a dataset 10x larger (--function_size_examples and 10x as many).

Owns these measurements. Imports tfdist (cli, config, data and its
modules, errors, models, train, bench.report and bench.runner); TensorFlow
in the functions that measure in this process.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys

import numpy as np

from tfdist import cli
from tfdist import data as data_lib
from tfdist.bench import report as report_lib
from tfdist.bench import runner
from tfdist.data import features as features_lib
from tfdist.data import manifest as manifest_lib
from tfdist.data import sources
from tfdist.data import throughput
from tfdist.errors import ConfigError

SPECS = os.path.join(runner.REPO, "cluster_specs")
STRATEGY_SPECS = {"mirrored": None, "multiworker": "two_workers.json",
                  "ps": "chief_two_workers_ps.json"}
PARTS = ("memory", "decode", "streaming", "ps_function_size")
WORK_DIR = "/tmp/tfdist-data-bench"
# Distinct images the generated shards cycle through (encoding 600k images
# one by one would dominate the run; reading and decoding is what counts).
_POOL = 512


def _jpeg_pool(size: int, seed: int) -> list:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  pool = []
  for _ in range(_POOL):
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                    ).save(out, format="JPEG", quality=95)
    pool.append(out.getvalue())
  return pool


def write_jpeg_shards(out_dir: str, *, train_examples: int,
                      test_examples: int = 1000, shards: int = 16,
                      size: int = 32, num_classes: int = 10,
                      seed: int = 0) -> str:
  """Noise JPEGs of ``size`` px as TFRecord shards and a manifest."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keys, pool = manifest_lib.FeatureKeys(), _jpeg_pool(size, seed)
  os.makedirs(out_dir, exist_ok=True)
  splits = {}
  for split, count in (("train", train_examples), ("test", test_examples)):
    names = [f"{split}-{i:05d}-of-{shards:05d}.tfrecord"
             for i in range(shards)]
    writers = [tf.io.TFRecordWriter(os.path.join(out_dir, n)) for n in names]
    counts = [0] * shards
    for i in range(count):
      feature = {keys.image: tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[pool[i % _POOL]])),
                 keys.label: tf.train.Feature(
                     int64_list=tf.train.Int64List(value=[i % num_classes]))}
      writers[i % shards].write(tf.train.Example(features=tf.train.Features(
          feature=feature)).SerializeToString())
      counts[i % shards] += 1
    for writer in writers:
      writer.close()
    splits[split] = manifest_lib.SplitFiles(
        files=names, examples=counts,
        sizes=[os.path.getsize(os.path.join(out_dir, n)) for n in names])
  manifest = manifest_lib.Manifest(
      num_classes=num_classes, class_names=[str(i) for i in range(num_classes)],
      features=(features_lib.image_feature((size, size, 3), key=keys.image,
                                           encoding="jpeg"),),
      label_key=keys.label, splits=splits, source="generated")
  with open(manifest_lib.manifest_path(out_dir), "w") as f:
    f.write(manifest.to_json())
  return out_dir


def _bytes(directory: str) -> int:
  return sum(os.path.getsize(os.path.join(directory, n))
             for n in os.listdir(directory))


def _result(command: list, *, timeout: float = 1800, prefix: str = "") -> dict:
  """The last JSON line (of the task ``prefix``) a command prints."""
  env = runner.child_env(os.environ)
  done = subprocess.run(command, capture_output=True, text=True, env=env,
                        timeout=timeout, check=False, cwd=runner.REPO)
  lines = [l[len(prefix):] for l in done.stdout.splitlines()
           if l.startswith(prefix + "{")]
  if done.returncode or not lines:
    raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): "
                       f"{(done.stderr or done.stdout)[-1500:]}")
  return json.loads(lines[-1])


def _trainer(*flags) -> list:
  return [sys.executable, "-m", "trainers.mnist", *flags]


def _files(directory: str) -> tuple:
  return ("--data=tfrecord", f"--train_files={directory}/train-*",
          f"--test_files={directory}/test-*")


_MEMORY_FLAGS = ("--strategy=mirrored", "--num_cpu_devices=1", "--epochs=1",
                 "--steps_per_epoch=300", "--batch_size=100")


def in_memory_task(examples: int, *, size: int = 32) -> dict:
  """Trains softmax on ``examples`` random images held in memory, as the
  trainer's in-memory path does; returns the trainer's result."""
  from tfdist.model import contract  # pylint: disable=g-import-not-at-top
  from tfdist.model import models  # pylint: disable=g-import-not-at-top
  from tfdist.training import config as config_lib  # pylint: disable=g-import-not-at-top
  from tfdist.training import loop  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)

  def split(n):
    return data_lib.Split(
        rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        (np.arange(n) % 10).astype(np.int64))

  dataset = data_lib.Dataset(split(examples), split(1000), num_classes=10,
                             name="random")
  config = config_lib.TrainConfig(strategy="mirrored", num_cpu_devices=1,
                                  epochs=1, steps_per_epoch=300, verbose=0)
  return loop.run(config,
                  user=contract.UserModel(models.softmax_regression),
                  dataset=sources.InMemorySource(dataset), task=None)


def jpeg_dir(work_dir: str, examples: int) -> str:
  """Generated 32 px JPEG shards of ``examples`` training examples in
  ``work_dir`` (written once, then reused)."""
  directory = os.path.join(work_dir, f"jpeg-{examples}")
  if not os.path.exists(manifest_lib.manifest_path(directory)):
    write_jpeg_shards(directory, train_examples=examples)
  return directory


def memory(work_dir: str, *, small: int = 60_000, factor: int = 10) -> dict:
  """Peak RSS of one training task, streamed and in memory, as the
  training set grows ``factor`` times."""
  points = []
  for examples in (small, small * factor):
    directory = jpeg_dir(work_dir, examples)
    streamed = _result(_trainer(*_MEMORY_FLAGS, *_files(directory)))
    held = _result([sys.executable, "-m", "tfdist.bench.data_figures",
                    f"--in_memory_task={examples}"])
    points.append({"train_examples": examples,
                   "disk_mb": round(_bytes(directory) / 2**20, 1),
                   "streamed_peak_rss_mb": streamed["peak_rss_mb"],
                   "in_memory_peak_rss_mb": held["peak_rss_mb"]})
  growth = points[1]["streamed_peak_rss_mb"] / points[0]["streamed_peak_rss_mb"]
  return {"points": points, "streamed_growth": round(growth, 3),
          "in_memory_growth": round(points[1]["in_memory_peak_rss_mb"]
                                    / points[0]["in_memory_peak_rss_mb"], 3)}


def decode(mnist_png_dir: str, work_dir: str) -> dict:
  """Pipeline examples/s on one thread against the mini-Inception step."""
  jpeg_dir = os.path.join(work_dir, "jpeg-299")
  if not os.path.exists(manifest_lib.manifest_path(jpeg_dir)):
    write_jpeg_shards(jpeg_dir, train_examples=2000, test_examples=100,
                      shards=4, size=299)
  rates = {}
  for name, directory, batches in (("png_28px", mnist_png_dir, 200),
                                   ("jpeg_299px", jpeg_dir, 30)):
    source = sources.open_files(f"{directory}/train-*",
                                f"{directory}/test-*", report=lambda _: None)
    rates[name] = round(throughput.examples_per_second(
        source, batches=batches, threads=1), 1)
  step = _result([sys.executable, "-m", "trainers.inception",
                  "--data=synthetic", "--image_shape=28,28,1",
                  "--strategy=mirrored", "--num_cpu_devices=1",
                  "--epochs=3", "--steps_per_epoch=20"])
  rates["mini_inception_step"] = step["steady_examples_per_sec"]
  rates["png_28px_over_step"] = round(
      rates["png_28px"] / rates["mini_inception_step"], 2)
  return rates


def streaming_cost(raw_dir: str, mnist_dir: str) -> dict:
  """Softmax MNIST from raw-pixel shards against in memory, per strategy."""
  rows = {}
  for strategy, spec in STRATEGY_SPECS.items():
    row = {}
    for name, flags in (("files", _files(raw_dir)),
                        ("in_memory", (f"--mnist_dir={mnist_dir}",))):
      command = _trainer(f"--strategy={strategy}", "--epochs=10", *flags)
      prefix = ""
      if spec:
        command = [sys.executable, "-m", "tfdist.launch",
                   f"--cluster_spec={os.path.join(SPECS, spec)}",
                   "--free_ports", "--", *command]
        prefix = "[chief-0] " if strategy == "ps" else "[worker-0] "
      result = _result(command, prefix=prefix)
      row[name] = {"test_accuracy": result["test_accuracy"],
                   "examples_per_sec": result["steady_examples_per_sec"]}
    row["accuracy_points"] = round(100 * (row["files"]["test_accuracy"] -
                                          row["in_memory"]["test_accuracy"]), 2)
    row["speed_ratio"] = round(row["files"]["examples_per_sec"] /
                               row["in_memory"]["examples_per_sec"], 3)
    rows[strategy] = row
  return rows


def dataset_function_bytes(source) -> int:
  """Bytes of the graph the ps coordinator traces from ``source``'s
  dataset_fn and ships to every worker (ClusterCoordinator wraps the
  function in tf.function, as here)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dataset_fn = source.train_dataset_fn(100, seed=None)
  traced = tf.function(lambda: dataset_fn(tf.distribute.InputContext()))
  return len(traced.get_concrete_function().graph.as_graph_def()
             .SerializeToString())


def ps_function_size(work_dir: str, mnist_dir: str, *,
                     small: int = 60_000) -> dict:
  """The dataset function's size for files of ``small`` examples and 10x
  as many, and for the in-memory path (a tenth of MNIST against all of
  it)."""
  quiet = {"report": lambda _: None}
  dirs = [jpeg_dir(work_dir, n) for n in (small, 10 * small)]
  files = [dataset_function_bytes(sources.open_files(
      f"{d}/train-*", f"{d}/test-*", **quiet)) for d in dirs]
  mnist = data_lib.load_mnist_idx(mnist_dir)
  tenth = data_lib.Dataset(
      data_lib.Split(mnist.train.images[::10], mnist.train.labels[::10]),
      mnist.test, num_classes=10, name="mnist")
  memory_bytes = [dataset_function_bytes(sources.InMemorySource(d))
                  for d in (tenth, mnist)]
  return {"train_examples": [small, 10 * small], "files_bytes": files,
          "files_difference": files[1] - files[0],
          "in_memory_bytes": memory_bytes}


def plot_memory(points: list, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(figsize=(6, 4))
  examples = [p["train_examples"] for p in points]
  for key, label in (("streamed_peak_rss_mb", "streamed from JPEG shards"),
                     ("in_memory_peak_rss_mb", "held in memory")):
    axes.plot(examples, [p[key] for p in points], marker="o", label=label)
  axes.set_xscale("log")
  axes.set_xlabel("training examples (32x32x3)")
  axes.set_ylabel("peak RSS of the training task (MiB)")
  axes.set_ylim(bottom=0)
  axes.legend()
  axes.set_title("Memory as the training set grows 10x")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def _parse(argv):
  parser = cli.OneLineParser(prog="python -m tfdist.bench.data_figures",
                             description=__doc__.split("\n")[0])
  parser.add_argument("--out_dir", default=None)
  parser.add_argument("--work_dir", default=WORK_DIR,
                      help="where the generated shards go (over 1 GB with "
                           "the memory part)")
  parser.add_argument("--parts", default=",".join(PARTS),
                      help=f"comma-separated, of {', '.join(PARTS)}")
  parser.add_argument("--function_size_examples", type=int, default=60_000,
                      help="ps function size: training examples of the "
                           "smaller generated dataset (the larger has 10x)")
  parser.add_argument("--mnist_dir", default=data_lib.BUNDLED_MNIST_DIR)
  parser.add_argument("--in_memory_task", type=int, default=None,
                      help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def _convert(mnist_dir: str, out_dir: str, encoding: str) -> str:
  if not os.path.exists(manifest_lib.manifest_path(out_dir)):
    _result([sys.executable, "-m", "tfdist.data", "write",
             f"--source={mnist_dir}", f"--out_dir={out_dir}", "--shards=4",
             f"--encoding={encoding}"])
  return out_dir


def _measure(parts: list, args) -> dict:
  """The figures of ``parts``, in PARTS' order."""
  work, figures = args.work_dir, {}
  if "memory" in parts:
    figures["memory"] = memory(work)
  if "decode" in parts:
    png = _convert(args.mnist_dir, os.path.join(work, "mnist-png"), "png")
    figures["decode"] = decode(png, work)
  if "streaming" in parts:
    raw = _convert(args.mnist_dir, os.path.join(work, "mnist-raw"), "raw")
    figures["streaming_cost"] = streaming_cost(raw, args.mnist_dir)
  if "ps_function_size" in parts:
    figures["ps_function_size"] = ps_function_size(
        work, args.mnist_dir, small=args.function_size_examples)
  return figures


def main(argv=None) -> int:
  args = _parse(argv)
  if args.in_memory_task:
    print(json.dumps(in_memory_task(args.in_memory_task)), flush=True)
    return 0
  if not args.out_dir:
    raise ConfigError("--out_dir=DIR is required (where results.json goes)")
  parts = [p for p in args.parts.split(",") if p]
  unknown = sorted(set(parts) - set(PARTS))
  if unknown or not parts:
    raise ConfigError(f"--parts={args.parts}: use one or more of "
                      f"{', '.join(PARTS)}, comma-separated")
  if args.function_size_examples < 1:
    raise ConfigError(f"--function_size_examples="
                      f"{args.function_size_examples}: must be at least 1")
  os.makedirs(args.out_dir, exist_ok=True)
  figures = {"machine": report_lib.machine(), **_measure(parts, args)}
  if "memory" in figures:
    plot_memory(figures["memory"]["points"],
                os.path.join(args.out_dir, "memory.png"))
  report_lib.write_atomically(os.path.join(args.out_dir, "results.json"),
                              json.dumps(figures, indent=1))
  print(json.dumps(figures), flush=True)
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
  sys.exit(cli.run(main))
