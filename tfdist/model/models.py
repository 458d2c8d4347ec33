"""The shipped models: model functions, the same under every strategy.

Each is a model function of the contract (tfdist.model.contract):
``model_fn(features, num_outputs)`` returns an uncompiled Keras model that
outputs logits (a regression's values). The training loop calls it inside
``strategy.scope()``, so the strategy decides where the variables live:
mirrored on each replica, or on the ps tasks. Imports tfdist.errors,
data.features and model.preprocessing; TensorFlow lazily.
"""

from __future__ import annotations

import numpy as np

from tfdist.data import features as features_lib
from tfdist.errors import ConfigError
from tfdist.model import preprocessing


def softmax_regression(features, num_outputs: int):
  """A linear model over any features: softmax regression.

  On MNIST (one 28x28x1 image) it is the 784 -> 10 model of the
  Distributed TF talk. Every feature adds its linear term to the
  ``num_outputs`` outputs: images, numbers, categories and texts through a
  dense layer over their encoding (tfdist.model.preprocessing: numbers
  standardised with the training split's statistics, categories one-hot,
  texts multi-hot), an id through an embedding row of ``num_outputs``
  weights (a one-hot input's weights), an id list through the sum of its
  ids' rows (a bag of ids). Zero initial weights, as the talk's model.
  Returns logits (the loss applies the softmax, or the sigmoid of a
  multi-label table); for a regression, the values: a linear regression.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras = tf.keras
  image = features_lib.single_image(features)
  if image is not None:
    return keras.Sequential([
        keras.layers.InputLayer(input_shape=tuple(image.shape),
                                name=image.name),
        keras.layers.Flatten(),
        keras.layers.Dense(num_outputs, kernel_initializer="zeros",
                           name="logits"),
    ], name="softmax_regression")
  inputs = {name: feature.keras_input() for name, feature in features.items()}
  terms = [_linear_term(tf, feature, inputs[name], num_outputs)
           for name, feature in features.items()]
  logits = terms[0] if len(terms) == 1 else keras.layers.Add(
      name="logits")(terms)
  return keras.Model(inputs, logits, name="softmax_regression")


def _linear_term(tf, feature, tensor, num_outputs: int):
  """One feature's contribution to a linear model's outputs."""
  keras = tf.keras
  name = f"{feature.name}_weights"
  if feature.kind in ("image", "numeric", "category", "text"):
    flat = preprocessing.preprocessing_layer(feature)(tensor)
    return keras.layers.Dense(num_outputs, kernel_initializer="zeros",
                              name=name)(flat)
  rows = keras.layers.Embedding(feature.num_ids, num_outputs,
                                embeddings_initializer="zeros", name=name)
  if feature.kind == "id":
    return rows(tensor)
  # The rows of a ragged list of ids, summed: a bag of ids.
  return keras.layers.Lambda(lambda ragged: tf.reduce_sum(ragged, axis=1),
                             name=f"{feature.name}_bag")(rows(tensor))


def image_input_shape(features, model_name: str) -> tuple:
  """The shape of the one image an image model takes; ConfigError when
  the data is not one image."""
  image = features_lib.single_image(features)
  if image is None:
    raise ConfigError(
        f"{model_name} classifies images, but the data has "
        f"{', '.join(f.describe() for f in features.values())}; use "
        "softmax_regression or your own model function")
  return tuple(image.shape)


# The smallest image side each model takes, checked without TensorFlow so a
# shape that cannot work is reported before the slow import. InceptionV3:
# Keras Applications' own limit (five stride-2 stages). mini_inception: it
# halves the grid twice; below 16 px its last modules would run 3x3 kernels
# over 1-3 px maps made mostly of padding.
MIN_IMAGE_SIDE = {"mini_inception": 16, "inception_v3": 75}


def check_image_shape(model_name: str, image_shape) -> None:
  """Raises ConfigError unless ``model_name``'s model can take the shape.

  Args:
    model_name: a key of MIN_IMAGE_SIDE.
    image_shape: (height, width, channels) of one example.
  """
  if model_name not in MIN_IMAGE_SIDE:
    raise ConfigError(f"model {model_name!r}: use one of "
                      f"{', '.join(MIN_IMAGE_SIDE)}")
  shape = tuple(image_shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ConfigError(f"{model_name} takes images of shape height,width,"
                      f"channels; got {','.join(map(str, shape))}")
  side = MIN_IMAGE_SIDE[model_name]
  if min(shape[:2]) < side:
    raise ConfigError(
        f"{model_name} needs images of at least {side}x{side} pixels, these "
        f"are {shape[0]}x{shape[1]}; use larger images (e.g. --data=synthetic "
        f"--image_shape={max(side, shape[0])},{max(side, shape[1])},"
        f"{shape[2]}) or a model that takes them")


def _conv_bn(keras, x, filters: int, kernel: int, *, name: str, strides=1):
  """Convolution, batch norm, ReLU: the unit every Inception branch is made of.

  No bias: the batch norm's offset right after does its job. No scale
  either, as in InceptionV3: the ReLU that follows is scale-invariant.
  Moving-statistics momentum 0.9, not Keras' 0.99: the test-time statistics
  then follow the weights within a few dozen steps, which short CPU runs
  need (at 0.99 they lag for hundreds, and 37 stacked layers compound it).
  """
  x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same",
                          use_bias=False, name=f"{name}_conv")(x)
  x = keras.layers.BatchNormalization(momentum=0.9, scale=False,
                                      name=f"{name}_bn")(x)
  return keras.layers.Activation("relu", name=name)(x)


def _inception_module(keras, x, *, b1: int, b3: tuple, b5: tuple, pool: int,
                      name: str):
  """Parallel 1x1, 3x3, factorised 5x5 and pooling branches, concatenated.

  ``b3`` and ``b5`` are (1x1 reduction, output) filters: the 1x1 reduction
  first makes the wide kernels cheap. The 5x5 branch is two 3x3s, the same
  receptive field for 18 instead of 25 weights per channel pair (Szegedy et
  al. 2016, "Rethinking the Inception Architecture", section 3.1).
  """
  branch1 = _conv_bn(keras, x, b1, 1, name=f"{name}_1x1")
  branch3 = _conv_bn(keras, x, b3[0], 1, name=f"{name}_3x3_reduce")
  branch3 = _conv_bn(keras, branch3, b3[1], 3, name=f"{name}_3x3")
  branch5 = _conv_bn(keras, x, b5[0], 1, name=f"{name}_5x5_reduce")
  branch5 = _conv_bn(keras, branch5, b5[1], 3, name=f"{name}_5x5a")
  branch5 = _conv_bn(keras, branch5, b5[1], 3, name=f"{name}_5x5b")
  branch_pool = keras.layers.AveragePooling2D(
      3, strides=1, padding="same", name=f"{name}_pool")(x)
  branch_pool = _conv_bn(keras, branch_pool, pool, 1, name=f"{name}_pool_1x1")
  return keras.layers.Concatenate(name=name)(
      [branch1, branch3, branch5, branch_pool])


def _downsample_module(keras, x, *, b3: int, b5: tuple, name: str):
  """Halves the grid: stride-2 3x3 and 5x5 branches beside a stride-2 max pool.

  Convolution and pooling side by side, concatenated, so the channels grow
  while the grid shrinks without a representational bottleneck (Szegedy et
  al. 2016, section 5; InceptionV3's "reduction" modules).
  """
  branch3 = _conv_bn(keras, x, b3, 3, strides=2, name=f"{name}_3x3")
  branch5 = _conv_bn(keras, x, b5[0], 1, name=f"{name}_5x5_reduce")
  branch5 = _conv_bn(keras, branch5, b5[1], 3, name=f"{name}_5x5a")
  branch5 = _conv_bn(keras, branch5, b5[1], 3, strides=2,
                     name=f"{name}_5x5b")
  branch_pool = keras.layers.MaxPooling2D(3, strides=2, padding="same",
                                          name=f"{name}_pool")(x)
  return keras.layers.Concatenate(name=name)([branch3, branch5, branch_pool])


def _logits(keras, x, num_classes: int):
  # float32 whatever the mixed-precision policy: the softmax in the loss
  # needs float32's precision (the Keras mixed-precision guide's rule).
  return keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)


def mini_inception(features, num_classes: int, *, width: float = 1.0):
  """A small Inception for 28-32 px images (MNIST, CIFAR-10): 38 layers.

  A stem convolution; an Inception module at full resolution; a downsample
  module; two Inception modules at 1/2; a downsample module; an Inception
  module at 1/4; global average pooling and a linear classifier. Every
  convolution is followed by batch norm and ReLU.

  Args:
    features: one image feature, at least 16x16.
    num_classes: outputs (logits).
    width: multiplies every layer's filter count (at least 1 filter each);
      1.0 is 0.42 M parameters and 94 MFLOPs per 28x28 example, 0.125 a
      7 k-parameter model for tests.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras = tf.keras
  if not width > 0:
    raise ConfigError(f"--width={width}: must be > 0")
  input_shape = image_input_shape(features, "mini_inception")
  check_image_shape("mini_inception", input_shape)

  def c(filters):
    return max(1, int(round(filters * width)))

  inputs = keras.Input(shape=tuple(input_shape), name="images")
  x = _conv_bn(keras, inputs, c(32), 3, name="stem")
  x = _inception_module(keras, x, b1=c(16), b3=(c(16), c(24)),
                        b5=(c(8), c(12)), pool=c(12), name="mixed0")
  x = _downsample_module(keras, x, b3=c(48), b5=(c(16), c(24)),
                         name="reduce0")
  for name in ("mixed1", "mixed2"):
    x = _inception_module(keras, x, b1=c(32), b3=(c(32), c(48)),
                          b5=(c(16), c(24)), pool=c(24), name=name)
  x = _downsample_module(keras, x, b3=c(96), b5=(c(32), c(48)),
                         name="reduce1")
  x = _inception_module(keras, x, b1=c(64), b3=(c(64), c(96)),
                        b5=(c(32), c(48)), pool=c(48), name="mixed3")
  x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
  return keras.Model(inputs, _logits(keras, x, num_classes),
                     name="mini_inception")


def inception_v3(features, num_classes: int):
  """InceptionV3 (Keras Applications), random weights, trained from scratch.

  Keras' network up to its global average pool, then our float32 logits
  layer (any number of classes, any input of at least 75x75).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras = tf.keras
  input_shape = image_input_shape(features, "inception_v3")
  check_image_shape("inception_v3", input_shape)
  # One flat functional model (not Keras' model nested in ours), so that
  # with_sync_batch_norm's clone reaches every batch-norm layer.
  base = keras.applications.InceptionV3(
      include_top=False, weights=None, input_shape=tuple(input_shape),
      pooling="avg")
  return keras.Model(base.input, _logits(keras, base.output, num_classes),
                     name="inception_v3")


def with_sync_batch_norm(model):
  """A fresh copy of ``model`` whose batch norms use the global batch.

  Plain batch norm normalises with the mean and variance of each replica's
  own batch; synchronised batch norm all-reduces them over all replicas in
  sync, which matters when per-replica batches are small. Call inside the
  strategy's scope; the copy has new (freshly initialised) weights.

  Raises:
    ConfigError: the model has no batch-norm layer to synchronise.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras = tf.keras
  if not any(isinstance(layer, keras.layers.BatchNormalization)
             for layer in model.layers):
    raise ConfigError(f"--sync_batch_norm: {model.name} has no batch "
                      "normalization to synchronise; drop the flag")

  def clone(layer):
    if isinstance(layer, keras.layers.BatchNormalization):
      # get_config() leaves out `synchronized`: set it explicitly.
      return keras.layers.BatchNormalization(synchronized=True,
                                             **layer.get_config())
    return layer.__class__.from_config(layer.get_config())

  return keras.models.clone_model(model, clone_function=clone)


def flops_per_example(model) -> int:
  """Floating-point operations of one example's forward pass.

  Counts 2 per multiply-add of the convolutions and dense layers (nested
  models' too), the convention of the Inception papers; batch norm,
  activations, pooling and embedding lookups are a few percent more and
  left out. Training costs about 3x this. A layer of a subclassed model
  has no recorded output shape: a dense one counts once per example, a
  convolution not at all.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras = tf.keras
  total = 0
  for layer in model.submodules:
    try:
      output_shape = layer.output_shape
    except (AttributeError, RuntimeError):
      output_shape = None
    if isinstance(layer, keras.layers.Conv2D) and output_shape:
      kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
      _, out_h, out_w, _ = output_shape
      total += 2 * out_h * out_w * kernel_h * kernel_w * (
          channels_in * channels_out)
    elif isinstance(layer, keras.layers.Dense):
      inputs, outputs = layer.kernel.shape
      # A Dense on a (batch, ..., features) input runs once per position.
      positions = int(np.prod(output_shape[1:-1])) if output_shape else 1
      total += 2 * inputs * outputs * positions
  return int(total)
