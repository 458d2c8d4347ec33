"""Mixed precision: 16-bit compute with float32 variables, any strategy.

Which 16-bit type (``--mixed_precision_dtype=auto`` picks):

* ``float16`` on GPUs: what their tensor cores run fastest. Its range is
  small (smallest normal 6e-5), so small gradients underflow to zero: the
  optimizer is wrapped in Keras' ``LossScaleOptimizer``, which multiplies
  the loss by a dynamic scale and divides the gradients back.
* ``bfloat16`` on CPUs (and TPUs, and GPUs from Ampere on): float32's range,
  so no loss scaling. Fast on CPUs with AVX512_BF16 or AMX, emulated and
  slower on others.

The policy is Keras' global one, set only while the model is built and
compiled (:func:`policy`), so one process can build models of both kinds.
Variables stay float32; logits are float32 (see models._logits and
tfdist.model.contract.build) so the softmax keeps its precision.
"""

from __future__ import annotations

import contextlib

from tfdist.errors import ConfigError

DTYPES = ("auto", "float16", "bfloat16")


def policy_name(*, enabled: bool, dtype: str, has_gpu: bool,
                strategy: str) -> str:
  """The Keras policy: ``float32``, ``mixed_float16`` or ``mixed_bfloat16``.

  Args:
    enabled: --mixed_precision.
    dtype: one of DTYPES.
    has_gpu: whether this process trains on GPUs.
    strategy: the strategy name; Keras cannot loss-scale under ``ps``.

  Raises:
    ConfigError: an unknown dtype, or float16 under ps.
  """
  if dtype not in DTYPES:
    raise ConfigError(f"--mixed_precision_dtype={dtype!r}: use one of "
                      f"{', '.join(DTYPES)}")
  if not enabled:
    return "float32"
  if dtype == "auto":
    # float16 only where Keras can scale the loss: under ps the variables
    # are not per replica and LossScaleOptimizer refuses to run.
    dtype = "float16" if has_gpu and strategy != "ps" else "bfloat16"
  if dtype == "float16" and strategy == "ps":
    raise ConfigError("--mixed_precision_dtype=float16 needs loss scaling, "
                      "which Keras cannot do under --strategy=ps; use "
                      "--mixed_precision_dtype=bfloat16")
  return f"mixed_{dtype}"


@contextlib.contextmanager
def policy(name: str):
  """Sets Keras' global dtype policy inside the block, restores it after.

  Layers take the global policy when they are created: build and compile
  the model inside the block.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  mixed_precision = tf.keras.mixed_precision
  previous = mixed_precision.global_policy()
  mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    mixed_precision.set_global_policy(previous)


def loss_scaled(optimizer, name: str):
  """``optimizer`` wrapped for dynamic loss scaling if the policy is float16."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if name != "mixed_float16":
    return optimizer
  return tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
