"""``python -m tfdist.data write|verify``: convert datasets to TFRecords.

``write --source=SOURCE --out_dir=DIR --shards=N`` writes sharded TFRecords
and a manifest.json from SOURCE, one of:

  * a directory with the four MNIST IDX files (e.g. tfdist/datasets/mnist,
    the sample bundled with tfdist);
  * a folder of images, ``CLASS_NAME/*.png|jpg`` (or ``train/`` and
    ``test/`` folders in that layout);
  * ``tfds:NAME`` for a TFDS dataset prepared in --tfds_data_dir;
  * a table, CSV with a header row, ``--label=COLUMN`` naming what to
    predict: a directory with ``train.csv`` and ``test.csv``, or one CSV
    file split by ``--test_fraction`` (tfdist.data.tables; what each column
    becomes: tfdist.data.columns and targets).

``verify --train_files=PATTERN --test_files=PATTERN`` reads every record
through and prints the counts as one JSON line. Bad input is one ``error:``
line and exit status 2; nothing is written.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# pylint: disable=wrong-import-position
from tfdist import cli
from tfdist import console
from tfdist import tf_startup
from tfdist import data as data_lib
from tfdist.data import convert
from tfdist.data import csv_files
from tfdist.data import manifest as manifest_lib
from tfdist.data import shards
from tfdist.data import sources
from tfdist.data import tables
from tfdist.data import targets
from tfdist.errors import ConfigError


def _parser() -> cli.OneLineParser:
  parser = cli.OneLineParser(prog="python -m tfdist.data",
                             description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True,
                                   parser_class=cli.OneLineParser)
  write = commands.add_parser("write", help="write TFRecord shards")
  write.add_argument("--source", required=True,
                     help="a CSV file or a directory of train.csv and "
                     "test.csv; an MNIST IDX directory, an image folder or "
                     "tfds:NAME")
  write.add_argument("--out_dir", required=True)
  write.add_argument("--shards", type=int, default=4,
                     help="files per split")
  write.add_argument("--tfds_data_dir", default=None)
  write.add_argument("--image_size", type=int, default=None,
                     help="resize and centre-crop every image to S x S")
  write.add_argument("--encoding", default="png",
                     help="png, jpeg or raw, for MNIST's pixel arrays")
  write.add_argument("--test_every", type=int, default=10,
                     help="a folder without train/test folders: every n-th "
                     "image of each class is a test example")
  write.add_argument("--label", default=None,
                     help="CSV: the column(s) to predict, comma-separated")
  write.add_argument("--task", default="",
                     help="CSV: classification, regression or multilabel "
                     "(default: from the labels' values, said in one line)")
  write.add_argument("--columns", default="",
                     help="CSV: NAME:KIND,... with KIND number, category, "
                     "text or drop, instead of what the values suggest")
  write.add_argument("--drop", default="",
                     help="CSV: columns that are no feature, comma-separated")
  write.add_argument("--weight", default="",
                     help="CSV: a column of each example's weight (>= 0)")
  write.add_argument("--missing", default=None,
                     help="CSV: error (a missing value is an error line) or "
                     "fill (numbers: the training mean; strings: unknown)")
  write.add_argument("--max_tokens", type=int, default=None,
                     help="CSV: a text column's vocabulary, its most "
                     f"frequent tokens (default {tables.MAX_TOKENS:,})")
  write.add_argument("--test_fraction", type=float, default=0.0,
                     help="one CSV file: the share of rows that become the "
                     "test split (a seeded random pick)")
  write.add_argument("--seed", type=int, default=0,
                     help="of --test_fraction's pick")
  write.add_argument("--progress_every", type=int,
                     default=shards.PROGRESS_EVERY)
  verify = commands.add_parser("verify", help="read shards through")
  verify.add_argument("--train_files", required=True)
  verify.add_argument("--test_files", required=True)
  verify.add_argument("--num_classes", type=int, default=None)
  for p in (write, verify):
    p.add_argument("--image_key", default=manifest_lib.FeatureKeys.image)
    p.add_argument("--label_key", default=manifest_lib.FeatureKeys.label)
  return parser


# The write flags that only a table takes.
TABLE_FLAGS = ("label", "test_fraction", "task", "columns", "drop", "weight",
               "missing", "max_tokens")


def _is_table(source: str) -> bool:
  return source.lower().endswith(".csv") or os.path.isfile(
      os.path.join(source, csv_files.SPLIT_FILES["train"]))


def _write(args, keys) -> manifest_lib.Manifest:
  if _is_table(args.source):
    choices = targets.Choices.from_flags(
        label=args.label, task=args.task, columns=args.columns,
        drop=args.drop, weight=args.weight,
        missing=args.missing or "error")
    table = csv_files.open_table(args.source,
                                 test_fraction=args.test_fraction,
                                 seed=args.seed, check=choices.check)
    return tables.write(table, choices, out_dir=args.out_dir,
                        num_shards=args.shards,
                        max_tokens=(tables.MAX_TOKENS if args.max_tokens is None
                                    else args.max_tokens),
                        progress_every=args.progress_every)
  for flag in TABLE_FLAGS:
    if getattr(args, flag) not in (None, "", 0.0):
      raise ConfigError(f"--{flag} is for a table (a CSV file, or a directory "
                        f"with train.csv); {args.source} is not one")
  return convert.write(
      _source(args), out_dir=args.out_dir, num_shards=args.shards,
      keys=keys, encoding=args.encoding, image_size=args.image_size,
      progress_every=args.progress_every)


def _source(args) -> convert.Source:
  if args.source.startswith("tfds:"):
    return convert.tfds_source(args.source[len("tfds:"):],
                               data_dir=args.tfds_data_dir)
  images = data_lib.IDX_FILES[("train", "images")]
  if any(os.path.exists(os.path.join(args.source, images + ext))
         for ext in ("", ".gz")):
    return convert.mnist_source(args.source)
  return convert.folder_source(args.source, test_every=args.test_every)


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  # A text column's vocabulary starts TensorFlow's runtime: no cuInit error
  # line on a machine without a GPU.
  tf_startup.prepare(os.environ, has_gpu=tf_startup.has_gpu_device())
  keys = manifest_lib.FeatureKeys(image=args.image_key, label=args.label_key)
  if args.command == "write":
    manifest = _write(args, keys)
    console.result({"out_dir": args.out_dir,
                    "counts": {s: f.total for s, f in manifest.splits.items()},
                    "features": [f.describe() for f in manifest.features],
                    "task": manifest.task,
                    "num_classes": manifest.num_classes})
  else:
    console.result(sources.verify(args.train_files, args.test_files,
                                  num_classes=args.num_classes, keys=keys))
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
