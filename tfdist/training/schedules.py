"""The large-batch learning-rate recipe: linear scaling and gradual warmup.

Goyal et al., "Accurate, Large Minibatch SGD" (2017): when the global batch
grows k-fold, multiply the learning rate by k (linear scaling), and reach that
rate gradually, ramping it linearly over the first epochs (gradual warmup),
because the scaled rate is too large for the random initial weights.

Every value here is plain Python except :func:`warmup_schedule`, which builds
the Keras schedule the optimizer evaluates at its step counter (TensorFlow is
imported there, after every input was checked).
"""

from __future__ import annotations

from typing import Union

from tfdist.errors import ConfigError

LR_SCALINGS = ("none", "linear")


def check(*, lr_scaling: str, base_batch_size: int,
          warmup_epochs: float) -> None:
  """Raises ConfigError naming the flag when a recipe setting is invalid."""
  if lr_scaling not in LR_SCALINGS:
    raise ConfigError(f"--lr_scaling={lr_scaling!r}: use one of "
                      f"{', '.join(LR_SCALINGS)}")
  if base_batch_size < 1:
    raise ConfigError(f"--base_batch_size={base_batch_size}: must be at "
                      "least 1 (the global batch --learning_rate was tuned "
                      "for)")
  if not warmup_epochs >= 0:
    raise ConfigError(f"--warmup_epochs={warmup_epochs}: must be 0 (no "
                      "warmup) or more")


def scaled_learning_rate(learning_rate: float, *, lr_scaling: str,
                         global_batch_size: int,
                         base_batch_size: int) -> float:
  """The learning rate after scaling: ``learning_rate`` x global / base.

  Args:
    learning_rate: the rate tuned for a global batch of ``base_batch_size``.
    lr_scaling: ``none`` (keep it) or ``linear``.
    global_batch_size: examples per optimizer step over all replicas.
    base_batch_size: the global batch ``learning_rate`` was tuned for.
  """
  check(lr_scaling=lr_scaling, base_batch_size=base_batch_size,
        warmup_epochs=0)
  if lr_scaling == "none":
    return learning_rate
  return learning_rate * global_batch_size / base_batch_size


def warmup_start(learning_rate: float, *, lr_scaling: str) -> float:
  """Where the warmup ramp starts.

  With linear scaling, at the base batch's rate (Goyal et al.: from eta to
  k * eta); without scaling there is no smaller tuned rate, so from 0.
  """
  return learning_rate if lr_scaling == "linear" else 0.0


def warmup_schedule(*, initial: float, target: float, warmup_steps: int):
  """A Keras LearningRateSchedule: linear from ``initial`` to ``target``.

  ``lr(step) = initial + (target - initial) * min(step, warmup_steps) /
  warmup_steps``: ``initial`` at step 0, ``target`` from step
  ``warmup_steps`` on. ``step`` is the optimizer's iteration counter, so the
  schedule resumes correctly from a checkpoint.
  """
  if warmup_steps < 1:
    raise ConfigError(f"warmup of {warmup_steps} steps: use at least 1 step, "
                      "or no warmup (--warmup_epochs=0)")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class LinearWarmup(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup, then constant (see warmup_schedule)."""

    def __call__(self, step):
      fraction = tf.minimum(tf.cast(step, tf.float32), float(warmup_steps))
      return initial + (target - initial) * fraction / float(warmup_steps)

    def get_config(self):
      return {"initial": initial, "target": target,
              "warmup_steps": warmup_steps}

  return LinearWarmup()


def learning_rate(learning_rate: float, *, lr_scaling: str,  # pylint: disable=redefined-outer-name
                  base_batch_size: int, warmup_epochs: float,
                  global_batch_size: int,
                  steps_per_epoch: int) -> Union[float, object]:
  """What the optimizer gets: a float, or a warmup schedule.

  Without warmup this is the (scaled) rate itself, so the optimizer is the
  same as without the recipe.
  """
  check(lr_scaling=lr_scaling, base_batch_size=base_batch_size,
        warmup_epochs=warmup_epochs)
  target = scaled_learning_rate(learning_rate, lr_scaling=lr_scaling,
                                global_batch_size=global_batch_size,
                                base_batch_size=base_batch_size)
  warmup_steps = round(warmup_epochs * steps_per_epoch)
  if warmup_epochs == 0:
    return target
  return warmup_schedule(
      initial=warmup_start(learning_rate, lr_scaling=lr_scaling),
      target=target, warmup_steps=max(1, warmup_steps))
