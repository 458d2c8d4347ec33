"""Barriers across the tasks of a multi-worker job, each with a deadline.

Owns: waiting until every chief/worker task of a MultiWorkerMirroredStrategy
job has reached the same point, through TensorFlow's coordination service
(which the strategy starts; its leader is the chief, else worker 0). Imports
tfdist.errors; TensorFlow only inside :func:`wait_for_peers`.

Two points need one:

* the start of the timed span of training, so that no worker's
  ``train_seconds`` includes waiting for a peer that started later;
* the end of the run, so that the coordination service's leader does not
  exit while another task still runs: that task would lose its heartbeat
  target and log an error-level ``Failed to send RPC to coordination
  service`` after a successful run.
"""

from __future__ import annotations

from tfdist.errors import PeerLost


def wait_for_peers(barrier_id: str, *, timeout: float,
                   task_name: str = "") -> None:
  """Blocks until every coordinated task has called this with ``barrier_id``.

  Call from every chief/worker task of a multi-worker job (the coordination
  service must be configured: the strategy was created from a TF_CONFIG
  cluster); each id serves once.

  Raises:
    PeerLost: a task did not arrive within ``timeout`` seconds, or failed.
  """
  from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import errors as tf_errors  # pylint: disable=g-import-not-at-top
  try:
    context.context().wait_at_barrier(barrier_id, int(timeout * 1000))
  # FailedPrecondition: "Agent must be in CONNECTED state. It is currently
  # in ERROR": the coordination service already reported a peer lost.
  except (tf_errors.DeadlineExceededError, tf_errors.UnavailableError,
          tf_errors.AbortedError, tf_errors.InternalError,
          tf_errors.FailedPreconditionError) as e:
    first = (e.message or type(e).__name__).splitlines()[0][:200]
    raise PeerLost(f"{task_name or 'this task'}: not every task reached "
                   f"{barrier_id!r} within {timeout:g} s ({first})",
                   what_next="relaunch the job") from None
