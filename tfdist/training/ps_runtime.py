"""The ps strategy's runtime: the chief coordinates, workers and ps host.

:class:`ParameterServerRuntime` is the :class:`tfdist.training.runtime.Runtime`
of a ps chief (or of the in-process cluster without TF_CONFIG): the coordinator
dispatches whole steps to whichever worker is free, a stall watch goes on
without a stalled worker, a worker lost near the end is waited for or finished
without, the variables are split over the ps tasks (tfdist.training.sharding),
and when training is done the chief stops its coordinator before it tells the
workers and ps tasks. Imports tfdist.training.config, console,
training.ps_coordinator, training.hosting, training.runtime, training.sharding
and liveness.stall_watch; TensorFlow only inside methods.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from typing import Callable, Optional

from tfdist import console
from tfdist.liveness import stall_watch as stall_watch_lib
from tfdist.training import hosting
from tfdist.training import ps_coordinator
from tfdist.training import sharding
from tfdist.training.runtime import Runtime


class ParameterServerRuntime(Runtime):
  """The chief coordinates; workers run its steps, ps tasks hold variables."""
  may_hold_gil = True
  _fit_end = None  # the callback that waited for a lost worker at fit's end

  @property
  def num_replicas(self) -> int:
    # The coordinator dispatches whole steps to whichever worker is free.
    if self.task is None:
      return self.config.local_ps_workers
    return len(self.task.cluster["worker"])

  @property
  def global_batch(self) -> int:
    # Each step is one worker's batch.
    return self.config.batch_size

  @property
  def shuffle_seed(self) -> Optional[int]:
    # The workers' pipelines cannot tell each other apart: a fresh seed each.
    return None

  def variable_partitioner(self):
    config = self.config
    return sharding.partitioner(
        variable_partitioner=config.variable_partitioner,
        min_shard_bytes=config.min_shard_bytes,
        variable_shards=config.variable_shards,
        ps_tasks=sharding.num_ps(self.task))

  @functools.cached_property
  def stall_watch(self) -> Optional[stall_watch_lib.StallWatch]:
    """The chief's watch for stalled workers (None without a cluster)."""
    if self.task is None:
      return None
    return stall_watch_lib.StallWatch(self.task,
                                stall_timeout=self.config.stall_timeout)

  def progress_watches(self, *, saved_step: Callable[[], int],
                       target_step: int) -> list:
    # A stalled worker fails no step: the epoch's end would wait forever.
    # A worker lost near the end is back before fit's end (tfdist.
    # coordinator), or the chief goes on without it.
    watches = [self.stall_watch.callback()] if self.stall_watch else []
    workers = {f"worker-{index}": address for index, address
               in enumerate(self.task.cluster["worker"])} if self.task else {}
    self._fit_end = ps_coordinator.recovered_at_fit_end(
        self.strategy, timeout=self.config.peer_timeout, workers=workers,
        on_lost=lambda lost: self._finish_without(lost, saved_step(),
                                                  target_step))
    return [*watches, self._fit_end]

  def _finish_without(self, lost: list, saved_step: int,
                      target_step: int) -> None:
    # Every new op or function of the chief from now on (the summary
    # writers' close, the final save, the test accuracy, the garbage
    # collector's) is registered with every task, a lost worker too: an
    # E-level line each after a successful training. With the target step
    # saved (or past it: a lost worker's step may be applied and retried),
    # the chief finishes without it, as without a stalled worker (it
    # resumes from that checkpoint at once); else it goes on.
    if saved_step >= target_step:
      console.info(f"{', '.join(lost)} did not come back by the end of "
                   "training; chief-0 finishes without it from the "
                   f"checkpoint of step {saved_step}")
      stall_watch_lib.go_on_without(lost)

  @contextlib.contextmanager
  def fitting(self):
    with super().fitting():
      yield
    if self.task is not None:
      # Freeing a function removes it from every task, a ps task gone too:
      # an E-level line each. fit's garbage goes now, while the final save
      # (which a lost ps task fails, a retried status) is still to come;
      # after it nothing is collected, so a ps task lost after the chief's
      # last read leaves a clean end. The process exits soon (lifecycle).
      gc.collect()
      gc.disable()

  @contextlib.contextmanager
  def save_deadline(self, model):
    # First the steps in flight, so that the saved variables and step
    # counter agree: waiting for the workers, which the stall watch watches
    # (it goes on without a stalled one). Then the write, which is no
    # stall: its own deadline, by the bytes (tfdist.liveness.deadlines).
    coordinator = getattr(model, "_cluster_coordinator", None)
    watch = self.stall_watch
    if coordinator is not None:
      with watch.watching() if watch else contextlib.nullcontext():
        coordinator.join()
    with (watch.writing() if watch else contextlib.nullcontext()), \
        super().save_deadline(model):
      yield

  def peer_preemption(self):
    # A worker or ps task that gets SIGTERM asks the chief to save and stop
    # the job (they cannot save: the chief drives).
    if self.task is None:
      return None
    return functools.partial(hosting.preemption_requested, self.task)

  def on_preempted(self) -> None:
    # The workers and ps exit 143 with the chief, not a minute later.
    hosting.signal_done(self.task, preempted=True)

  def finish(self) -> None:
    # In order: nothing may act on a worker stopped from now on; a worker
    # killed near the end may be restarting: its recovery ends, then it
    # is told, within the peers' deadline; the others are told last.
    if self.stall_watch is not None:
      self.stall_watch.disarm()
    # A worker not back by fit's end (it had the peers' deadline) is not
    # waited for again.
    recovered = self._fit_end is None or self._fit_end.recovered
    until = time.monotonic() + (self.config.peer_timeout if recovered
                                else 0.0)
    ps_coordinator.stop(self.strategy, timeout=until - time.monotonic())
    hosting.signal_done(self.task,
                        restart_timeout=max(0.0, until - time.monotonic()))
