"""Variables split over the ps tasks: the partitioner and its shards.

Under ``--strategy=ps`` TensorFlow places each variable on one ps task
(round-robin), or, given a variable partitioner, splits a variable along
its first axis into shards on consecutive ps tasks (a ``ShardedVariable``):
an embedding table larger than one task's memory then trains, each ps
holding a slice, and a lookup reads only the rows it needs from each. The
optimizer's slots follow their variable's shards (tf-keras colocates
them).

==================  =========================================================
--variable_         what is split
partitioner
==================  =========================================================
``min_size``        a variable of at least 2 x ``--min_shard_bytes``, into
                    shards of at least that size, at most one per ps task:
                    big tables split, small variables stay whole (default)
``fixed``           every variable with a first axis, into
                    ``--variable_shards`` shards (0 = one per ps task), up
                    to the number of ps tasks
``none``            nothing: whole variables, round-robin
==================  =========================================================

Owns: those settings' checks (:func:`check`, without TensorFlow;
:func:`check_cluster` against the ps tasks a cluster has), the
partitioner a ps strategy gets (:func:`partitioner`), a model's weights
with each sharded variable whole (:func:`whole_weights`), a copy of the
model built outside the strategy with them (:func:`plain_copy`: what the
export and the test metrics take) and what the result says of the shards
(:func:`result_fields`). Imports tfdist.cluster.specs, errors and
tfdist.model.contract; TensorFlow lazily.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

import numpy as np

from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError
from tfdist.model import contract

PARTITIONERS = ("min_size", "fixed", "none")
DEFAULT_PARTITIONER = "min_size"
# TensorFlow's own example value: 256 KiB shards. A table of 1M rows of 32
# floats (128 MiB) splits over every ps task; a dense layer's kernel, a
# bias or a small model's variables stay whole.
DEFAULT_MIN_SHARD_BYTES = 256 << 10
_PS_DEVICE = re.compile(r"/job:ps/replica:\d+/task:(\d+)")
_SHARD_SUFFIX = re.compile(r"/part_\d+(:\d+)?$")


def check(*, strategy: str, variable_partitioner: str, min_shard_bytes: int,
          variable_shards: int) -> None:
  """The partitioner flags, checked without TensorFlow.

  Raises:
    ConfigError: an unknown partitioner, a size or count out of range, a
      flag of another partitioner, or a non-default one under a strategy
      other than ps (which has no ps tasks to split over).
  """
  if variable_partitioner not in PARTITIONERS:
    raise ConfigError(f"--variable_partitioner={variable_partitioner!r}: use "
                      f"one of {', '.join(PARTITIONERS)}")
  if min_shard_bytes < 1:
    raise ConfigError(f"--min_shard_bytes={min_shard_bytes}: must be at "
                      "least 1")
  if variable_shards < 0:
    raise ConfigError(f"--variable_shards={variable_shards}: must be 0 (one "
                      "shard per ps task) or more")
  if variable_shards and variable_partitioner != "fixed":
    raise ConfigError(f"--variable_shards={variable_shards} is the shard count "
                      "of --variable_partitioner=fixed: add that, or drop "
                      "--variable_shards")
  if (min_shard_bytes != DEFAULT_MIN_SHARD_BYTES
      and variable_partitioner != "min_size"):
    raise ConfigError(f"--min_shard_bytes={min_shard_bytes} sizes the shards "
                      "of --variable_partitioner=min_size, not "
                      f"{variable_partitioner}: drop one of them")
  if strategy == "ps":
    return
  for flag, value, default in (
      ("variable_partitioner", variable_partitioner, DEFAULT_PARTITIONER),
      ("min_shard_bytes", min_shard_bytes, DEFAULT_MIN_SHARD_BYTES),
      ("variable_shards", variable_shards, 0)):
    if value != default:
      raise ConfigError(f"--{flag}={value} splits variables over ps tasks, "
                        f"and --strategy={strategy} has none (its variables "
                        "are mirrored whole): use --strategy=ps, or drop "
                        f"--{flag}")


def num_ps(task: Optional[cluster_lib.Task]) -> int:
  """The ps tasks a ps strategy splits over: the cluster's, or the one ps
  of the in-process cluster (no TF_CONFIG)."""
  return len(task.cluster.get("ps", ())) if task is not None else 1


def check_cluster(*, variable_partitioner: str, variable_shards: int,
                  ps_tasks: int) -> None:
  """``--variable_shards`` against the ps tasks of the cluster.

  Raises:
    ConfigError: more shards than ps tasks.
  """
  if variable_partitioner == "fixed" and variable_shards > ps_tasks:
    raise ConfigError(f"--variable_shards={variable_shards}: at most one "
                      f"shard per ps task, and the cluster has {ps_tasks} "
                      f"ps task{'s' if ps_tasks != 1 else ''}; use "
                      f"--variable_shards={ps_tasks} (or 0: one per ps "
                      "task), or add ps tasks")


def partitioner(*, variable_partitioner: str, min_shard_bytes: int,
                variable_shards: int, ps_tasks: int):
  """The ``variable_partitioner`` of a ParameterServerStrategy, or None
  (whole variables)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  partitioners = tf.distribute.experimental.partitioners
  if variable_partitioner == "min_size":
    return partitioners.MinSizePartitioner(min_shard_bytes=min_shard_bytes,
                                           max_shards=ps_tasks)
  if variable_partitioner == "fixed":
    return partitioners.FixedShardsPartitioner(variable_shards or ps_tasks)
  return None


