"""What a training run measures about itself: epoch times, throughput after
warm-up, accuracy against training time, learning rate, peak memory.

:class:`EpochMonitor` is a Keras callback. It adds ``examples_per_sec`` and
``learning_rate`` to each epoch's logs, where the TensorBoard callback placed
after it writes them (as Keras's own LearningRateScheduler adds ``lr``), and
optionally evaluates the test set after each epoch, outside the timed span.

This module imports TensorFlow at the top: import it where TensorFlow is
already loaded (``train.run`` imports it after every input was checked).
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Callable, Optional

import tensorflow as tf


def peak_rss_mb() -> float:
  """This process's peak resident memory so far, in MiB (the kernel's
  high-water mark, so no peak between two samples is missed)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  # ru_maxrss is in KiB on Linux, in bytes on macOS.
  return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def current_learning_rate(optimizer) -> float:
  """The rate the optimizer applies at its current step (schedule or not)."""
  rate = optimizer.learning_rate
  if isinstance(rate, tf.keras.optimizers.schedules.LearningRateSchedule):
    rate = rate(optimizer.iterations)
  return float(tf.keras.backend.get_value(rate))


def steady_rate(examples_per_epoch: int, epoch_seconds: list) -> float:
  """Examples/s of the median epoch after the first (tracing, collective
  set-up and the first RPCs are warm-up, not throughput; the median, not the
  mean, so that a burst of another process on a shared machine does not
  decide the figure); the only epoch if there is one; 0 without any."""
  timed = sorted(epoch_seconds[1:] or epoch_seconds)
  if not timed:
    return 0.0  # a relaunch that found the training complete ran no epoch
  middle = len(timed) // 2
  median = (timed[middle] if len(timed) % 2
            else (timed[middle - 1] + timed[middle]) / 2)
  return examples_per_epoch / median


class EpochMonitor(tf.keras.callbacks.Callback):
  """Times epochs and, given ``evaluate``, records accuracy vs train time.

  Attributes after ``fit``:
    epoch_seconds: wall time of each epoch, evaluation excluded.
    curve: ``[train_seconds, test_accuracy]`` after each epoch, where
      train_seconds counts from the start of ``fit`` without the time spent
      evaluating (empty without ``evaluate``).
  """

  def __init__(self, *, examples_per_epoch: int,
               evaluate: Optional[Callable[[], float]] = None,
               clock: Callable[[], float] = time.perf_counter):
    super().__init__()
    self.examples_per_epoch = examples_per_epoch
    self.epoch_seconds: list = []
    self.curve: list = []
    self._evaluate = evaluate
    self._clock = clock
    self._train_start = self._epoch_start = 0.0
    self._eval_seconds = 0.0

  def on_train_begin(self, logs=None):
    self._train_start = self._clock()

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start = self._clock()

  def on_epoch_end(self, epoch, logs=None):
    # Every step of the epoch is done here: Keras syncs at the epoch end
    # (multiworker: the last all-reduce; ps: the coordinator's join), which
    # is also the barrier after the first, warm-up epoch.
    end = self._clock()
    seconds = end - self._epoch_start
    self.epoch_seconds.append(seconds)
    if logs is not None:
      logs["examples_per_sec"] = self.examples_per_epoch / seconds
      logs["learning_rate"] = current_learning_rate(self.model.optimizer)
    if self._evaluate is not None:
      accuracy = self._evaluate()
      self.curve.append([round(end - self._train_start - self._eval_seconds,
                               3), round(accuracy, 5)])
      if logs is not None:
        logs["test_accuracy"] = accuracy
      self._eval_seconds += self._clock() - end

  def summary(self) -> dict:
    """The result fields this monitor adds (see train.run)."""
    result = {
        "steady_examples_per_sec": round(
            steady_rate(self.examples_per_epoch, self.epoch_seconds), 1),
        "epoch_seconds": [round(s, 4) for s in self.epoch_seconds],
        "peak_rss_mb": peak_rss_mb(),
    }
    if self._evaluate is not None:
      result["accuracy_curve"] = self.curve
    return result
