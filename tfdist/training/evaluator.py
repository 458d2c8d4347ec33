"""The evaluator task: scores each new checkpoint on the test split.

An ``evaluator`` in the cluster spec never joins training (TensorFlow's
strategies leave it out, see cluster.training_cluster): it watches the chief's
``model_dir/checkpoints``, restores every new checkpoint into a plain copy of
the model (one it cannot read is skipped, in one line), measures the test
metrics with the same code as the trainer
(tfdist.training.measurement.test_metrics: the task's own and every metric of
the model), writes them as TensorBoard summaries under ``model_dir/eval``
(``test_accuracy``, ``test_mse`` ...), and exits when the chief has written
``result.json`` after the last checkpoint. With no new checkpoint for
``timeout`` seconds it gives up with one line, so it never waits forever for a
chief that is gone.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

from tfdist import console
from tfdist import errors
from tfdist.data import sources
from tfdist.errors import ConfigError
from tfdist.model import contract
from tfdist.model import tasks
from tfdist.training import checkpoint as checkpoint_lib
from tfdist.training import measurement

EVAL_SUBDIR = "eval"
POLL_SECONDS = 0.5


def _mtime(path: str) -> Optional[float]:
  try:
    return os.path.getmtime(path)
  except OSError:
    return None


def training_done(model_dir: str, latest: Optional[str]) -> bool:
  """True when the chief wrote its result after the latest checkpoint."""
  done_at = _mtime(os.path.join(model_dir, "result.json"))
  if done_at is None:
    return False
  saved_at = _mtime(latest + ".index") if latest else None
  return saved_at is None or done_at >= saved_at


def _measurement(user: contract.UserModel, dataset, batch_size: int):
  """The plain model, and a function measuring its test metrics."""
  model = contract.build(user.model_fn, dataset.features,
                         dataset.num_outputs, name=user.label)
  objective = tasks.resolve(model, task=dataset.task, loss=user.loss,
                            metrics=user.metrics,
                            name=f"the model of {user.label}")
  # Compiled as the trainer compiles it, for the same metrics' copies.
  model.compile(loss=objective.loss, metrics=list(objective.metrics),
                weighted_metrics=list(objective.weighted_metrics) or None)
  tasks.build_metrics(model, task=dataset.task,
                      num_outputs=dataset.num_outputs)
  copies = tasks.test_copies(model)
  return model, lambda: measurement.test_metrics(
      model, dataset.test_batches(batch_size), task=objective.task,
      outputs=objective.outputs, metrics=copies)


def _evaluate(path: str, *, reader, measure: Callable[[], dict], writer,
              task_name: str) -> Optional[tuple]:
  """Restores the checkpoint at ``path`` into ``reader``'s model and writes
  its test metrics as summaries; returns (step, metrics), or None for a
  checkpoint it cannot read (one line says so)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    # expect_partial: the optimizer's state is in the checkpoint too.
    reader.read(path).expect_partial()
  except (tf.errors.OpError, ValueError, IndexError) as e:
    # Rotated away (keep_checkpoints) between listing and reading, or
    # unreadable (half-copied, corrupt): skipped, training goes on.
    console.info(f"{task_name}: skipped {path}, which it cannot read "
                 f"({type(e).__name__}: "
                 f"{str(e).strip().splitlines()[0][:120]})")
    return None
  step = int(path.rsplit("-", 1)[1])
  metrics = measurement.rounded(measure())
  with writer.as_default():
    for metric, value in metrics.items():
      if value is not None:
        tf.summary.scalar(f"test_{metric}", value, step=step)
  writer.flush()
  console.info(f"{task_name}: step {step}: test " + ", ".join(
      f"{k} {v}" for k, v in metrics.items()))
  return step, metrics


def run(*, user: contract.UserModel, dataset: sources.Source,
        model_dir: Optional[str], batch_size: int = 1000,
        timeout: float = 600.0, task_name: str = "evaluator-0") -> dict:
  """Evaluates every new checkpoint of ``model_dir`` until training is done.

  Args:
    user: the trainer's model (the same model as the chief's), its loss
      and metrics; its name is checked against the checkpoints' model
      (tfdist.training.checkpoint).
    dataset: its test split is evaluated, every example once.
    model_dir: the chief's --model_dir (shared storage on several machines).
    batch_size: evaluation batch size.
    timeout: seconds without a new checkpoint before giving up.
    task_name: names this task in messages and the result.

  Returns:
    The result: checkpoints evaluated, the last step and its test metrics.

  Raises:
    ConfigError: no model_dir, or it holds another model's checkpoints.
    errors.Stalled: no new checkpoint within ``timeout`` seconds.
  """
  if not model_dir:
    raise ConfigError("the evaluator reads the chief's checkpoints: set "
                      "--model_dir to the chief's directory")
  if not timeout > 0:
    raise ConfigError(f"--eval_timeout={timeout}: must be > 0")
  signature = checkpoint_lib.model_signature(
      model_name=user.name, features=dataset.features,
      num_classes=dataset.num_outputs)
  checkpoint_lib.check_model_dir(model_dir, signature=signature)

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # A plain model, no strategy: the evaluator is one process.
  model, measure = _measurement(user, dataset, batch_size)
  reader = tf.train.Checkpoint(model=model)
  writer = tf.summary.create_file_writer(os.path.join(model_dir, EVAL_SUBDIR))
  console.info(f"{task_name} evaluates new checkpoints of {model_dir}")
  evaluated, last_path, metrics, step = 0, None, None, None
  waiting_since = time.monotonic()
  while True:
    latest = checkpoint_lib.latest(model_dir)
    if latest is not None and latest != last_path:
      last_path = latest
      scored = _evaluate(latest, reader=reader, measure=measure,
                         writer=writer, task_name=task_name)
      if scored is not None:
        step, metrics = scored
        evaluated += 1
        waiting_since = time.monotonic()
      continue
    if training_done(model_dir, latest):
      break
    if time.monotonic() - waiting_since > timeout:
      raise errors.Stalled(
          f"{task_name}: no new checkpoint in --model_dir={model_dir} for "
          f"{timeout:.0f} s and the chief wrote no result; is it running "
          "with this --model_dir? (--eval_timeout sets the wait)")
    time.sleep(POLL_SECONDS)  # a polling interval, not synchronisation
  result = {"model": user.name, "task": task_name,
            "checkpoints_evaluated": evaluated, "step": step,
            "ml_task": dataset.task, "test_metrics": metrics}
  if dataset.task == "classification":
    result["test_accuracy"] = metrics and metrics["accuracy"]
  return result
