"""Checkpoint saves under ps that register no function: op by op.

TensorFlow's saver (``functional_saver.MultiDeviceSaver``) writes each
task's tensors on that task. When the tensors span several tasks it traces
the whole save into a new ``tf.function`` on every save, and a new function
is registered with every task of the cluster, a stopped worker too: the
chief then waits for that worker while holding the GIL, where no deadline
of tfdist.deadlines can act (a stalled worker froze the chief of a job
with 2 ps tasks in its next save).

:func:`op_by_op` is the context of every save of a ps chief (the managed
checkpoints and the final one): the saver's new objects (its object graph,
the save counter) are made on the first ps task that holds the model's
variables, and the save runs eagerly, one op at a time, each on the task
whose tensors it writes (one ps task: all on it), then the merge of the
index on one of them. No function, so nothing is registered with a worker;
the files are those a traced save writes. Every ps task then writes into
``--model_dir``: on several machines it must be storage they all mount
(as the Kubernetes manifests do). Restores keep TensorFlow's path: they
run at start-up, when every task of the cluster answers.

Imports nothing from tfdist; TensorFlow lazily.
"""

from __future__ import annotations

import contextlib
import threading

_PATCH_LOCK = threading.Lock()


def variable_tasks(model) -> set:
  """The tasks (``/job:ps/replica:0/task:1``) holding the variables of
  ``model`` and of its optimizer, sharded ones' shards included."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  variables = list(model.variables)
  if model.optimizer is not None:
    variables += list(model.optimizer.variables)
  tasks = set()
  for variable in variables:
    for part in getattr(variable, "variables", None) or [variable]:
      tasks.add(tf.DeviceSpec.from_string(part.device).replace(
          device_type=None, device_index=None).to_string())
  return tasks


@contextlib.contextmanager
def _eager_multi_task_saves():
  """Makes every save in the context one op at a time, even across tasks
  (TensorFlow traces those: see the module docstring)."""
  from tensorflow.python.checkpoint import functional_saver  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  saver = functional_saver.MultiDeviceSaver
  traced_save = saver.save

  def save(self, file_prefix, options=None):
    # TensorFlow traces the save when it counts more than one task.
    tasks, self._num_unique_tasks = self._num_unique_tasks, 1  # pylint: disable=protected-access
    try:
      return traced_save(self, file_prefix, options)
    finally:
      self._num_unique_tasks = tasks  # pylint: disable=protected-access

  with _PATCH_LOCK:
    saver.save = save
    try:
      yield
    finally:
      saver.save = traced_save


@contextlib.contextmanager
def op_by_op(model):
  """The context of a ps chief's save of ``model`` (and its optimizer):
  op by op on the ps tasks (see the module docstring). Elsewhere (no ps
  task holds the variables: one process, multiworker) it does nothing."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tasks = variable_tasks(model)
  if not tasks or not all("/job:ps/" in task for task in tasks):
    yield
    return
  with tf.device(min(tasks)), _eager_multi_task_saves():
    yield
