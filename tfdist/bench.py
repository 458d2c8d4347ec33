r"""Benchmarks of the trainers on this machine: one command, a table, plots.

    python -m tfdist.bench --quick --out_dir=/tmp/bench   # a few minutes
    python -m tfdist.bench --out_dir=docs/bench           # full

Runs the real trainer ``trainers.mnist`` (softmax regression), and in full
mode ``trainers.inception`` (mini-Inception), as real processes through
``tfdist.launch``, one configuration at a time, on the MNIST IDX files
(``--runs=a,b``: only the runs whose name contains a or b), and writes into
``--out_dir``:

* ``results.json``: the machine, the settings, every run's result lines
  (one per task), the figures below and the targets (met or missed by how
  much);
* ``results.md``: the same as Markdown tables;
* ``throughput.png``, ``sync_vs_async.png``, ``large_batch.png``;
* ``logs/<run>.log``: each run's full output.

Figures: examples/s per strategy and cluster size, weak-scaling efficiency
against one worker with the same per-worker batch and threads (softmax at
several per-worker batches, mini-Inception), the trainer's
overhead against a plain Keras ``fit`` (``tfdist.baseline``) of the same
model and batch, seconds of training to a test accuracy, accuracy against
training time synchronous (multiworker) vs asynchronous (ps), the large-batch
recipe at 8x the base batch, the float16 gradient all-reduce (bytes and
accuracy), and peak resident memory per task.

Fair scaling: every task gets one compute thread (TF_NUM_INTRAOP_THREADS=1;
an inter-op pool of 2, because ps tasks deadlock with one). Throughput is the
median epoch after the first: the first holds tracing and connection set-up,
and it ends in a synchronisation of all tasks (the last all-reduce, or the
ps coordinator's join), the barrier before timing. Targets are printed, not
asserted: the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from typing import Optional

from tfdist import communication
from tfdist.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MNIST_DIR = os.path.join(os.path.dirname(REPO), "shared", "data",
                                 "mnist")
# One compute thread per task; see the module docstring for inter-op = 2.
THREAD_ENV = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"}
SOFTMAX_THRESHOLDS = (0.91, 0.915)
INCEPTION_THRESHOLD = 0.98
LARGE_BATCH_FACTOR = 8


@dataclasses.dataclass(frozen=True, kw_only=True)
class InceptionSettings:
  """The mini-Inception runs (``trainers.inception``; full mode).

  Attributes:
    width: the model's filter multiplier (0.5: 0.98 after about 50,000
      examples; 865 examples/s on one thread of an idle EPYC core).
    batch_size: examples per replica per step.
    learning_rate: of the momentum SGD the trainer uses.
    epochs, examples_per_epoch: the time-to-accuracy run (one worker,
      evaluated after every epoch).
    scaling_epochs, scaling_examples_per_epoch: the weak-scaling runs (1 and
      2 workers, not evaluated until the end: examples/s only).
  """
  width: float = 0.5
  batch_size: int = 64
  learning_rate: float = 0.05
  epochs: int = 12
  examples_per_epoch: int = 6400
  scaling_epochs: int = 4
  scaling_examples_per_epoch: int = 3200


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
  """How much each run trains.

  Attributes:
    epochs: epochs per run (the first is warm-up, excluded from examples/s).
    examples_per_epoch: examples per epoch, for every run: steps per epoch
      are this over the run's global batch, so all runs see the same data
      and evaluate (for accuracy against time) at the same points.
    batch_size: examples per replica per step (the base batch).
    learning_rate: tuned for the base batch.
    recipe_learning_rate: the base rate of the large-batch runs; 8x it must
      still be a stable rate (8 x 0.5 is not: see README, Benchmarks).
    warmup_epochs: the recipe's warmup at 8x the batch.
    limit_run: also scale ``learning_rate`` itself 8x (full mode), to show
      where linear scaling breaks down.
    scaling_batch_sizes: further per-worker batches at which softmax weak
      scaling is measured (1 and 2 workers each): the all-reduce's cost per
      step is fixed, so efficiency depends on the compute per step.
    scaling_epochs, scaling_examples_per_epoch: of those runs, which are
      not evaluated until the end (examples/s only).
    steps_per_execution: if > 1, the one-device overhead and softmax weak
      scaling are measured again with that many steps per ``tf.function``
      call (trainer and plain Keras alike).
    inception: the mini-Inception runs, or None to skip them.
    run_timeout: seconds before a run is killed and recorded as failed.
  """
  epochs: int
  examples_per_epoch: int
  batch_size: int = 100
  learning_rate: float = 0.5
  recipe_learning_rate: float = 0.1
  warmup_epochs: float = 1.0
  limit_run: bool = False
  scaling_batch_sizes: tuple = ()
  scaling_epochs: int = 4
  # Epochs of a second or more: at 12,000 examples a one-worker softmax epoch
  # is 0.1 s, where Keras's fixed per-epoch work weighs on examples/s.
  scaling_examples_per_epoch: int = 192000
  steps_per_execution: int = 1
  inception: Optional[InceptionSettings] = None
  run_timeout: float = 600.0


MODES = {
    # CI: every run and file, on tiny settings.
    "smoke": Settings(epochs=2, examples_per_epoch=1600, run_timeout=180),
    "quick": Settings(epochs=6, examples_per_epoch=12000, run_timeout=300),
    "full": Settings(epochs=20, examples_per_epoch=12000, limit_run=True,
                     scaling_batch_sizes=(400, 1600), steps_per_execution=10,
                     inception=InceptionSettings()),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
  """One configuration: a trainer under a strategy on a cluster size.

  ``strategy`` is ``keras`` for the plain Keras baseline. ``workers`` is the
  number of training workers (plus a chief and one ps under ps).
  ``eval_every_epoch`` gives the accuracy curve (untimed, but wall time).
  """
  name: str
  strategy: str
  workers: int = 1
  batch_size: int
  flags: tuple = ()
  trainer: str = "mnist"
  learning_rate: float
  epochs: int
  examples_per_epoch: int
  eval_every_epoch: bool = True

  @property
  def global_batch_size(self) -> int:
    # Under ps one step is one worker's batch; else all replicas' together.
    if self.strategy in ("ps", "keras"):
      return self.batch_size
    return self.batch_size * self.workers

  @property
  def steps_per_epoch(self) -> int:
    return max(1, self.examples_per_epoch // self.global_batch_size)

  @property
  def cluster(self) -> Optional[dict]:
    """The spec for tfdist.launch (port 0: picked at launch), or None."""
    if self.strategy == "multiworker":
      return {"worker": ["127.0.0.1:0"] * self.workers}
    if self.strategy == "ps":
      return {"chief": ["127.0.0.1:0"], "worker": ["127.0.0.1:0"] * self.workers,
              "ps": ["127.0.0.1:0"]}
    return None

  @property
  def primary_task(self) -> str:
    """The task whose result is the run's (it times and evaluates)."""
    return {"ps": "chief-0", "multiworker": "worker-0"}.get(self.strategy,
                                                            "local")


