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

The flags of trainers.mnist, plus --model and --width (below).
"""

from absl import flags

from tfdist import app as tfdist_app
from tfdist.errors import ConfigError
from tfdist.model import models
import tfdist

MODELS = {"mini": "mini_inception", "v3": "inception_v3"}
# Defaults for a batch-normalised convolutional network (the softmax
# trainer's 0.5 plain SGD would diverge): momentum SGD, smaller steps.
DEFAULTS = {"optimizer": "momentum", "learning_rate": 0.05, "batch_size": 64,
            "epochs": 3}

FLAGS = flags.FLAGS


def define_flags() -> None:
  """This trainer's own flags, beside tfdist's (defined when it runs, so
  that importing the module for its model function defines none)."""
  flags.DEFINE_string("model", "mini",
                      "mini: mini-Inception for 28-32 px images; v3: "
                      "InceptionV3 (Keras Applications, from scratch), "
                      ">= 75 px.")
  flags.DEFINE_float("width", 1.0,
                     "--model=mini: multiplies every layer's filter count "
                     "(0.125 makes a test-sized model).")


def check_flags() -> None:
  """This trainer's flags, and the image shape its model needs where the
  data flags tell it, checked before TensorFlow starts."""
  if FLAGS.model not in MODELS:
    raise ConfigError(f"--model={FLAGS.model!r}: use one of "
                      f"{', '.join(MODELS)}")
  if FLAGS.model != "mini" and FLAGS["width"].present:
    raise ConfigError(f"--width applies to --model=mini only; drop it for "
                      f"--model={FLAGS.model}")
  if not FLAGS.width > 0:
    raise ConfigError(f"--width={FLAGS.width}: must be > 0")
  # The shape of files is known once they are opened: the model checks it.
  shape = tfdist_app.data_config().known_image_shape()
  if shape is not None:
    models.check_image_shape(MODELS[FLAGS.model], shape)


def model(features, num_outputs: int):
  """The model --model and --width name."""
  if FLAGS.model == "mini":
    return models.mini_inception(features, num_outputs, width=FLAGS.width)
  return models.inception_v3(features, num_outputs)


def model_name() -> str:
  if FLAGS.model == "mini":
    return f"mini_inception_w{FLAGS.width:g}"
  return MODELS[FLAGS.model]


if __name__ == "__main__":
  define_flags()
  tfdist.main(model, name=model_name, defaults=DEFAULTS,
              check_flags=check_flags)
