"""The moments of a job at which the chaos sweep acts (tfdist.bench.chaos).

Owns :data:`PHASES` and, for each, how a trial's job is set up and when it acts:
at a random moment of start-up, of training (once a checkpoint exists) or of
shutdown (after the chief's result); or inside a window a slow volume widens
(tfdist.bench.slowed): a scheduled save slower than the stall deadline
(``slow-save``), the final save after ``fit`` (``after-fit``), or the restore of
a relaunch on a checkpoint (``restore``). In the last two the target is a peer
the chief needs there (a ps task under ps, a worker under multiworker). Imports
tfdist.training.checkpoint and tfdist.bench (jobs, slowed); no TensorFlow.
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Callable, Optional

from tfdist.bench import jobs as jobs_lib
from tfdist.bench import slowed
from tfdist.training import checkpoint as checkpoint_lib

CLASSIC = ("start-up", "training", "shutdown")
# A slow write or restore: the sweep acts within it.
SLOW = ("slow-save", "after-fit", "restore")
PHASES = (*CLASSIC, *SLOW)
# What each slow phase slows (by the sweep's slow_s: a save past the stall
# deadline, at least 10 s, and within its own, 2 x --peer_timeout), and by
# how much of it (a restore shares set-up's 2 x --peer_timeout).
_SLOW = {"slow-save": ({"writes": "2"}, 1.0),
         "after-fit": ({"writes": "final"}, 1.0),
         "restore": ({"restore": True}, 2 / 3)}
_WAIT_S = 180  # at most, for a phase to begin


def has_checkpoint(model_dir: str) -> bool:
  # TensorFlow's state file, renamed into place after a complete save.
  return os.path.exists(os.path.join(
      checkpoint_lib.checkpoint_dir(model_dir), "checkpoint"))


def job_for(phase: str, strategy: str, flags: list, *,
            slow_s: float) -> jobs_lib.Job:
  """The trial's job: in a slow phase, every task runs slowed."""
  if phase not in _SLOW:
    return jobs_lib.Job(strategy, flags)
  slows, share = _SLOW[phase]
  words = slowed.command(seconds=round(slow_s * share, 1), **slows)
  return jobs_lib.Job(strategy, flags, prefix=lambda name: words)


def candidates(phase: str, job: jobs_lib.Job) -> list:
  """The tasks a trial of ``phase`` may act on: any, or in after-fit and
  restore the peers the chief needs there."""
  names = sorted(job.task_names())
  if phase not in ("after-fit", "restore"):
    return names
  needed = "ps-" if job.strategy == "ps" else "worker-"
  return [n for n in names if n.startswith(needed) and n != job.primary]


def first_checkpoint(strategy: str, flags: list, model_dir: str) -> bool:
  """Trains a job of ``strategy`` until its first checkpoint, then kills
  it: what a restore trial's relaunch restores. Whether one was made."""
  job = jobs_lib.Job(strategy, flags)
  try:
    job.start()
    _until(lambda: has_checkpoint(model_dir), job)
  finally:
    job.kill()
  return has_checkpoint(model_dir)


def _until(reached: Callable[[], bool], job: jobs_lib.Job) -> bool:
  until = time.monotonic() + _WAIT_S
  while not reached() and job.alive(job.primary) and (
      time.monotonic() < until):
    time.sleep(0.05)  # a polling interval, not synchronisation
  return reached()


def phase_now(job: jobs_lib.Job, model_dir: str) -> str:
  if job.result(job.primary) is not None or not job.alive(job.primary):
    return "shutdown"
  if has_checkpoint(model_dir):
    return "training"
  return "start-up"


def wait_for(job: jobs_lib.Job, phase: str, model_dir: str,
             rng: random.Random, *, startup_s: float,
             slow_s: float) -> Optional[str]:
  """Returns at a random moment of ``phase`` (or when the job ended):
  the phase the moment is in."""
  if phase in _SLOW:
    began = _until(lambda: any(
        line.startswith(slowed.PREFIX) for line in job.output[job.primary]),
                   job)
    # Within the slow write or restore, before its last second.
    time.sleep(rng.uniform(0, slow_s * _SLOW[phase][1] - 1))  # the moment
    return phase if began and job.alive(job.primary) else phase_now(
        job, model_dir)
  if phase == "start-up":
    pause = rng.uniform(0, startup_s)
  else:
    _until((lambda: has_checkpoint(model_dir)) if phase == "training" else
           (lambda: job.result(job.primary) is not None), job)
    pause = rng.uniform(0, 2.0 if phase == "training" else 0.3)
  time.sleep(pause)  # the random moment itself
  return phase_now(job, model_dir)


def end_stopped(job: jobs_lib.Job, target: str) -> None:
  """Continues a stopped target once the others are gone; kills it if it
  does not exit on its own within 20 s."""
  job.signal(target, signal.SIGCONT)
  if job.wait([target], time.monotonic() + 20):
    job.signal(target, signal.SIGKILL)
    job.wait([target], time.monotonic() + 10)
