r"""Inception-style image classifiers, under any strategy.

    python -m trainers.inception --strategy=mirrored          # bundled MNIST
    python -m trainers.inception --dataset=cifar10          # TFDS, network once
    python -m trainers.inception --model=v3 --dataset=imagenette
    python -m trainers.inception --model=v3 --data=synthetic --image_shape=299,299,3
    python -m trainers.inception --model=v3 --data=tfrecord --augment \
        --train_files='gs://BUCKET/imagenet/train-*' \
        --test_files='gs://BUCKET/imagenet/validation-*' --image_shape=299,299,3
    python -m tfdist.launch --cluster_spec=cluster_specs/two_workers.json -- \
        python -m trainers.inception --strategy=multiworker --sync_batch_norm ...

The flags of trainers.mnist, plus the model and the data's shape below.
"""

from absl import flags

import tfdist
from tfdist import app as tfdist_app
from tfdist import data
from tfdist import models
from tfdist.errors import ConfigError

MODELS = {"mini": "mini_inception", "v3": "inception_v3"}
# Defaults for a batch-normalised convolutional network (the softmax
# trainer's 0.5 plain SGD would diverge): momentum SGD, smaller steps.
DEFAULTS = {"optimizer": "momentum", "learning_rate": 0.05, "batch_size": 64,
            "epochs": 3}

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """This trainer's own flags, beside tfdist's (defined when it runs, so
  that importing the module for its model functions defines none)."""
  flags.DEFINE_string("model", "mini",
                      "mini: mini-Inception for 28-32 px images; v3: "
                      "InceptionV3 (Keras Applications, from scratch), "
                      ">= 75 px.")
  flags.DEFINE_float("width", 1.0,
                     "--model=mini: multiplies every layer's filter count "
                     "(0.125 makes a test-sized model).")
  flags.DEFINE_string("dataset", "mnist",
                      f"{', '.join(data.TFDS_DATASETS)}: through TFDS, or "
                      "mnist from --mnist_dir.")
  flags.DEFINE_string("image_shape", "28,28,1",
                      "height,width,channels of the model's input: of the "
                      "images for --data=synthetic; for --data=tfrecord and "
                      "tfds the stored images are cropped (or upscaled) to "
                      "it (default: their own shape, from the manifest).")


def _parse_shape(text: str) -> tuple:
  try:
    shape = tuple(int(part) for part in text.split(","))
  except ValueError:
    shape = ()
  if len(shape) != 3 or min(shape) < 1:
    raise ConfigError(f"--image_shape={text!r}: give height,width,channels "
                      "as three positive integers, e.g. 32,32,3")
  return shape


def _data_options() -> dict:
  """Checks this trainer's flags, without TensorFlow; returns
  sources.open_source's extra arguments."""
  if FLAGS.model not in MODELS:
    raise ConfigError(f"--model={FLAGS.model!r}: use one of "
                      f"{', '.join(MODELS)}")
  if FLAGS.model != "mini" and FLAGS["width"].present:
    raise ConfigError(f"--width applies to --model=mini only; drop it for "
                      f"--model={FLAGS.model}")
  if not FLAGS.width > 0:
    raise ConfigError(f"--width={FLAGS.width}: must be > 0")
  config = tfdist_app.data_config()
  source = data.resolve_source(config.kind, mnist_dir=config.mnist_dir,
                               tfds_name=FLAGS.dataset,
                               tfds_data_dir=config.tfds_data_dir).kind
  shape = (_parse_shape(FLAGS.image_shape) if FLAGS["image_shape"].present
           else None)
  if source == "synthetic":
    if FLAGS["dataset"].present:
      raise ConfigError("--dataset names real data; --data=synthetic makes "
                        "random images of --image_shape: drop one of them")
    shape = _parse_shape(FLAGS.image_shape)
  elif source == "tfrecord":
    if FLAGS["dataset"].present:
      raise ConfigError("--dataset names a TFDS dataset; --data=tfrecord "
                        "reads --train_files: drop one of them")
  elif source == "idx" and FLAGS["image_shape"].present:
    raise ConfigError("--image_shape: MNIST from --mnist_dir is held in "
                      "memory at 28x28x1; convert it (python -m tfdist.data "
                      "write) and add --data=tfrecord, or drop the flag")
  elif source in ("idx", "tfds"):
    known_shape = data.tfds_dataset(FLAGS.dataset).image_shape  # a known name
    if source == "idx" and FLAGS.dataset != "mnist":
      raise ConfigError(f"--mnist_dir holds MNIST, not {FLAGS.dataset}; drop "
                        f"--mnist_dir to load {FLAGS.dataset} through TFDS")
    shape = shape or known_shape
  # The shape of files is known once they are opened: the model checks it.
  if shape is not None:
    models.check_image_shape(MODELS[FLAGS.model], shape)
  return {"tfds_name": FLAGS.dataset, "image_shape": shape}


def model(input_shape, num_classes: int):
  """The model --model and --width name."""
  if FLAGS.model == "mini":
    return models.mini_inception(input_shape, num_classes, width=FLAGS.width)
  return models.inception_v3(input_shape, num_classes)


def model_name() -> str:
  if FLAGS.model == "mini":
    return f"mini_inception_w{FLAGS.width:g}"
  return MODELS.get(FLAGS.model, "")


if __name__ == "__main__":
  _define_flags()
  tfdist.main(model, name=model_name, defaults=DEFAULTS,
              data_options=_data_options)
