"""Checkpoint saves under ps that register no function, each ps task
writing its shards at the same time as the others.

TensorFlow's saver (``functional_saver.MultiDeviceSaver``) writes each
task's tensors on that task. When the tensors span several tasks it traces
the whole save into a new ``tf.function`` on every save, and a new function
is registered with every task of the cluster, a stopped worker too: the
chief then waits for that worker while holding the GIL, where no deadline
of tfdist.liveness.deadlines can act (a stalled worker froze the chief of a job
with 2 ps tasks in its next save). Run eagerly instead, it writes the
tasks one after another: a save of N ps tasks took N times one task's.

:func:`op_by_op` is the context of every save of a ps chief (the managed
checkpoints and the final one): the saver's new objects (its object graph,
the save counter) are made on the first ps task that holds the model's
variables, and the save runs eagerly, one op at a time (no function, so
nothing is registered with a worker), each ps task's ops in a thread of
its own (the ops release the GIL: the tasks write at once), then the merge
of the index on one of them. The files are those a traced save writes.
Every ps task writes into ``--model_dir``: on several machines it must be
storage they all mount (as the Kubernetes manifests do). Restores keep
TensorFlow's path: they run at start-up, when every task of the cluster
answers.

It replaces ``MultiDeviceSaver.save`` for the context's duration and calls
the saver's private parts (``_get_shards_by_task``, ``_registered_savers``,
``functional_saver._single_shard_save``): TensorFlow has no public way.
A TensorFlow where they differ fails the save (AttributeError), and
``tests/test_liveness.py`` fails the moment the replacement is no longer
what a save calls (it counts the calls of :func:`_parallel_save`).

Imports nothing from tfdist; TensorFlow lazily.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

_PATCH_LOCK = threading.Lock()


def _parts(model):
  """Every variable of ``model`` and of its optimizer, a sharded one's
  shards one by one."""
  variables = list(model.variables)
  if model.optimizer is not None:
    variables += list(model.optimizer.variables)
  for variable in variables:
    yield from getattr(variable, "variables", None) or [variable]


def variable_tasks(model) -> set:
  """The tasks (``/job:ps/replica:0/task:1``) holding the variables of
  ``model`` and of its optimizer, sharded ones' shards included."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {tf.DeviceSpec.from_string(part.device).replace(
      device_type=None, device_index=None).to_string()
          for part in _parts(model)}


def state_bytes(model) -> int:
  """The bytes a checkpoint of ``model`` and its optimizer holds (every
  variable, optimizer slots included): what a save writes."""
  return int(sum(int(np.prod(part.shape)) * part.dtype.size
                 for part in _parts(model)))


def _write_task(functional_saver, jobs: list, options, failures: list):
  """Writes one task's shards, in order (a thread per task)."""
  try:
    for prefix, shard, task in jobs:
      functional_saver._single_shard_save(prefix, shard, task, options)  # pylint: disable=protected-access
  except Exception as e:  # pylint: disable=broad-except
    failures.append(e)


def _parallel_save(saver, file_prefix, options, functional_saver):
  """``saver.save`` eagerly, each task's shards written by a thread of its
  own, then merged: what the traced save does, without a function."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  options = options or tf.train.CheckpointOptions()
  prefix = (file_prefix if isinstance(file_prefix, str)
            else file_prefix.numpy().decode())
  temp = prefix + (".part" if prefix.startswith("s3://") else "_temp/part")
  by_task = saver._get_shards_by_task(  # pylint: disable=protected-access
      options.experimental_sharding_callback)
  total = tf.constant(sum(len(shards) for _, shards in by_task))
  jobs, prefixes, index = {}, [], 0
  for task, shards in by_task:
    for shard in shards:
      with tf.device(task):
        shard_prefix = functional_saver.sharded_filename(
            tf.constant(temp), index, total)
      index += 1
      prefixes.append(shard_prefix)
      jobs.setdefault(task, []).append((shard_prefix, shard, task))
  failures = []
  writers = [threading.Thread(target=_write_task, daemon=True,
                              args=(functional_saver, task_jobs, options,
                                    failures), name=f"save on {task}")
             for task, task_jobs in jobs.items()]
  for writer in writers:
    writer.start()
  for writer in writers:
    writer.join()  # a stopped ps: the write's deadline acts
  if failures:
    raise failures[0]
  # The index is merged on the last task, as the traced save does.
  with tf.device(options.experimental_io_device
                 or by_task[-1][0].to_string()):
    tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=prefixes,
                                  destination_prefix=file_prefix,
                                  delete_old_dirs=True)


@contextlib.contextmanager
def _eager_parallel_saves():
  """Makes every save in the context :func:`_parallel_save`."""
  from tensorflow.python.checkpoint import functional_saver  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  saver_class = functional_saver.MultiDeviceSaver
  traced_save = saver_class.save

  def save(self, file_prefix, options=None):
    if self._registered_savers:  # pylint: disable=protected-access
      return traced_save(self, file_prefix, options)  # not a Keras model's
    return _parallel_save(self, file_prefix, options, functional_saver)

  with _PATCH_LOCK:
    saver_class.save = save
    try:
      yield
    finally:
      saver_class.save = traced_save


@contextlib.contextmanager
def op_by_op(model):
  """The context of a ps chief's save of ``model`` (and its optimizer):
  op by op on the ps tasks, each writing at once (see the module
  docstring). Elsewhere (no ps task holds the variables: one process,
  multiworker) it does nothing."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tasks = variable_tasks(model)
  if not tasks or not all("/job:ps/" in task for task in tasks):
    yield
    return
  with tf.device(min(tasks)), _eager_parallel_saves():
    yield
