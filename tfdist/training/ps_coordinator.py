"""The ps chief's ClusterCoordinator, stopped in order once training is done.

Owns :func:`stop`. TensorFlow's ClusterCoordinator keeps working after ``fit``:
a worker lost near the end is recovered by a thread that connects the cluster
again (``update_server_def``, which registers every function with every task)
once the worker is back, and that worker's closure thread waits for the
recovery, then creates its resources again (its dataset iterators). A job told
that it is over meanwhile makes that work fail against tasks that have exited:
E-level lines ("Failed to register function remotely", "Cluster update failed
... Retrying") and a closure thread's traceback after a successful training. At
``fit``'s end the chief waits, with a deadline, until no recovery is pending or
running (:func:`recovered_at_fit_end`: TensorFlow runs each new eager op as a
function, and registers every new function with every task: the summary writers'
close, the final save, the test accuracy do); :func:`stop` then stops the
coordinator's threads; only then may the chief tell the others
(tfdist.training.hosting). A worker that is not back by the deadline still fails
those registrations (E-level lines that name it), and so does a worker killed or
stopped after its last step (the coordinator never learns of it):
:func:`recovered_at_fit_end` names both to the chief, which then finishes
without them (tfdist.training.runtime).

It reads private attributes of the coordinator (TensorFlow has no public
way): where they differ it stops nothing and says so in one line. Imports
tfdist.console and tfdist.cluster.preflight (is a worker's server up?);
TensorFlow inside a function, its coordinator only through the strategy
given.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Mapping

from tfdist import console
from tfdist.cluster import preflight

# How often the recovery's state is read: a polling interval.
_POLL_S = 0.1
# TensorFlow's name of each worker's closure thread.
_CLOSURE_THREADS = "WorkerClosureProcessingLoop-"


def _recovering(cluster) -> bool:
  """Whether a worker's recovery is pending or running (private state)."""
  pending = cluster.failure_handler._cluster_due_for_update_or_finish  # pylint: disable=protected-access
  return pending.is_set() or any(
      worker._is_dead_with_error for worker in cluster.workers)  # pylint: disable=protected-access


def _cluster(strategy):
  """The coordinator's cluster (private), or None without one."""
  coordinator = getattr(strategy, "_cluster_coordinator", None)
  if coordinator is None:
    return None  # no fit ran
  try:
    cluster = coordinator._cluster  # pylint: disable=protected-access
    _recovering(cluster)
  except AttributeError as e:
    console.info(f"cannot read this TensorFlow's ClusterCoordinator ({e}); "
                 "a worker's recovery may still log errors")
    return None
  return cluster


def wait_for_recovery(strategy, *, timeout: float) -> bool:
  """Waits until no worker's recovery is pending or running, at most
  ``timeout`` seconds; returns whether none is. Call at ``fit``'s end:
  every new function (the final save's, the test accuracy's) is
  registered with every task, and a worker still away would fail each
  registration in an E-level line."""
  cluster = _cluster(strategy)
  if cluster is None or not _recovering(cluster):
    return True
  console.info("waiting for a lost worker's recovery to end before the "
               "final save")
  deadline = time.monotonic() + timeout
  while _recovering(cluster):
    if time.monotonic() >= deadline:
      return False
    time.sleep(_POLL_S)
  return True


def stop(strategy, *, timeout: float) -> None:
  """Stops ``strategy``'s ClusterCoordinator (if ``fit`` made one) once no
  worker's recovery is pending or running (:func:`wait_for_recovery`), or
  after ``timeout`` seconds (a worker that is not back by then: the
  coordinator stops anyway); then waits for its threads, within the same
  ``timeout``."""
  cluster = _cluster(strategy)
  if cluster is None:
    return
  deadline = time.monotonic() + timeout
  wait_for_recovery(strategy, timeout=timeout)
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


def lost_workers(strategy, workers: Mapping[str, str]) -> list:
  """The names (``worker-1``) of the workers the coordinator holds lost,
  and of those of ``workers`` (name -> address) whose TensorFlow server
  does not answer now: killed or stopped after their last step, which the
  coordinator never sees (private state; none of the first kind when it
  cannot be read)."""
  cluster = _cluster(strategy)
  lost = {f"worker-{worker.worker_index}" for worker in
          (cluster.workers if cluster is not None else ())
          if worker._is_dead_with_error}  # pylint: disable=protected-access
  lost.update(preflight.not_answering(workers))
  return sorted(lost)


def recovered_at_fit_end(strategy, *, timeout: float,
                         workers: Mapping[str, str],
                         on_lost: Callable[[list], None]):
  """A Keras callback of ``fit`` whose ``on_train_end`` waits for a lost
  worker's recovery (:func:`wait_for_recovery`; its ``recovered`` says
  whether none was left then), then calls ``on_lost`` with the workers
  still lost (:func:`lost_workers` of ``workers``), if any. Put it before
  every callback that runs an op at ``on_train_end`` (TensorBoard's)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class _RecoveredAtFitEnd(tf.keras.callbacks.Callback):
    # Reads no batch logs (RemoteValues under ps).
    _supports_tf_logs = True
    recovered = True

    def on_train_end(self, logs=None):
      del logs
      self.recovered = wait_for_recovery(strategy, timeout=timeout)
      lost = lost_workers(strategy, workers)
      if lost:
        on_lost(lost)

  return _RecoveredAtFitEnd()