def plan(settings: Settings) -> list:
  """Every run of a mode, in the order they run."""
  common = {"epochs": settings.epochs,
            "examples_per_epoch": settings.examples_per_epoch,
            "learning_rate": settings.learning_rate}
  recipe = dict(common, learning_rate=settings.recipe_learning_rate)
  base, big = settings.batch_size, settings.batch_size * LARGE_BATCH_FACTOR // 2
  runs = [
      Run(name="keras-1", strategy="keras", batch_size=base, **common),
      Run(name="mirrored-1", strategy="mirrored", batch_size=base,
          flags=("--num_cpu_devices=1",), **common),
      Run(name="multiworker-1", strategy="multiworker", batch_size=base,
          **common),
      Run(name="multiworker-2", strategy="multiworker", workers=2,
          batch_size=base, **common),
      Run(name="multiworker-2-fp16", strategy="multiworker", workers=2,
          batch_size=base, flags=("--all_reduce_dtype=float16",), **common),
      Run(name="ps-1", strategy="ps", batch_size=base, **common),
      Run(name="ps-2", strategy="ps", workers=2, batch_size=base, **common),
      # The large-batch recipe: the base batch, then 8x it as 2 workers x 4x
      # the per-worker batch, for the same epochs (8x fewer steps).
      Run(name="recipe-base", strategy="multiworker", batch_size=base,
          **recipe),
      Run(name="multiworker-2-8x", strategy="multiworker", workers=2,
          batch_size=big, **recipe),
      Run(name="multiworker-2-8x-linear", strategy="multiworker", workers=2,
          batch_size=big, flags=("--lr_scaling=linear",), **recipe),
      Run(name="multiworker-2-8x-recipe", strategy="multiworker", workers=2,
          batch_size=big, flags=(
              "--lr_scaling=linear",
              f"--warmup_epochs={settings.warmup_epochs:g}"), **recipe),
  ]
  if settings.limit_run:
    runs.append(Run(name="multiworker-2-8x-recipe-from-0.5",
                    strategy="multiworker", workers=2, batch_size=big, flags=(
                        "--lr_scaling=linear",
                        f"--warmup_epochs={settings.warmup_epochs:g}"),
                    **common))
  if settings.steps_per_execution > 1:
    # The same four runs, n steps per tf.function call: what per-step host
    # overhead costs (overhead ratio, weak scaling).
    n = settings.steps_per_execution
    spe = f"--steps_per_execution={n}"
    runs += [
        Run(name=f"keras-1-spe{n}", strategy="keras", batch_size=base,
            flags=(spe,), **common),
        Run(name=f"mirrored-1-spe{n}", strategy="mirrored", batch_size=base,
            flags=("--num_cpu_devices=1", spe), **common),
        *(Run(name=f"multiworker-{w}-spe{n}", strategy="multiworker",
              workers=w, batch_size=base, flags=(spe,), **common)
          for w in (1, 2))]
  scaling = dict(common, epochs=settings.scaling_epochs,
                 examples_per_epoch=settings.scaling_examples_per_epoch,
                 eval_every_epoch=False)
  for batch in settings.scaling_batch_sizes:
    runs += [Run(name=f"multiworker-{w}-b{batch}", strategy="multiworker",
                 workers=w, batch_size=batch, **scaling) for w in (1, 2)]
  inception = settings.inception
  if inception:
    model = {"trainer": "inception", "batch_size": inception.batch_size,
             "learning_rate": inception.learning_rate}
    width = f"--width={inception.width:g}"
    runs.append(Run(name="inception-1", strategy="mirrored",
                    flags=("--num_cpu_devices=1", width),
                    epochs=inception.epochs,
                    examples_per_epoch=inception.examples_per_epoch, **model))
    runs += [Run(name=f"inception-multiworker-{w}", strategy="multiworker",
                 workers=w, flags=(width,), epochs=inception.scaling_epochs,
                 examples_per_epoch=inception.scaling_examples_per_epoch,
                 eval_every_epoch=False, **model) for w in (1, 2)]
  return runs


