"""TensorFlow's own start-up and heartbeat deadlines for multiworker tasks.

Owns: configuring TensorFlow's coordination service (the one that
MultiWorkerMirroredStrategy's constructor starts on the chief, or worker-0)
with deadlines, and turning the error it raises when one passes into
:class:`tfdist.errors.PeerLost` naming the missing peers, and which of
TensorFlow's errors mean a lost peer (:func:`peer_loss_errors`). Imports
tfdist.errors and (lazily) TensorFlow.

Left alone, TensorFlow waits an hour for a peer that passed preflight and
died before registering, holding the GIL all along (no Python thread, no
signal handler runs). With the registration barrier below, every task
fails after ``register_timeout_s`` instead: the leader names the tasks that
never registered, the others name the leader they could not reach.
"""

from __future__ import annotations

import re

from tfdist import errors

_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")


def peer_loss_errors() -> tuple:
  """TensorFlow's error types for a peer that is gone: a collective or an RPC to
  a killed task fails with one of these (tfdist.training.runtime.lost_peers
  turns them into PeerLost), wherever it runs, a model function too."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return (tf.errors.UnavailableError, tf.errors.AbortedError,
          tf.errors.CancelledError, tf.errors.DeadlineExceededError)


def configure(cluster: dict, *, register_timeout_s: float,
              heartbeat_timeout_s: float = 10.0,
              shutdown_timeout_s: float = 60.0) -> None:
  """Sets the coordination service's deadlines; call before the strategy.

  MultiWorkerMirroredStrategy keeps a coordination service configured
  before its constructor, and otherwise configures one without deadlines.

  Args:
    cluster: the training cluster (chief and workers; no evaluator).
    register_timeout_s: how long every task waits for all to register (the
      leader; the others give up 5 s later, TensorFlow's margin for the
      leader's verdict to reach them).
    heartbeat_timeout_s: how long a silent registered task counts as alive.
    shutdown_timeout_s: how long the final barrier at exit waits.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.python.distribute import multi_worker_util  # pylint: disable=g-import-not-at-top
  from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top
  jobs = [coordination_config_pb2.CoordinatedJob(name=job,
                                                 num_tasks=len(cluster[job]))
          for job in ("chief", "worker") if job in cluster]
  ctx = context.context()
  ctx.configure_coordination_service(
      service_type="standalone",
      service_leader=multi_worker_util.coordination_leader(
          tf.train.ClusterSpec(cluster)),
      cluster_register_timeout_in_ms=int(register_timeout_s * 1000),
      heartbeat_timeout_in_ms=int(heartbeat_timeout_s * 1000),
      shutdown_barrier_timeout_in_ms=int(shutdown_timeout_s * 1000),
      coordinated_jobs=jobs)
  # Without the barrier the leader registers itself and then waits, with
  # no deadline, for the devices of tasks that never come.
  ctx.coordination_service.cluster_register_with_barrier = True


def missing_peers(message: str) -> list:
  """The tasks a coordination-service error names, as ``worker-1``.

  Understands the registration barrier's timeout (the leader names the
  tasks that never registered), a heartbeat verdict (a task that stopped
  sending heartbeats: killed, or stopped by SIGSTOP, mid-training) and a
  failed call to the leader (a task that could not reach it).
  """
  for verdict in ("timed out task names:", "stopped sending heartbeats):"):
    if verdict in message:
      message = message.split(verdict, 1)[1]
      message = message.split("Additional GRPC error", 1)[0][:400]
      break
  else:
    if "from remote target" not in message:
      return []
    message = message.split("from remote target", 1)[1][:80]
  found = []
  for job, index in _TASK.findall(message):
    if f"{job}-{index}" not in found:
      found.append(f"{job}-{index}")
  return found


def peer_lost(error: Exception, phase: str, addresses: dict) -> errors.PeerLost:
  """``error`` (a coordination-service error) as one PeerLost line.

  Args:
    error: what TensorFlow raised.
    phase: what was being done ("strategy creation").
    addresses: task name -> address, to name each peer with its address.
  """
  names = missing_peers(str(error))
  return errors.PeerLost(
      f"{phase}: TensorFlow's coordination service gave up waiting",
      [f"{name} at {addresses[name]}" if name in addresses else name
       for name in names] or list(addresses))


# Where TensorFlow's coordination service records a SIGTERM that its own
# handler took (tsl's PreemptionNotifier, set up inside the strategy's
# constructor), as "/job:worker/task:0".
_PREEMPTION_NOTICE_KEY = "TF_DEFAULT_PREEMPTION_NOTICE_KEY"


def sigterm_taken(*, timeout_s: float) -> str:
  """The task (``worker-0``) whose SIGTERM TensorFlow's own handler took,
  or "" if none within ``timeout_s`` seconds (at least a millisecond):
  MultiWorkerMirroredStrategy's constructor replaces the process's SIGTERM
  handler with one that only records the signal, so such a SIGTERM never
  reaches the task. Call after the strategy exists; TensorFlow records the
  signal within about a second.
  """
  from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import errors as tf_errors  # pylint: disable=g-import-not-at-top
  try:
    value = context.context().get_config_key_value(
        _PREEMPTION_NOTICE_KEY, timeout_in_ms=max(1, int(timeout_s * 1000)))
  except tf_errors.OpError:
    return ""  # not recorded (a deadline, or no coordination service)
  found = re.search(r"/job:(\w+)/task:(\d+)", value)
  return f"{found.group(1)}-{found.group(2)}" if found else value
