"""Runs one planned configuration as real processes and records its results.

Owns the command line of a run (every process pinned by tfdist.bench.pin;
clusters through tfdist.cluster.launch; the plain Keras runs through
tfdist.bench.baseline, the peer's through tfdist.bench.peer), the
children's environment, the deadline of a run, and reading the result lines
and peak memory of its tasks. Imports
tfdist.bench.plan only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Optional

from tfdist.bench import plan as plan_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# One compute thread per task; an inter-op pool of 2, because ps tasks
# deadlock with one.
THREAD_ENV = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"}
# The runs that are not the trainer: the plain Keras fit (one process) and
# the TF tutorial's multi-worker code (a cluster, like multiworker).
_SCRIPTS = {"keras": "tfdist.bench.baseline", "peer": "tfdist.bench.peer"}


def command(run: plan_lib.Run, *, base_batch_size: int, mnist_dir: str,
            spec_path: Optional[str]) -> list:
  """The command line of a run (through tfdist.cluster.launch for a cluster).

  Every process runs under tfdist.bench.pin: one core per training task, so
  that N workers have N times the compute of one.
  """
  pin = [sys.executable, "-m", "tfdist.bench.pin", "--"]
  steps = [f"--batch_size={run.batch_size}", f"--epochs={run.epochs}",
           f"--steps_per_epoch={run.steps_per_epoch}"]
  if run.steps_per_execution > 1:
    steps.append(f"--steps_per_execution={run.steps_per_execution}")
  script = _SCRIPTS.get(run.strategy)
  if script:
    trainer = [*pin, sys.executable, "-m", script, f"--mnist_dir={mnist_dir}",
               *steps, f"--learning_rate={run.learning_rate:g}", *run.flags]
  else:
    trainer = [*pin, sys.executable, "-m", f"trainers.{run.trainer}",
               f"--strategy={run.strategy}", f"--mnist_dir={mnist_dir}",
               *steps,
               f"--{'' if run.eval_every_epoch else 'no'}eval_every_epoch",
               f"--base_batch_size={base_batch_size}", *run.flags,
               f"--learning_rate={run.learning_rate:g}"]
  if spec_path is None:
    return trainer
  return [sys.executable, "-m", "tfdist.launch", f"--cluster_spec={spec_path}",
          "--free_ports", "--", *trainer]


_RESULT_LINE = re.compile(r"^(?:\[(?P<task>[a-z]+-\d+)\] )?(?P<json>\{.*\})\s*$")
_MEMORY_LINE = re.compile(r"tfdist: (?P<task>[a-z]+-\d+) peak memory "
                          r"(?P<mb>[0-9.]+) MiB")


def parse_output(text: str) -> tuple:
  """The result of each task (``local`` without the launcher's prefix) and
  each task's peak memory in MiB, from a run's combined output."""
  results, memory = {}, {}
  for line in text.splitlines():
    match = _RESULT_LINE.match(line)
    if match:
      try:
        result = json.loads(match["json"])
      except json.JSONDecodeError:
        continue
      if isinstance(result, dict) and "steady_examples_per_sec" in result:
        task = match["task"] or "local"
        results[task] = result
        memory[task] = result.get("peak_rss_mb")
    match = _MEMORY_LINE.search(line)
    if match:
      memory[match["task"]] = float(match["mb"])
  return results, memory


def child_env(environ: dict) -> dict:
  """The environment of a run: ``environ`` without TF_CONFIG, one compute
  thread per task, this repository importable."""
  env = {k: v for k, v in environ.items() if k != "TF_CONFIG"}
  env.update(THREAD_ENV)
  env["PYTHONUNBUFFERED"] = "1"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  return env


def describe(run: plan_lib.Run) -> dict:
  """The planned part of a run's record: what ran, and for which figures."""
  return {"name": run.name, "strategy": run.strategy,
          "trainer": run.trainer, "workers": run.workers,
          "flags": list(run.flags), "batch_size": run.batch_size,
          "learning_rate": run.learning_rate,
          "global_batch_size": run.global_batch_size,
          "steps_per_epoch": run.steps_per_epoch, "epochs": run.epochs,
          "steps_per_execution": run.steps_per_execution,
          "tags": sorted(run.tags), "label": run.label}


def run_to_end(args: list, *, env: dict, timeout: float) -> tuple:
  """Runs ``args`` in its own process group until it exits or ``timeout``
  seconds pass; returns (output, exit status, error or None)."""
  # Own process group: on timeout the launcher and every task go together.
  process = subprocess.Popen(args, cwd=REPO, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
  error = None
  try:
    output, _ = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    output, _ = process.communicate()
    error = f"did not finish within {timeout:.0f} s"
  finally:
    try:
      os.killpg(process.pid, signal.SIGKILL)  # anything left behind
    except ProcessLookupError:
      pass
  return output, process.returncode, error


def _write_spec(run: plan_lib.Run, out_dir: str) -> Optional[str]:
  if run.cluster is None:
    return None
  spec_path = os.path.join(out_dir, "specs", f"{run.name}.json")
  os.makedirs(os.path.dirname(spec_path), exist_ok=True)
  with open(spec_path, "w") as f:
    json.dump(run.cluster, f)
  return spec_path


def execute(run: plan_lib.Run, *, settings: plan_lib.Settings, env: dict,
            mnist_dir: str, out_dir: str) -> dict:
  """Runs one configuration to completion (or its timeout); returns its
  record: what ran, command, status, wall seconds, per-task results and
  memory."""
  args = command(run, base_batch_size=settings.batch_size,
                 mnist_dir=mnist_dir, spec_path=_write_spec(run, out_dir))
  print(f"bench: {run.name}: {' '.join(args[1:])}", file=sys.stderr,
        flush=True)
  start = time.monotonic()
  output, status, error = run_to_end(args, env=env,
                                      timeout=settings.run_timeout)
  seconds = time.monotonic() - start
  log_path = os.path.join(out_dir, "logs", f"{run.name}.log")
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w") as f:
    f.write(output)
  results, memory = parse_output(output)
  if error is None and status != 0:
    error = f"exit status {status}"
  if error is None and run.primary_task not in results:
    error = f"no result line from {run.primary_task}"
  if error:
    print(f"bench: {run.name} FAILED ({error}); see {log_path}",
          file=sys.stderr, flush=True)
  primary = results.get(run.primary_task)
  if primary:
    print(f"bench: {run.name}: {primary['steady_examples_per_sec']:,.0f} "
          f"examples/s, test accuracy {primary['test_accuracy']}, "
          f"{seconds:.0f} s", file=sys.stderr, flush=True)
  return dict(describe(run), command=args, wall_seconds=round(seconds, 1),
              error=error, tasks=results, peak_rss_mb=memory)