def select(runs: list, patterns: Optional[str]) -> list:
  """The runs whose name contains one of the comma-separated ``patterns``
  (all of them for None); ConfigError if none does."""
  if patterns is None:
    return runs
  wanted = [p for p in patterns.split(",") if p]
  chosen = [r for r in runs if any(p in r.name for p in wanted)]
  if not chosen:
    raise ConfigError(f"--runs={patterns}: matches no run of this mode; "
                      f"names: {', '.join(r.name for r in runs)}")
  return chosen


def command(run: Run, *, settings: Settings, mnist_dir: str,
            spec_path: Optional[str]) -> list:
  """The command line of a run (through tfdist.launch for a cluster).

  Every process runs under tfdist.pin: one core per training task, so that
  N workers have N times the compute of one.
  """
  pin = [sys.executable, "-m", "tfdist.pin", "--"]
  if run.strategy == "keras":
    return [*pin, sys.executable, "-m", "tfdist.baseline",
            f"--mnist_dir={mnist_dir}",
            f"--batch_size={run.batch_size}", f"--epochs={run.epochs}",
            f"--steps_per_epoch={run.steps_per_epoch}",
            f"--learning_rate={run.learning_rate:g}", *run.flags]
  trainer = [*pin, sys.executable, "-m", f"trainers.{run.trainer}",
             f"--strategy={run.strategy}", f"--mnist_dir={mnist_dir}",
             f"--batch_size={run.batch_size}", f"--epochs={run.epochs}",
             f"--steps_per_epoch={run.steps_per_epoch}",
             f"--{'' if run.eval_every_epoch else 'no'}eval_every_epoch",
             f"--base_batch_size={settings.batch_size}", *run.flags]
  trainer.append(f"--learning_rate={run.learning_rate:g}")
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


def _child_env() -> dict:
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  env.update(THREAD_ENV)
  env["PYTHONUNBUFFERED"] = "1"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  return env


