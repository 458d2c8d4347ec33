"""Counts the collective operations in a traced TensorFlow function.

Owns: telling how many collectives (all-reduces, gathers, broadcasts, NCCL
calls) one call of a ``tf.function`` launches, from its graph, without
running it: what the benchmark reports per training step and what the tests
assert. Imports nothing from tfdist (and TensorFlow only through the
functions it is given).

The count is static: every collective node of the function's graph and of
every function in its library (``strategy.run`` bodies, loops, conditionals)
counts once. Under ``MirroredStrategy`` or ``MultiWorkerMirroredStrategy``
with several local devices each replica has its own node, so one all-reduce
per step shows as one node per local replica: see
:meth:`CollectiveCount.per_replica`.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Dict

# Operations that move data between replicas. Not counted: the set-up ops
# (CollectiveAssignGroupV2, CollectiveInitializeCommunicator), which send
# nothing per step.
COLLECTIVE_OPS = frozenset({
    "CollectiveReduce", "CollectiveReduceV2", "CollectiveReduceV3",
    "CollectiveReduceScatterV2", "CollectiveGather", "CollectiveGatherV2",
    "CollectiveBcastSend", "CollectiveBcastRecv", "CollectiveBcastSendV2",
    "CollectiveBcastRecvV2", "CollectiveAllToAllV2", "CollectiveAllToAllV3",
    "NcclAllReduce", "NcclReduce", "NcclBroadcast",
})


@dataclasses.dataclass(frozen=True)
class CollectiveCount:
  """Collective nodes of one traced function, by operation type."""
  by_op: Dict[str, int]

  @property
  def total(self) -> int:
    return sum(self.by_op.values())

  def per_replica(self, local_replicas: int) -> float:
    """Collectives one replica launches per call.

    Args:
      local_replicas: replicas in this process (devices of a mirrored
        strategy; 1 per worker with one device each).
    """
    return self.total / local_replicas


def count_graph_def(graph_def) -> CollectiveCount:
  """Counts the collective nodes of a GraphDef and of its function library."""
  counts = collections.Counter(
      node.op for node in graph_def.node if node.op in COLLECTIVE_OPS)
  for function in graph_def.library.function:
    counts.update(node.op for node in function.node_def
                  if node.op in COLLECTIVE_OPS)
  return CollectiveCount(by_op=dict(sorted(counts.items())))


def count(concrete_function) -> CollectiveCount:
  """Counts the collectives of a ConcreteFunction (``fn.get_concrete_function
  (...)``: traced, not run)."""
  return count_graph_def(concrete_function.graph.as_graph_def())


def count_train_function(model) -> CollectiveCount:
  """Counts the collectives of a tf-keras model's traced training function.

  Call after ``fit`` ran at least one step (or after tracing
  ``model.train_tf_function`` yourself). ``tf.function`` may keep more than
  one trace of the same step (its first call traces once to create
  variables); the count is that of the trace with the most collectives.

  Raises:
    ValueError: the model has no traced training function (not fit yet, or
      compiled with run_eagerly=True).
  """
  function = getattr(model, "train_tf_function", None)
  # tf.function has no public list of its traces; this is the one
  # SavedModel uses.
  traces = (function._list_all_concrete_functions()  # pylint: disable=protected-access
            if function is not None else [])
  if not traces:
    raise ValueError("the model has no traced training function: call fit "
                     "(not run_eagerly) before counting its collectives")
  return max((count(trace) for trace in traces), key=lambda c: c.total)
