"""The ps chief's ClusterCoordinator, stopped in order once training is done.

Owns :func:`stop`. TensorFlow's ClusterCoordinator keeps working after
``fit``: a worker lost near the end is recovered by a thread that connects
the cluster again (``update_server_def``, which registers every function
with every task) once the worker is back, and that worker's closure thread
waits for the recovery, then creates its resources again (its dataset
iterators). A job told that it is over meanwhile makes that work fail
against tasks that have exited: E-level lines ("Failed to register function
remotely", "Cluster update failed ... Retrying") and a closure thread's
traceback after a successful training. :func:`stop` waits, with a deadline,
until no recovery is pending or running, then stops the coordinator's
threads; only then may the chief tell the others (tfdist.hosting).

It reads private attributes of the coordinator (TensorFlow has no public
way): where they differ it stops nothing and says so in one line. Imports
tfdist.console; TensorFlow's coordinator only through the strategy given.
"""

from __future__ import annotations

import threading
import time

from tfdist import console

# How often the recovery's state is read: a polling interval.
_POLL_S = 0.1
# TensorFlow's name of each worker's closure thread.
_CLOSURE_THREADS = "WorkerClosureProcessingLoop-"


def _recovering(cluster) -> bool:
  """Whether a worker's recovery is pending or running (private state)."""
  pending = cluster.failure_handler._cluster_due_for_update_or_finish  # pylint: disable=protected-access
  return pending.is_set() or any(
      worker._is_dead_with_error for worker in cluster.workers)  # pylint: disable=protected-access


def stop(strategy, *, timeout: float) -> None:
  """Stops ``strategy``'s ClusterCoordinator (if ``fit`` made one) once no
  worker's recovery is pending or running, or after ``timeout`` seconds
  (a worker that is not back by then: the coordinator stops anyway)."""
  coordinator = getattr(strategy, "_cluster_coordinator", None)
  if coordinator is None:
    return  # no fit ran
  try:
    cluster = coordinator._cluster  # pylint: disable=protected-access
    recovering = _recovering(cluster)
  except AttributeError as e:
    console.info(f"cannot stop this TensorFlow's ClusterCoordinator ({e}); "
                 "a worker's recovery may still log errors")
    return
  deadline = time.monotonic() + timeout
  if recovering:
    console.info("waiting for a worker's recovery to end before telling "
                 "the others that training is over")
  while recovering and time.monotonic() < deadline:
    time.sleep(_POLL_S)
    recovering = _recovering(cluster)
  # Stopping takes the recovery's lock: a recovery still running (a worker
  # not back) would block it. A daemon thread: the process ends anyway.
  stopper = threading.Thread(target=cluster.stop, daemon=True,
                             name="stop the ClusterCoordinator")
  stopper.start()
  # Then its threads end (a closure still creating a worker's resources
  # finishes or is cancelled), before the others may exit.
  for thread in [stopper, *(t for t in threading.enumerate()
                            if t.name.startswith(_CLOSURE_THREADS))]:
    thread.join(max(0.0, deadline - time.monotonic()))