def execute(run: Run, *, settings: Settings, mnist_dir: str,
            out_dir: str) -> dict:
  """Runs one configuration to completion (or its timeout); returns its
  record: command, status, wall seconds, per-task results and memory."""
  spec_path = None
  if run.cluster is not None:
    spec_path = os.path.join(out_dir, "specs", f"{run.name}.json")
    os.makedirs(os.path.dirname(spec_path), exist_ok=True)
    with open(spec_path, "w") as f:
      json.dump(run.cluster, f)
  args = command(run, settings=settings, mnist_dir=mnist_dir,
                 spec_path=spec_path)
  print(f"bench: {run.name}: {' '.join(args[1:])}", file=sys.stderr,
        flush=True)
  start = time.monotonic()
  # Own process group: on timeout the launcher and every task go together.
  process = subprocess.Popen(args, cwd=REPO, env=_child_env(),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
  error = None
  try:
    output, _ = process.communicate(timeout=settings.run_timeout)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    output, _ = process.communicate()
    error = f"did not finish within {settings.run_timeout:.0f} s"
  finally:
    try:
      os.killpg(process.pid, signal.SIGKILL)  # anything left behind
    except ProcessLookupError:
      pass
  seconds = time.monotonic() - start
  log_path = os.path.join(out_dir, "logs", f"{run.name}.log")
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w") as f:
    f.write(output)
  results, memory = parse_output(output)
  if error is None and process.returncode != 0:
    error = f"exit status {process.returncode}"
  if error is None and run.primary_task not in results:
    error = f"no result line from {run.primary_task}"
  if error:
    print(f"bench: {run.name} FAILED ({error}); see {log_path}",
          file=sys.stderr, flush=True)
  record = {"name": run.name, "strategy": run.strategy,
            "trainer": run.trainer, "workers": run.workers,
            "flags": list(run.flags),
            "batch_size": run.batch_size, "learning_rate": run.learning_rate,
            "global_batch_size": run.global_batch_size,
            "steps_per_epoch": run.steps_per_epoch, "epochs": run.epochs,
            "command": args, "wall_seconds": round(seconds, 1),
            "error": error, "tasks": results, "peak_rss_mb": memory}
  primary = results.get(run.primary_task)
  if primary:
    print(f"bench: {run.name}: {primary['steady_examples_per_sec']:,.0f} "
          f"examples/s, test accuracy {primary['test_accuracy']}, "
          f"{seconds:.0f} s", file=sys.stderr, flush=True)
  return record


# --- figures ----------------------------------------------------------------


def _primary(records: dict, name: str) -> Optional[dict]:
  record = records.get(name)
  if not record or record["error"]:
    return None
  return record["tasks"].get(
      {"ps": "chief-0", "multiworker": "worker-0"}.get(record["strategy"],
                                                       "local"))


def seconds_to_accuracy(curve: list, threshold: float) -> Optional[float]:
  """Training seconds at the first evaluation reaching ``threshold``."""
  for seconds, accuracy in curve or ():
    if accuracy >= threshold:
      return seconds
  return None


def accuracy_at(curve: list, seconds: float) -> Optional[float]:
  """The accuracy a run had reached after ``seconds`` of training (its last
  evaluation at or before then)."""
  reached = [a for s, a in curve or () if s <= seconds]
  return reached[-1] if reached else None


def sync_ahead_fraction(sync: list, asynchronous: list,
                        until: float) -> Optional[float]:
  """The share of evaluation times up to ``until`` (of either curve) at
  which ``sync`` had reached at least the accuracy ``asynchronous`` had."""
  times = sorted({s for s, _ in sync + asynchronous if s <= until})
  pairs = [(accuracy_at(sync, t), accuracy_at(asynchronous, t)) for t in times]
  pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
  if not pairs:
    return None
  return round(sum(a >= b for a, b in pairs) / len(pairs), 3)


def weak_scaling(one: Optional[dict], many: Optional[dict],
                 workers: int) -> Optional[float]:
  """examples/s with N workers over N x examples/s with one."""
  if not one or not many:
    return None
  return round(many["steady_examples_per_sec"]
               / (workers * one["steady_examples_per_sec"]), 3)


def overhead(trainer: Optional[dict], keras: Optional[dict]) -> Optional[dict]:
  """The trainer's examples/s against plain Keras's, or None."""
  if not trainer or not keras:
    return None
  return {"trainer_examples_per_sec": trainer["steady_examples_per_sec"],
          "keras_examples_per_sec": keras["steady_examples_per_sec"],
          "ratio": round(trainer["steady_examples_per_sec"]
                         / keras["steady_examples_per_sec"], 3)}


def figures(records: dict) -> dict:
  """Every figure the module docstring lists, from the runs' records."""
  get = lambda name: _primary(records, name)  # pylint: disable=unnecessary-lambda-assignment
  out = {"throughput": [], "time_to_accuracy": {}}
  for name, record in records.items():
    primary = get(name)
    row = {"run": name, "strategy": record["strategy"],
           "trainer": record["trainer"], "workers": record["workers"],
           "global_batch_size": record["global_batch_size"],
           "examples_per_sec": primary and primary["steady_examples_per_sec"],
           "test_accuracy": primary and primary["test_accuracy"],
           "max_task_rss_mb": max((m for m in record["peak_rss_mb"].values()
                                   if m), default=None),
           "error": record["error"]}
    out["throughput"].append(row)
    if primary and "accuracy_curve" in primary:
      out["time_to_accuracy"][name] = {
          f"{t:g}": seconds_to_accuracy(primary["accuracy_curve"], t)
          for t in (SOFTMAX_THRESHOLDS if record["trainer"] == "mnist"
                    else (INCEPTION_THRESHOLD,))}

  out["weak_scaling"] = {
      "multiworker": weak_scaling(get("multiworker-1"), get("multiworker-2"), 2),
      "ps": weak_scaling(get("ps-1"), get("ps-2"), 2)}
  # The further pairs a mode planned (1 worker, 2 workers), by their label.
  for name in records:
    pair = re.fullmatch(r"(.*multiworker)-1(-(?:b|spe)(\d+))?", name)
    if name == "multiworker-1" or not pair:
      continue
    label = "mini-Inception multiworker" if pair[1].startswith(
        "inception") else "multiworker"
    if pair[2]:
      label += (f", batch {pair[3]} per worker" if pair[2].startswith("-b")
                else f", {pair[3]} steps per execution")
    out["weak_scaling"][label] = weak_scaling(
        get(name), get(name.replace("-1", "-2", 1)), 2)

  out["overhead"] = overhead(get("mirrored-1"), get("keras-1"))
  for name in records:
    spe = re.fullmatch(r"mirrored-1-spe(\d+)", name)
    ratio = spe and overhead(get(name), get(f"keras-1-spe{spe[1]}"))
    if ratio:
      out["overhead_steps_per_execution"] = dict(
          ratio, steps_per_execution=int(spe[1]))

  inception = get("inception-1")
  if "inception-1" in records:
    out["inception"] = inception and {
        "run": "inception-1", "model": inception["model"],
        "test_accuracy": inception["test_accuracy"],
        "examples_per_sec": inception["steady_examples_per_sec"],
        f"seconds_to_{INCEPTION_THRESHOLD:g}": seconds_to_accuracy(
            inception["accuracy_curve"], INCEPTION_THRESHOLD),
        "curve": inception["accuracy_curve"]}

  sync, asynchronous = get("multiworker-2"), get("ps-2")
  out["sync_vs_async"] = None
  if sync and asynchronous:
    # Compare at the time both have trained for: the shorter run's end.
    at = min(sync["accuracy_curve"][-1][0],
             asynchronous["accuracy_curve"][-1][0])
    out["sync_vs_async"] = {
        "sync_run": "multiworker-2", "async_run": "ps-2",
        "at_seconds": at,
        "sync_accuracy": accuracy_at(sync["accuracy_curve"], at),
        "async_accuracy": accuracy_at(asynchronous["accuracy_curve"], at),
        # Over the time both ran: the share of evaluations (of either run)
        # at which sync had reached at least async's accuracy.
        "sync_ahead_fraction": sync_ahead_fraction(
            sync["accuracy_curve"], asynchronous["accuracy_curve"], at),
        # After the same examples (the end of both runs).
        "sync_final_accuracy": sync["test_accuracy"],
        "async_final_accuracy": asynchronous["test_accuracy"],
        "sync_curve": sync["accuracy_curve"],
        "async_curve": asynchronous["accuracy_curve"]}

  base = get("recipe-base")
  out["large_batch"] = None
  if base:
    large = {"base_global_batch": base["global_batch_size"],
             "base_learning_rate": records["recipe-base"]["learning_rate"],
             "base_accuracy": base["test_accuracy"], "runs": {}}
    for name, label in (("multiworker-2-8x", "8x, no recipe"),
                        ("multiworker-2-8x-linear", "8x, linear scaling"),
                        ("multiworker-2-8x-recipe",
                         "8x, linear scaling + warmup"),
                        ("multiworker-2-8x-recipe-from-0.5",
                         "8x, recipe from base rate 0.5")):
      result = get(name)
      if result:
        large["runs"][name] = {
            "label": label, "global_batch_size": result["global_batch_size"],
            "test_accuracy": result["test_accuracy"],
            "points_vs_base": round(100 * (result["test_accuracy"]
                                           - base["test_accuracy"]), 2)}
    out["large_batch"] = large

  fp32, fp16 = get("multiworker-2"), get("multiworker-2-fp16")
  out["all_reduce_float16"] = None
  if fp32 and fp16 and fp32["all_reduce_bytes"] and fp16["all_reduce_bytes"]:
    out["all_reduce_float16"] = {
        "float32_bytes_per_step": fp32["all_reduce_bytes"],
        "float16_bytes_per_step": fp16["all_reduce_bytes"],
        "ratio": round(fp16["all_reduce_bytes"] / fp32["all_reduce_bytes"], 3),
        # What each worker actually sends per step in a 2-worker ring.
        "float32_ring_wire_bytes_per_step": communication.ring_wire_bytes(
            fp32["all_reduce_bytes"], num_workers=2),
        "float16_ring_wire_bytes_per_step": communication.ring_wire_bytes(
            fp16["all_reduce_bytes"], num_workers=2),
        "float32_accuracy": fp32["test_accuracy"],
        "float16_accuracy": fp16["test_accuracy"],
        "points_difference": round(100 * abs(fp16["test_accuracy"]
                                             - fp32["test_accuracy"]), 2)}

  memory = {f"{name}/{task}": mb for name, record in records.items()
            for task, mb in record["peak_rss_mb"].items() if mb}
  out["peak_rss_mb"] = {"per_task": memory,
                        "max": max(memory.values(), default=None)}
  return out


def _target(name: str, value, goal: float, *, higher: bool = True,
            unit: str = "") -> dict:
  if value is None:
    return {"target": name, "value": None, "goal": goal, "met": False,
            "note": "not measured (the run failed, was not run, or did not "
                    "reach it)"}
  met = value >= goal if higher else value <= goal
  by = abs(value - goal)
  return {"target": name, "value": value, "goal": goal, "met": met,
          "note": ("met" if met else f"missed by {by:.3g}{unit}")}


def targets(figs: dict) -> list:
  """The issue's targets, each met or missed by how much."""
  overhead = figs["overhead"] or {}
  scaling = figs["weak_scaling"]
  best = [s["0.915"] for s in figs["time_to_accuracy"].values()
          if s.get("0.915") is not None]
  sync = figs["sync_vs_async"] or {}
  rows = [
      _target("trainer / plain Keras examples/s (one device)",
              overhead.get("ratio"), 1.0, unit="x"),
      _target("weak scaling, softmax, 2 multiworker workers",
              scaling["multiworker"], 0.80),
      _target("softmax to 0.915 test accuracy, training seconds (fastest run)",
              min(best) if best else None, 10.0, higher=False, unit=" s"),
      _target("share of equal training times at which sync accuracy >= "
              "async", sync.get("sync_ahead_fraction"), 1.0),
      _target("peak memory per task, MiB", figs["peak_rss_mb"]["max"],
              1536.0, higher=False, unit=" MiB"),
  ]
  large = (figs["large_batch"] or {}).get("runs", {})
  recipe = large.get("multiworker-2-8x-recipe")
  rows.append(_target("8x batch with the recipe: accuracy points below base",
                      None if recipe is None
                      else round(-recipe["points_vs_base"], 2) + 0.0, 0.5,
                      higher=False, unit=" points"))
  if "mini-Inception multiworker" in scaling:
    rows.append(_target("weak scaling, mini-Inception, 2 multiworker workers",
                        scaling["mini-Inception multiworker"], 0.95))
  if "inception" in figs:
    rows.append(_target(
        f"mini-Inception test accuracy (seconds to {INCEPTION_THRESHOLD:g}: "
        "see figures)", (figs["inception"] or {}).get("test_accuracy"),
        INCEPTION_THRESHOLD))
  fp16 = figs["all_reduce_float16"] or {}
  rows.append(_target("float16 all-reduce: bytes vs float32",
                      fp16.get("ratio"), 0.5, higher=False))
  rows.append(_target("float16 all-reduce: accuracy difference, points",
                      fp16.get("points_difference"), 0.3, higher=False,
                      unit=" points"))
  return rows


# --- machine, table, plots ----------------------------------------------------


def machine() -> dict:
  """What the figures ran on, and how busy it was."""
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f
                  if line.startswith("model name")), cpu)
  except OSError:
    pass
  memory_gib = None
  try:
    memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf(
        "SC_PHYS_PAGES") / 2**30, 1)
  except (ValueError, OSError):
    pass
  return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory_gib,
          "os": platform.platform(), "python": platform.python_version(),
          "tensorflow": importlib.metadata.version("tensorflow"),
          "tf_keras": importlib.metadata.version("tf_keras"),
          "gpus": "none seen by the bench (CPU only)"}