def _container(variable):
  """The ShardedVariable ``variable`` is a shard of, or None."""
  reference = getattr(variable, "_sharded_container", None)
  return reference() if reference is not None else None


def _shards(variable) -> list:
  """The shards of a ShardedVariable, else ``[variable]``."""
  return list(getattr(variable, "variables", None) or [variable])


def whole_variables(variables) -> list:
  """``variables`` in order, the shards of each sharded variable replaced
  by the ShardedVariable (once, where its first shard was)."""
  whole, seen = [], set()
  for variable in variables:
    variable = _container(variable) or variable
    if id(variable) not in seen:
      seen.add(id(variable))
      whole.append(variable)
  return whole


def value(variable) -> np.ndarray:
  """A variable's value; a sharded one's shards concatenated (each read
  from its ps task)."""
  parts = [np.asarray(shard.numpy()) for shard in _shards(variable)]
  return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def whole_weights(model) -> list:
  """``model.get_weights()`` with each sharded variable whole: what a
  model of the same layers built outside the strategy takes
  (``set_weights``)."""
  return [value(v) for v in whole_variables(model.weights)]


def plain_copy(model, *, model_fn: Callable, features, num_classes: int):
  """A copy of ``model`` built outside any strategy, with its current weights:
  what tfdist.serving.export writes and the test metrics are measured on.

  Raises:
    ValueError: called inside a strategy's scope, where the copy's variables
      would be distributed again.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if tf.distribute.has_strategy():
    raise ValueError("plain_copy must be called outside strategy.scope(): "
                     "the copy has to hold ordinary, local variables")
  copy = contract.build(model_fn, features, num_classes)
  # Reads mirrored variables locally and ps variables over RPC (a sharded
  # one from each of its ps tasks, concatenated into one whole variable):
  # the trained values, whichever strategy trained them.
  copy.set_weights(whole_weights(model))
  return copy


def _ps_task(device: str) -> Optional[str]:
  found = _PS_DEVICE.search(device or "")
  return f"ps-{found.group(1)}" if found else None


def _name(variable) -> str:
  return _SHARD_SUFFIX.sub("", _shards(variable)[0].name).removesuffix(":0")


def result_fields(model) -> dict:
  """What the result line says of the shards.

  ``sharded_variables``: each of the model's sharded variables (name ->
  shard count); ``bytes_per_ps``: the bytes of variables, optimizer slots
  included, each ps task holds (empty without ps tasks).
  """
  variables = list(model.variables)
  if model.optimizer is not None:
    variables += list(model.optimizer.variables)
  held = {}
  for variable in variables:
    for shard in _shards(variable):
      task = _ps_task(shard.device)
      if task is not None:
        held[task] = held.get(task, 0) + int(
            np.prod(shard.shape)) * shard.dtype.size
  sharded = {_name(v): len(_shards(v)) for v in whole_variables(model.weights)
             if len(_shards(v)) > 1}
  return {"sharded_variables": sharded,
          "bytes_per_ps": dict(sorted(held.items(),
                                      key=lambda item: int(item[0][3:])))}
