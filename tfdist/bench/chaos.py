r"""The chaos sweep: real jobs, one task killed, stopped or signalled.

    python -m tfdist.bench.chaos --trials=50 --out=chaos.json

Each trial starts a real job on loopback (tfdist.bench.jobs: multiworker
with 2 workers; ps with a chief, 2 workers and 1 ps; ps-2ps, the same with
2 ps tasks; multiworker-elastic, 3 workers with --min_workers=2; sweep()
defaults to the first two) training MNIST with a
--model_dir and frequent checkpoints, and at a random moment of one of
its phases (tfdist.bench.windows: start-up, training, shutdown, and the
windows a slow volume widens: a save slower than the stall deadline, the
final save after ``fit``, a relaunch's restore) sends SIGKILL, SIGSTOP or
SIGTERM to a random task (in the last two, a peer the chief needs there).
It measures how long every other task takes to exit and with which
status, continues (SIGCONT) a stopped task once the others are gone,
relaunches an unfinished job that left a checkpoint to see whether it
resumes, and reads every checkpoint left. A *hang* is a task alive past
its deadline (:func:`deadline_s`, from the action or the end of the
task's own start-up): killed, and counted. Every status must be explained
(:data:`MEANINGS`); a status of 1-127 (the program's verdict, which fails a
Kubernetes job for good) is a *permanent* one, which no injected fault
(every one is transient) may cause: counted, in the trial's job and its
relaunch, as a failure of the sweep. A finished job must end clean (no
E-level line or traceback after the chief's last epoch:
tfdist.bench.log_noise).

``--strategies``, ``--phases``, ``--actions`` and ``--targets`` narrow
the sweep, e.g. to ps workers stopped in training: the summary then also
counts the jobs that finished without them, in place.

Prints one line per trial and a summary table (per strategy and phase:
trials, hangs, seconds until every other task exited); ``--out`` writes
every trial as a JSON line as it ends. Every trial trains on the MNIST
sample bundled with tfdist, whatever is on this machine. Imports
tfdist.bench.gone (workers gone for good under --min_workers),
tfdist.bench.jobs, tfdist.bench.windows, tfdist.data (where the sample is),
tfdist.errors and tfdist.cli; no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from typing import Optional

from tfdist import cli
from tfdist import data as data_lib
from tfdist.bench import gone
from tfdist.bench import jobs as jobs_lib
from tfdist.bench import windows
from tfdist.errors import ConfigError, retried

PHASES = windows.PHASES
ACTIONS = {"SIGKILL": signal.SIGKILL, "SIGSTOP": signal.SIGSTOP,
           "SIGTERM": signal.SIGTERM}
# What each exit status means; any other (2 too) is unexplained.
MEANINGS = {
    0: "finished (not after a SIGTERM that came while the task worked)",
    130: "interrupted",
    137: "SIGKILL (the target, or a stopped target killed at trial end)",
    142: "the sentinel's SIGALRM: TensorFlow held the main thread (under "
         "ps, registering a function with a stopped task) past a phase's "
         "deadline or a signal's grace; its line says which",
    143: "preempted (SIGTERM): the job saved a checkpoint and stopped",
    200: "a lost peer or an expired peer deadline (retried)",
}


@dataclasses.dataclass(frozen=True)
class Settings:
  """The training each trial runs, and the deadlines it is held to."""
  peer_timeout: float = 10.0
  heartbeat_timeout: float = 10.0
  epochs: int = 2
  steps_per_epoch: int = 30
  checkpoint_every_steps: int = 5
  startup_s: float = 10.0  # start-up actions fall in [0, startup_s)
  # How much slower the slow phases' write or restore is: past the stall
  # deadline (at least 10 s), within the write's own (2 x peer_timeout).
  slow_s: float = 12.0
  # How long a task may take to start (TensorFlow's import, the data) before
  # it waits for its peers; minutes on a loaded machine.
  startup_limit_s: float = 180.0
  # The data, named: never an MNIST prepared in ~/tensorflow_datasets.
  mnist_dir: str = data_lib.BUNDLED_MNIST_DIR

  def flags(self, model_dir: str) -> list:
    return [f"--mnist_dir={self.mnist_dir}", f"--epochs={self.epochs}",
            f"--steps_per_epoch={self.steps_per_epoch}",
            f"--model_dir={model_dir}", "--checkpoint_every_epochs=0",
            f"--checkpoint_every_steps={self.checkpoint_every_steps}",
            f"--peer_timeout={self.peer_timeout:g}",
            f"--heartbeat_timeout={self.heartbeat_timeout:g}", "--verbose=2"]


def deadline_s(strategy: str, settings: Settings) -> float:
  """How long after the action every other task may take to exit (after
  its own start-up, if it was still starting: see :func:`_wait_for_exits`).

  multiworker: preflight (--peer_timeout), then the registration or barrier
  deadline (--peer_timeout) or the heartbeat (--heartbeat_timeout); with
  --min_workers (multiworker-elastic), the others' round and the rest of
  the training too. ps: also the hosting tasks' wait for a silent chief
  and the chief's wait to tell a restarting worker (--peer_timeout each),
  and a chief that goes on without a stalled worker: its restart and the
  rest of the training (60 s). Plus 30 s for the exit.
  """
  if jobs_lib.min_workers(strategy):
    return gone.deadline_s(peer_timeout=settings.peer_timeout,
                           heartbeat_timeout=settings.heartbeat_timeout)
  if strategy == "multiworker":
    return 2 * settings.peer_timeout + settings.heartbeat_timeout + 30
  return 3 * settings.peer_timeout + settings.heartbeat_timeout + 60 + 30


def _wait_for_exits(job: jobs_lib.Job, names: list, acted_at: float,
                    deadline: float, settings: Settings):
  """Waits until every task of ``names`` exited.

  Each has ``deadline`` seconds from the action or, if it was still
  starting then (importing TensorFlow, which no peer's loss can shorten),
  from when it began waiting for its peers (at most
  ``settings.startup_limit_s`` after its start). Returns (the tasks alive
  past their deadline, task name -> when its deadline began).
  """
  counts_from = {}  # name -> when its deadline began
  while True:
    now = time.monotonic()
    alive = [name for name in names if job.alive(name)]
    for name in alive:
      if name not in counts_from and (
          job.waits_for_peers(name)
          or now >= job.started_at[name] + settings.startup_limit_s):
        counts_from[name] = max(acted_at, now)
    late = [name for name in alive if name in counts_from
            and now >= counts_from[name] + deadline]
    if len(late) == len(alive):
      return late, counts_from
    time.sleep(0.25)  # a polling interval, not synchronisation


def _explained(status: Optional[int], errors: list) -> bool:
  if status not in MEANINGS:
    return False
  # A lost peer or a deadline is told in one error line.
  return status not in (142, 200) or bool(errors)


def run_trial(index: int, strategy: str, phase: str, action: str,
              settings: Settings, workdir: str, rng: random.Random,
              relaunch: bool = True, targets=None) -> dict:
  """One trial; returns its record (see the module docstring). The target
  is a random task (tfdist.bench.windows.candidates), of the jobs in
  ``targets`` (e.g. ``("worker",)``) if given."""
  model_dir = os.path.join(workdir, f"trial-{index}")
  flags = settings.flags(model_dir)
  if phase == "restore":  # what the job restores
    windows.first_checkpoint(strategy, flags, model_dir)
  job = windows.job_for(phase, strategy, flags, slow_s=settings.slow_s)
  pool = windows.candidates(phase, job)
  target = rng.choice([n for n in pool if targets is None
                       or n.rsplit("-", 1)[0] in targets] or pool)
  record = {"trial": index, "strategy": strategy, "phase": phase,
            "action": action, "target": target}
  try:
    job.start()
    record["acted_in"] = windows.wait_for(
        job, phase, model_dir, rng, startup_s=settings.startup_s,
        slow_s=settings.slow_s)
    acted_at = time.monotonic()
    target_worked = job.status(target) is None  # not exited yet
    job.signal(target, ACTIONS[action])
    watched = [n for n in job.processes
               if n != target or action == "SIGTERM"]
    hung, counts_from = _wait_for_exits(job, watched, acted_at,
                                        deadline_s(strategy, settings),
                                        settings)
    # Tasks whose deadline began after their start-up, and how much later.
    record["startup_s"] = {name: round(at - acted_at, 1)
                           for name, at in counts_from.items()
                           if at - acted_at >= 1}
    for name in hung:
      job.signal(name, signal.SIGKILL)
    if action == "SIGSTOP":
      windows.end_stopped(job, target)
    job.wait(list(job.processes), time.monotonic() + 10)
    others = [n for n in watched if n != target]
    record.update(_outcome(job, acted_at, others, hung))
    if jobs_lib.min_workers(strategy):
      record.update(gone.outcome(job, others))
    if (action == "SIGTERM" and target_worked and job.status(target) == 0
        and min(job.done_at(target), job.done_at(job.primary)) > acted_at
        and acted_at < job.training_ended_at()):
      record["unexplained"].append(target)  # swallowed while it trained
    # Under --min_workers the next worker by rank leads a primary gone.
    finisher = (others[0] if jobs_lib.min_workers(strategy)
                and target == job.primary else job.primary)
    if record["statuses"].get(finisher) == 0:
      noise = job.noise_after_training(finisher) or []
      record.update(noise_after_training=len(noise), noise=noise[:3])
    # A ps job that went on without a stopped worker (no relaunch).
    record["healed"] = (jobs_lib.strategy_of(strategy) == "ps"
                        and action == "SIGSTOP"
                        and target.startswith("worker-")
                        and record["statuses"].get(job.primary) == 0)
  finally:
    job.kill()
  if (relaunch and record["statuses"].get(job.primary) != 0
      and not record.get("finished_without")
      and windows.has_checkpoint(model_dir)):
    record.update(_relaunch(strategy, settings, model_dir))
  record["checkpoints_readable"] = jobs_lib.checkpoints_readable(model_dir)
  shutil.rmtree(model_dir, ignore_errors=True)
  return record


def permanent(record: dict) -> list:
  """The tasks of a trial (its job's, its relaunch's) that exited with a
  program's verdict (1-127): what a transient fault must never cause."""
  return [f"{name}={status}" for name, status in (
      *record["statuses"].items(),
      *(("relaunch " + name, status) for name, status in
        record.get("relaunch_statuses", {}).items()))
          if status and not retried(status)]


def _outcome(job: jobs_lib.Job, acted_at: float, others: list,
             hung: list) -> dict:
  statuses = {name: job.status(name) for name in job.processes}
  exits = [job.exited_at[n] - acted_at for n in others
           if n in job.exited_at and n not in hung]
  return {
      "seconds_to_exit": round(max(exits, default=0.0), 1),
      "statuses": statuses,
      "hangs": hung,
      "unexplained": [n for n, s in statuses.items()
                      if not _explained(s, job.error_lines(n))],
      "lines": {n: job.error_lines(n)[:1] for n in job.processes
                if job.error_lines(n)},
  }


def _relaunch(strategy: str, settings: Settings, model_dir: str) -> dict:
  """Runs the job again on ``model_dir``: did it resume and finish?"""
  had_checkpoint = windows.has_checkpoint(model_dir)
  job = jobs_lib.Job(strategy, settings.flags(model_dir))
  try:
    job.start()
    hung = job.wait(list(job.processes), time.monotonic() + 240)
    result = job.result(job.primary)
    start_step = json.loads(result)["start_step"] if result else None
    failed = {n: job.output[n][-3:] for n in job.processes
              if job.status(n) != 0}
    return {"relaunch_status": job.status(job.primary),
            "relaunch_statuses": {n: job.status(n) for n in job.processes},
            "relaunch_hangs": hung, "relaunch_failed": failed,
            "resumed": bool(had_checkpoint and start_step)}
  finally:
    job.kill()


def plan(trials: int, seed: int, strategies=tuple(jobs_lib.SHAPES),
         exclude=(), phases=PHASES, actions=tuple(ACTIONS)) -> list:
  """(strategy, phase, action) per trial: every combination (but those in
  ``exclude``) in turn, in an order shuffled by ``seed``."""
  combos = [(s, p, a) for s in strategies for p in phases for a in actions
            if (s, p, a) not in exclude]
  random.Random(seed).shuffle(combos)
  return [combos[i % len(combos)] for i in range(trials)]


def summary(records: list) -> str:
  """The Markdown table: per strategy and phase, trials, hangs, the
  seconds until every other task exited (median, max), unexplained
  statuses, finished jobs that ended clean, relaunches that resumed."""
  rows = ["| strategy | phase | trials | hangs | exit s (median / max) | "
          "unexplained | permanent | clean / finished | "
          "resumed / relaunched |",
          "|---|---|---|---|---|---|---|---|---|"]
  groups = {}
  for r in records:
    groups.setdefault((r["strategy"], r["acted_in"]), []).append(r)
  for (strategy, phase), group in sorted(groups.items()):
    times = [r["seconds_to_exit"] for r in group]
    relaunched = [r for r in group if "resumed" in r]
    rows.append(
        f"| {strategy} | {phase} | {len(group)} | "
        f"{sum(len(r['hangs']) for r in group)} | "
        f"{statistics.median(times):.1f} / {max(times):.1f} | "
        f"{sum(len(r['unexplained']) for r in group)} | "
        f"{sum(len(permanent(r)) for r in group)} | "
        f"{_clean(group)} | "
        f"{sum(r['resumed'] for r in relaunched)} / {len(relaunched)} |")
  stalled = [r for r in records
             if r["acted_in"] == "training" and "healed" in r
             and jobs_lib.strategy_of(r["strategy"]) == "ps"
             and r["action"] == "SIGSTOP"
             and r["target"].startswith("worker-")]
  if stalled:
    rows.append(f"\nps workers stopped in training: "
                f"{sum(r['healed'] for r in stalled)} of {len(stalled)} jobs "
                "finished without them, in place")
  rows += gone.summary(records)
  return "\n".join(rows)


def _clean(records: list) -> str:
  """"clean / finished": finished jobs with no noise after training."""
  finished = [r for r in records if "noise_after_training" in r]
  clean = sum(r["noise_after_training"] == 0 for r in finished)
  return f"{clean} / {len(finished)}"


def sweep(trials: int, *, seed: int, settings: Settings = Settings(),
          strategies=tuple(jobs_lib.SHAPES), relaunch: bool = True,
          exclude=(), phases=PHASES, actions=tuple(ACTIONS), targets=None,
          report=lambda record: print(_one_line(record))) -> list:
  """Runs ``trials`` trials; returns their records (each given to
  ``report`` as it ends). ``strategies``, ``phases``, ``actions`` and
  ``targets`` (job names) narrow what is tried."""
  rng = random.Random(seed)
  workdir = tempfile.mkdtemp(prefix="tfdist-chaos-")
  records = []
  try:
    for index, (strategy, phase, action) in enumerate(
        plan(trials, seed, strategies, exclude, phases, actions)):
      record = run_trial(index, strategy, phase, action, settings, workdir,
                         rng, relaunch=relaunch, targets=targets)
      records.append(record)
      report(record)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  return records


def _one_line(r: dict) -> str:
  statuses = " ".join(f"{n}={s}" for n, s in r["statuses"].items())
  relaunched = (f" relaunch={r['relaunch_status']} resumed={r['resumed']}"
                if "resumed" in r else "")
  noise = (f" noise_after_training={r['noise_after_training']}"
           if "noise_after_training" in r else "")
  noise += gone.one_line(r)
  noise += "".join(f" PERMANENT {p}" for p in permanent(r))
  startup = "".join(f" ({n} was still starting for {s} s)"
                    for n, s in r.get("startup_s", {}).items())
  return (f"trial {r['trial']}: {r['strategy']} {r['action']} {r['target']} "
          f"in {r['acted_in']}: others exited in {r['seconds_to_exit']} s"
          f"{startup} "
          f"[{statuses}] hangs={len(r['hangs'])} "
          f"checkpoints_readable={r['checkpoints_readable']}{relaunched}"
          f"{noise}")


# What a sweep may be narrowed to (flags of main(), arguments of sweep()).
_NARROWING = {"strategies": (*jobs_lib.SHAPES, *jobs_lib.MORE_SHAPES),
              "phases": PHASES,
              "actions": tuple(ACTIONS),
              "targets": ("chief", "worker", "ps")}


def _narrowing(args) -> dict:
  """--strategies, --phases, --actions and --targets as sweep()'s
  arguments; ConfigError on a name it does not know."""
  chosen = {}
  for name, choices in _NARROWING.items():
    value = getattr(args, name)
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    wrong = [v for v in names if v not in choices]
    if wrong or not names:
      raise ConfigError(f"--{name}={value}: write a comma list of "
                        f"{', '.join(choices)}")
    chosen[name] = names
  return chosen


def main(argv=None) -> int:
  parser = cli.OneLineParser(prog="python -m tfdist.bench.chaos",
                             description=__doc__.split("\n\n")[0])
  parser.add_argument("--trials", type=int, default=50)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no_relaunch", action="store_true",
                      help="skip relaunching unfinished jobs")
  parser.add_argument("--epochs", type=int, default=Settings.epochs)
  parser.add_argument("--steps_per_epoch", type=int,
                      default=Settings.steps_per_epoch,
                      help="more steps give training a wider window (on an "
                           "idle machine the default trains in about a "
                           "second, so most late actions land in shutdown)")
  for name, choices in _NARROWING.items():
    parser.add_argument(f"--{name}", default=",".join(choices),
                        help=f"comma list, of {', '.join(choices)}")
  parser.add_argument("--out", help="write every trial as JSON here")
  parser.add_argument("--summarize",
                      help="only print the table of an --out file's trials "
                           "(e.g. of a sweep stopped early)")
  args = parser.parse_args(argv)
  if args.summarize:
    with open(args.summarize) as f:
      print(summary([json.loads(line) for line in f]))
    return 0
  start = time.monotonic()
  out = open(args.out, "w") if args.out else None  # pylint: disable=consider-using-with

  def report(record: dict) -> None:
    print(_one_line(record), flush=True)
    if out:  # one JSON line per trial, as it ends
      out.write(json.dumps(record) + "\n")
      out.flush()

  if args.epochs < 1 or args.steps_per_epoch < 1:
    raise ConfigError(f"--epochs={args.epochs} --steps_per_epoch="
                      f"{args.steps_per_epoch}: both must be at least 1")
  settings = Settings(epochs=args.epochs,
                      steps_per_epoch=args.steps_per_epoch)
  records = sweep(args.trials, seed=args.seed, settings=settings,
                  relaunch=not args.no_relaunch, report=report,
                  **_narrowing(args))
  print(summary(records))
  hangs = sum(len(r["hangs"]) + len(r.get("relaunch_hangs", ()))
              for r in records)
  permanents = sum(len(permanent(r)) for r in records)
  print(f"{len(records)} trials in {time.monotonic() - start:.0f} s: "
        f"{hangs} hangs, "
        f"{sum(len(r['unexplained']) for r in records)} unexplained "
        f"statuses, {permanents} permanent statuses (1-127) for transient "
        f"faults, {sum(not r['checkpoints_readable'] for r in records)} "
        f"with an unreadable checkpoint, {_clean(records)} finished jobs "
        "ended clean")
  if out:
    out.close()
  return 0 if hangs == 0 and permanents == 0 else 1


if __name__ == "__main__":
  sys.exit(cli.run(main))