def _fmt(value, spec: str = ",.0f") -> str:
  return "–" if value is None else format(value, spec)


def markdown(report: dict) -> str:
  """results.md: the machine, the command, the tables."""
  m, figs = report["machine"], report["figures"]
  lines = [
      f"# tfdist benchmark ({report['mode']})", "",
      f"`{report['command']}` on {m['cpu']}, {m['cores']} cores, "
      f"{m['memory_gib']} GiB, no GPU; TensorFlow {m['tensorflow']}, "
      f"tf-keras {m['tf_keras']}; {report['started']}; load average "
      f"{report['load_average']['before']} before, "
      f"{report['load_average']['after']} after "
      f"(higher than 0 means other work shared the cores).", "",
      "One compute thread per task; examples/s is the median epoch after the "
      "first; seconds to an accuracy count training time from the start of "
      "`fit`, evaluation excluded.", "",
      "| run | strategy | workers | global batch | examples/s | test accuracy "
      f"| s to 0.91 (Inception: {INCEPTION_THRESHOLD:g}) | max task RSS MiB |",
      "|---|---|---|---|---|---|---|---|"]
  for row in figs["throughput"]:
    tta = figs["time_to_accuracy"].get(row["run"], {})
    # Softmax runs report 0.91, mini-Inception runs their threshold.
    reached = tta.get("0.91", tta.get(f"{INCEPTION_THRESHOLD:g}"))
    lines.append(
        f"| {row['run']} | {row['strategy']} | {row['workers']} | "
        f"{row['global_batch_size']} | {_fmt(row['examples_per_sec'])} | "
        f"{_fmt(row['test_accuracy'], '.4f')} | "
        f"{_fmt(reached, '.2f')} | "
        f"{_fmt(row['max_task_rss_mb'])} |"
        + (f" FAILED: {row['error']}" if row["error"] else ""))
  lines += ["", "| figure | value |", "|---|---|"]
  for name, value in figs["weak_scaling"].items():
    lines.append(f"| weak-scaling efficiency, {name}, 2 workers | "
                 f"{_fmt(value, '.3f')} |")
  if figs["overhead"]:
    lines.append(f"| trainer / plain Keras examples/s | "
                 f"{figs['overhead']['ratio']:.3f} |")
  spe = figs.get("overhead_steps_per_execution")
  if spe:
    lines.append(f"| trainer / plain Keras examples/s, "
                 f"{spe['steps_per_execution']} steps per execution | "
                 f"{spe['ratio']:.3f} ({spe['trainer_examples_per_sec']:,.0f}"
                 f" / {spe['keras_examples_per_sec']:,.0f}) |")
  inception = figs.get("inception")
  if inception:
    seconds = inception[f"seconds_to_{INCEPTION_THRESHOLD:g}"]
    lines.append(f"| {inception['model']}: seconds to "
                 f"{INCEPTION_THRESHOLD:g} test accuracy; final accuracy | "
                 f"{_fmt(seconds, '.1f')}; {inception['test_accuracy']:.4f} |")
  sync = figs["sync_vs_async"]
  if sync:
    lines.append(f"| accuracy after {sync['at_seconds']:.1f} s: sync / async "
                 f"| {_fmt(sync['sync_accuracy'], '.4f')} / "
                 f"{_fmt(sync['async_accuracy'], '.4f')} |")
    lines.append(f"| share of that time sync was at least as accurate | "
                 f"{_fmt(sync['sync_ahead_fraction'], '.2f')} |")
    lines.append(f"| accuracy after the same examples: sync / async | "
                 f"{sync['sync_final_accuracy']:.4f} / "
                 f"{sync['async_final_accuracy']:.4f} |")
  if figs["large_batch"]:
    large = figs["large_batch"]
    lines.append(f"| base batch {large['base_global_batch']}: accuracy | "
                 f"{large['base_accuracy']:.4f} |")
    for run in large["runs"].values():
      lines.append(f"| {run['label']} (batch {run['global_batch_size']}): "
                   f"accuracy (points vs base) | {run['test_accuracy']:.4f} "
                   f"({run['points_vs_base']:+.2f}) |")
  fp16 = figs["all_reduce_float16"]
  if fp16:
    lines.append(f"| all-reduce bytes per step, float32 / float16 | "
                 f"{fp16['float32_bytes_per_step']:,} / "
                 f"{fp16['float16_bytes_per_step']:,} "
                 f"(ring, per worker: {fp16['float32_ring_wire_bytes_per_step']:,.0f}"
                 f" / {fp16['float16_ring_wire_bytes_per_step']:,.0f}) |")
    lines.append(f"| accuracy float32 / float16 all-reduce | "
                 f"{fp16['float32_accuracy']:.4f} / "
                 f"{fp16['float16_accuracy']:.4f} |")
  lines += ["", "| target | goal | value | |", "|---|---|---|---|"]
  for t in report["targets"]:
    lines.append(f"| {t['target']} | {t['goal']:g} | "
                 f"{_fmt(t['value'], '.4g')} | {t['note']} |")
  return "\n".join(lines) + "\n"


