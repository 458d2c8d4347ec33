r"""A sparse model: an embedding-bag classifier of id lists, under any strategy.

    python -m trainers.sparse                        # generated data
    python -m tfdist.launch \
        --cluster_spec=cluster_specs/chief_two_workers_two_ps.json -- \
        python -m trainers.sparse --strategy=ps      # the table in 2 shards
    python -m trainers.sparse --strategy=ps --vocab_size=4000000 \
        --embedding_dim=64 ...
    python -m trainers.sparse --train_files='DIR/train-*' \
        --test_files='DIR/test-*'                    # your id-list records

The model of the talk's sparse case (language or click models with huge
embedding tables): each id list (a bag of hashed tokens or categorical values)
is looked up in an embedding table of ``num_ids`` rows of ``--embedding_dim``
floats, the rows are summed, and a dense layer gives one score per class. Under
``--strategy=ps`` the table is split over the ps tasks
(``--variable_partitioner``, tfdist.training.sharding) and a lookup reads only
the rows of the batch's ids; under mirrored and multiworker it is mirrored whole
on every replica.

Without --train_files the data is generated (tfdist.data.planted): id lists
from a vocabulary of ``--vocab_size`` ids with a planted class structure,
whose best possible accuracy (the Bayes rule's) is known and printed. It
is written once under --generated_dir, the same bytes on every task (a
seeded generator), and found there afterwards. Any records whose manifest
lists id-list or id features train too: a table per feature, as
``python -m tfdist.train --model=trainers.sparse:embedding_bag`` (at the
default --embedding_dim).

The flags of trainers.mnist, plus --vocab_size, --embedding_dim and
--generated_dir (below).
"""

import os
import tempfile

from absl import flags

from tfdist import console
from tfdist.cluster import specs as cluster_lib
from tfdist.data import planted as planted_lib
from tfdist.errors import ConfigError
import tfdist

DEFAULT_EMBEDDING_DIM = 32
# A sparse model's usual optimizer: Adagrad, whose per-coordinate steps suit
# rarely seen ids and which updates only the rows a batch looked up (Adam
# would rewrite every row of the table each step).
DEFAULTS = {"optimizer": "adagrad", "learning_rate": 0.1, "epochs": 3}

FLAGS = flags.FLAGS


def define_flags() -> None:
  """This trainer's own flags, beside tfdist's (defined when it runs, so
  that importing the module for its model function defines none)."""
  flags.DEFINE_integer("vocab_size", 100_000,
                       "Generated data: ids in [0, vocab_size), the "
                       "embedding table's rows.")
  flags.DEFINE_integer("embedding_dim", DEFAULT_EMBEDDING_DIM,
                       "Floats per row of the embedding table.")
  flags.DEFINE_string("generated_dir", "",
                      "Where the generated data is written once and found "
                      "afterwards; default: TMPDIR/tfdist-planted.")


def embedding_bag(features, num_outputs: int):
  """The model function: an embedding table per id or id-list feature,
  the rows of a list summed (a bag of ids), a dense layer to the classes'
  scores."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras = tf.keras
  dim = (FLAGS.embedding_dim if "embedding_dim" in FLAGS
         else DEFAULT_EMBEDDING_DIM)
  ids = {name: f for name, f in features.items()
         if f.kind in ("id", "id_list")}
  if not ids:
    raise ConfigError("embedding_bag looks ids up in a table: the records "
                      "have no id or id_list feature (they have "
                      f"{', '.join(f.describe() for f in features.values())})")
  inputs = {name: f.keras_input() for name, f in ids.items()}
  bags = []
  for name, feature in ids.items():
    rows = keras.layers.Embedding(feature.num_ids, dim,
                                  name=f"{name}_embedding")(inputs[name])
    # Summed: each id adds its evidence, as the generated data's best rule
    # does (an empty list is a row of zeros).
    bags.append(rows if feature.kind == "id" else keras.layers.Lambda(
        lambda ragged: tf.reduce_sum(ragged, axis=1),
        name=f"{name}_bag")(rows))
  bag = bags[0] if len(bags) == 1 else keras.layers.Concatenate()(bags)
  logits = keras.layers.Dense(num_outputs, name="logits")(bag)
  single = next(iter(inputs.values())) if len(inputs) == 1 else inputs
  return keras.Model(single, logits, name="embedding_bag")


def _generated_dir() -> str:
  return FLAGS.generated_dir or os.path.join(tempfile.gettempdir(),
                                             "tfdist-planted")


def check_flags() -> None:
  """This trainer's flags; without --train_files, the generated data
  (written first if missing, except on a ps task, which reads no data)
  becomes the data flags."""
  if FLAGS.embedding_dim < 1:
    raise ConfigError(f"--embedding_dim={FLAGS.embedding_dim}: must be at "
                      "least 1")
  if FLAGS["train_files"].present or FLAGS.data not in ("auto", "tfrecord"):
    for name in ("vocab_size", "generated_dir"):
      if FLAGS[name].present:
        raise ConfigError(f"--{name} is for the generated data; your data's "
                          "manifest sizes the table (num_ids): drop "
                          f"--{name}")
    return
  planted = planted_lib.Planted(vocab_size=FLAGS.vocab_size)
  base = _generated_dir()
  task = cluster_lib.task_from_environ(os.environ)
  if task is not None and task.type == "ps":
    directory = os.path.join(base, planted.name)
  else:
    directory, info = planted_lib.ensure(planted, base)
    console.info(f"data: generated id lists ({FLAGS.vocab_size:,} ids, "
                 f"{planted.num_classes} classes, a planted topic each); "
                 "best possible accuracy "
                 f"{info['best_accuracy']:.4f} (the Bayes rule's)")
  FLAGS.data = "tfrecord"
  FLAGS.train_files = os.path.join(directory, "train-*")
  FLAGS.test_files = os.path.join(directory, "test-*")


if __name__ == "__main__":
  define_flags()
  tfdist.main(embedding_bag, defaults=DEFAULTS, check_flags=check_flags)
