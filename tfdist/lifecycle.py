"""One task's whole life in a job: its role, its work and how it ends.

Owns :func:`perform`: plan the task's role
(tfdist.training.strategy.plan_role), then host (ps workers and ps tasks:
tfdist.training.hosting), evaluate (the evaluator: tfdist.training.evaluator)
or train (tfdist.training.loop, under the runtime of
tfdist.training.choose_runtime, which turns a peer lost at any moment after
TensorFlow starts into one line and a retried status), and return the result
(tfdist.fit returns it). And :func:`run`, the entry point's: print the result
as one JSON line; go on without stalled ps workers by re-executing the ps chief
(:func:`restart_without`, which leaves them a record that tells them, once the
job is done, to end clean); and end the process past TensorFlow's teardown
where that would wait for a peer. Every argument is plain: the entry point
(tfdist.app) reads the flags and the environment and hands them over. With
--min_workers, :func:`run` first agrees with the other workers on who trains
(tfdist.training.elastic), and a lost peer re-executes the task into a new
round instead of ending it. Imports tfdist.cli, cluster.specs, console, data,
errors, liveness (stall_watch, watchdog), model.contract and of
tfdist.training: choose_runtime, config, elastic, evaluator, hosting, loop,
monitor and strategy; TensorFlow only through them, once a task is known to
need it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Mapping, Optional, Sequence

from tfdist import cli
from tfdist import console
from tfdist import errors
from tfdist.cluster import specs as cluster_lib
from tfdist.data import sources
from tfdist.data.options import DataConfig
from tfdist.liveness import stall_watch
from tfdist.liveness import watchdog
from tfdist.model import contract
from tfdist.training import choose_runtime
from tfdist.training import elastic
from tfdist.training import evaluator
from tfdist.training import hosting
from tfdist.training import loop
from tfdist.training import strategy as strategy_lib
from tfdist.training.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Process:
  """How this process was started, so that it can start itself again.

  Attributes:
    executable: the interpreter's path (``sys.executable``).
    argv: the full command line (``sys.orig_argv``), interpreter first.
    environ: its environment (TF_CONFIG included).
  """
  executable: str
  argv: Sequence[str]
  environ: Mapping[str, str]


def restart_without(process: Process, workers: list,
                    model_dir: Optional[str]) -> None:
  """Re-executes this ps chief with a cluster that leaves out ``workers``
  (stalled, or lost by the end of training: see tfdist.liveness.stall_watch); it
  resumes from the last checkpoint in ``model_dir`` and trains with the other
  workers. Each worker left out finds a record there that tells it, once the job
  is done, to exit 0 (tfdist.training.hosting.record_left_out). Does not
  return."""
  task = cluster_lib.task_from_environ(process.environ)
  if model_dir:
    hosting.record_left_out(model_dir, task, workers)
  # The others wait for the restart (the chief's address is silent until
  # its preflight), not just the chief's usual grace.
  hosting.signal_restart(task, skip=workers)
  kept = [address for index, address in enumerate(task.cluster["worker"])
          if f"worker-{index}" not in workers]
  env = dict(process.environ, TF_CONFIG=cluster_lib.make_tf_config(
      dict(task.cluster, worker=kept), task.type, task.index))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(process.executable, list(process.argv), env)


def run(*, config: TrainConfig, data_config: DataConfig,
        user: contract.UserModel, task: Optional[cluster_lib.Task],
        process: Process) -> int:
  """Runs this task's part of the job to its end, prints a training or
  evaluating task's result as one JSON line; returns the exit status.

  A lost peer or Ctrl-C ends the process at once
  (tfdist.liveness.watchdog.exit_now): TensorFlow's teardown would first wait
  for the peers (its shutdown barrier, a collective's or a remote call's pending
  calls). So does a cluster task that is done, except under multiworker: every
  worker passed the final barrier, so all are alive, and the coordination
  service's leader must stay until the others have had the barrier's answer.

  Args:
    config: the training settings (checked).
    data_config: the data settings (checked).
    user: the model function and the user's loss, metrics, callbacks and
      optimizer (tfdist.model.contract.UserModel).
    task: this process's task from TF_CONFIG, or None.
    process: how this process was started (a ps chief restarts itself
      without stalled workers).
  """
  started_at = time.time()
  stall_watch.on_stalled_workers(
      lambda workers: restart_without(process, workers, config.model_dir))
  # The run's runtime, with what it keeps
  # (tfdist.training.runtime.Runtime.keep), lives until the process ends.
  kept = []
  membership = None
  try:
    if config.min_workers:
      membership = _elastic_round(config, task)
      if membership is None:  # done without this task
        return errors.EXIT_OK
      task = membership.task
      config = dataclasses.replace(config, batch_size=membership.batch_size)
    result = perform(config=config, data_config=data_config, user=user,
                     task=task, kept=kept, started_at=started_at)
    status = result.get("status", errors.EXIT_OK)
    if "role" not in result:
      console.result(result)
    if task is not None and config.strategy != "multiworker":
      # Done, outputs written: TensorFlow's teardown would wait for any
      # peer's pending remote call, forever for a stopped peer.
      watchdog.exit_now(status)
    return status
  except errors.PeerLost as e:
    if membership is not None:  # the members regroup without the lost one
      elastic.regroup(e.phase, executable=process.executable,
                      argv=process.argv, environ=process.environ)
    watchdog.exit_now(cli.report(e))
  except errors.Preempted as e:
    joining = membership and elastic.join_request(
        config.model_dir, membership.generation + 1)
    if joining:  # the members saved; they regroup with the one that joins
      elastic.regroup(f"{joining} (saved step {e.step})",
                      executable=process.executable, argv=process.argv,
                      environ=process.environ)
    raise
  except KeyboardInterrupt:
    console.info("interrupted (SIGINT); exiting")
    watchdog.exit_now(errors.EXIT_INTERRUPTED)
  finally:
    stall_watch.on_stalled_workers(None)  # this run's, not the next one's


def _elastic_round(
    config: TrainConfig,
    task: Optional[cluster_lib.Task]) -> Optional[elastic.Membership]:
  """--min_workers: the members of this round (tfdist.training.elastic),
  checked and agreed before TensorFlow starts; None: the job finished
  without this task."""
  elastic.check_cluster(task, min_workers=config.min_workers,
                        batch_size=config.batch_size)
  return elastic.agree(task, min_workers=config.min_workers,
                       model_dir=config.model_dir,
                       batch_size=config.batch_size,
                       timeout=config.peer_timeout)


def perform(*, config: TrainConfig, data_config: DataConfig,
            user: contract.UserModel, task: Optional[cluster_lib.Task],
            kept: Optional[list] = None,
            started_at: Optional[float] = None) -> dict:
  """This task's part of the job: host, evaluate or train. Returns the result of
  a training task (tfdist.training.loop.run) or the evaluator
  (tfdist.training.evaluator.run); a hosting task's is its name, ``"role":
  "host"`` and the ``status`` it ends with. ``kept`` receives the training
  runtime (with what it keeps: tfdist.training.runtime.Runtime.keep), to hold
  until the process ends; ``started_at`` (time.time()) is when this process
  started, which a left-out worker's record is compared with (default: now)."""
  started_at = time.time() if started_at is None else started_at
  role = strategy_lib.plan_role(config.strategy, task)
  if role == strategy_lib.HOST:
    status = hosting.host_until_done(task, peer_timeout=config.peer_timeout,
                                     model_dir=config.model_dir,
                                     since=started_at)
    from tfdist.training import monitor  # pylint: disable=g-import-not-at-top
    # Hosting tasks print no result: their memory is this line (read by
    # tfdist.bench).
    console.info(f"{task.name} peak memory {monitor.peak_rss_mb()} MiB")
    return {"task": task.name, "role": "host", "status": status}
  dataset = sources.open_source(data_config, seed=config.seed)
  if role == strategy_lib.EVALUATE:
    return evaluator.run(
        user=user, dataset=dataset, model_dir=config.model_dir,
        batch_size=config.eval_batch_size, timeout=config.eval_timeout,
        task_name=task.name)
  runtime = choose_runtime.create(config, task)
  if kept is not None:
    kept.append(runtime)
  with runtime.running():
    return loop.run(config, user=user, dataset=dataset, task=task,
                    runtime=runtime)