def plots(figs: dict, out_dir: str) -> list:
  """Writes the PNGs; returns their file names."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # files only, no display
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  written = []

  def save(fig, name):
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=100)
    plt.close(fig)
    written.append(name)

  # Softmax runs only: mini-Inception's examples/s are 100x smaller.
  rows = [r for r in figs["throughput"]
          if r["examples_per_sec"] and r["trainer"] == "mnist"]
  fig, ax = plt.subplots(figsize=(9, 4 + len(rows) // 6))
  ax.barh([r["run"] for r in rows], [r["examples_per_sec"] for r in rows],
          color=["tab:gray" if r["strategy"] == "keras" else
                 "tab:orange" if r["strategy"] == "ps" else "tab:blue"
                 for r in rows])
  ax.invert_yaxis()
  ax.set_xlabel("examples/s (median epoch after the first)")
  ax.set_title("Softmax regression: throughput per strategy and cluster size")
  save(fig, "throughput.png")

  fig, ax = plt.subplots(figsize=(7, 4))
  sync = figs["sync_vs_async"]
  if sync:
    for curve, label, style in ((sync["sync_curve"],
                                 "synchronous (multiworker, 2 workers)", "o-"),
                                (sync["async_curve"],
                                 "asynchronous (ps, 2 workers)", "s--")):
      ax.plot([s for s, _ in curve], [a for _, a in curve], style, label=label)
    ax.legend(loc="lower right")
  ax.set_xlabel("training seconds (evaluation excluded)")
  ax.set_ylabel("test accuracy")
  ax.set_title("Softmax regression on MNIST: accuracy against wall time")
  ax.grid(alpha=0.3)
  save(fig, "sync_vs_async.png")

  fig, ax = plt.subplots(figsize=(7, 3.5))
  large = figs["large_batch"]
  if large:
    labels = [f"base ({large['base_global_batch']})"] + [
        f"{r['label']}\n({r['global_batch_size']})"
        for r in large["runs"].values()]
    values = [large["base_accuracy"]] + [
        r["test_accuracy"] for r in large["runs"].values()]
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set_ylim(min(values) - 0.02, max(values) + 0.01)
  ax.set_ylabel("test accuracy")
  ax.set_title("Same epochs at 8x the global batch")
  save(fig, "large_batch.png")
  return written


def _write(path: str, text: str) -> None:
  # Whole or not at all: readers never see half a file.
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def check_paths(*, out_dir: str, mnist_dir: str) -> None:
  """Bad paths are one line before anything runs."""
  from tfdist import data as data_lib  # pylint: disable=g-import-not-at-top
  data_lib.load_mnist_idx(mnist_dir)  # raises ConfigError naming the file
  try:
    os.makedirs(out_dir, exist_ok=True)
    probe = os.path.join(out_dir, ".write-test")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"--out_dir={out_dir} is not writable ({e.strerror}); "
                      "pick a directory you can write")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m tfdist.bench",
      description="Benchmark the trainers on this machine: results.json, "
                  "results.md and PNG plots in --out_dir.")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--mnist_dir", default=DEFAULT_MNIST_DIR,
                      help="the four MNIST IDX files (default: "
                           "../shared/data/mnist beside the repository)")
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument("--quick", action="store_true",
                    help="a few minutes on 2 cores")
  mode.add_argument("--smoke", action="store_true",
                    help="tiny settings: every run and file, for CI")
  parser.add_argument("--runs", metavar="SUBSTRINGS",
                      help="only the mode's runs whose name contains one of "
                           "these comma-separated strings (e.g. "
                           "inception,keras-1); figures of runs left out "
                           "are not measured")
  args = parser.parse_args(argv)
  mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
  settings = MODES[mode_name]
  out_dir, mnist_dir = os.path.abspath(args.out_dir), os.path.abspath(
      args.mnist_dir)
  try:
    runs = select(plan(settings), args.runs)
    check_paths(out_dir=out_dir, mnist_dir=mnist_dir)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
  load_before = round(os.getloadavg()[0], 2)
  records = {}
  for run in runs:
    records[run.name] = execute(run, settings=settings, mnist_dir=mnist_dir,
                                out_dir=out_dir)
  figs = figures(records)
  report = {
      "mode": mode_name,
      "command": "python -m tfdist.bench"
                 + {"full": "", "quick": " --quick", "smoke": " --smoke"}[
                     mode_name] + (f" --runs={args.runs}" if args.runs else "")
                 + f" --out_dir={args.out_dir}",
      "started": started,
      "load_average": {"before": load_before,
                       "after": round(os.getloadavg()[0], 2)},
      "machine": machine(),
      "thread_env": THREAD_ENV,
      "settings": dataclasses.asdict(settings),
      "figures": figs,
      "runs": records,
  }
  report["targets"] = targets(figs)
  report["plots"] = plots(figs, out_dir)
  _write(os.path.join(out_dir, "results.json"), json.dumps(report, indent=1))
  table = markdown(report)
  _write(os.path.join(out_dir, "results.md"), table)
  print(table)
  for t in report["targets"]:
    print(f"target: {t['target']}: {_fmt(t['value'], '.4g')} (goal "
          f"{t['goal']:g}): {t['note']}")
  failed = [name for name, r in records.items() if r["error"]]
  if failed:
    print(f"bench: {len(failed)} run(s) failed: {', '.join(failed)}; see "
          f"{os.path.join(out_dir, 'logs')}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
