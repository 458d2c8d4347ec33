"""The bench's figures that have their own commands: straggler and data.

``python -m tfdist.bench`` (full and smoke mode) measures, besides its
runs, the straggler figure (tfdist.bench.straggler: examples/s of
multiworker and ps with one worker slowed to a quarter of its speed, and
``straggler.png``) and the data figures (tfdist.bench.data_figures, as a
process of its own: it imports TensorFlow): decode speed against the
mini-Inception step, streaming against in memory per strategy, the ps
dataset function's size, and with ``--data_memory`` peak memory as the
training set grows 10x (over 1 GB of generated shards). Owns how much of
each a mode measures, their rows in results.md and their targets (issue
13's; the straggler figure has none: it shows a claim). Imports
tfdist.bench (figures, plan, report, runner, straggler); no TensorFlow.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

from tfdist.bench import figures as figures_lib
from tfdist.bench import plan as plan_lib
from tfdist.bench import report as report_lib
from tfdist.bench import runner
from tfdist.bench import straggler as straggler_lib

# tfdist.bench.data_figures' parts and sizes per bench size; "memory" is
# added by --data_memory. The ps function size compares N generated
# examples with 10 N (the memory part generates 60,000 and 600,000).
DATA_PARTS = {"full": ("decode", "streaming", "ps_function_size"),
              "smoke": ("ps_function_size",)}
FUNCTION_SIZE_EXAMPLES = {"full": 6_000, "smoke": 200, "memory": 60_000}
DATA_TIMEOUT_S = {"full": 5400.0, "smoke": 300.0}
STRATEGIES = ("mirrored", "multiworker", "ps")
# Issue 13's goals.
STREAMING_SPEED_GOAL = 0.9  # streamed / in-memory examples/s
ACCURACY_POINTS_GOAL = 0.3  # |streamed - in-memory| test accuracy, points
FUNCTION_GROWTH_GOAL = 1024  # bytes more for 10x the data
DECODE_GOAL = 5.0  # 28 px PNG decode / mini-Inception step examples/s
MEMORY_GROWTH_GOAL = 1.1  # streamed peak RSS, 10x the data


def data_command(size: str, *, out_dir: str, work_dir: str, mnist_dir: str,
                 memory: bool) -> list:
  """The data_figures command of a bench of ``size``."""
  parts = ("memory",) * memory + DATA_PARTS[size]
  examples = FUNCTION_SIZE_EXAMPLES["memory" if memory else size]
  return [sys.executable, "-m", "tfdist.bench.data_figures",
          f"--out_dir={out_dir}", f"--work_dir={work_dir}",
          f"--mnist_dir={mnist_dir}", f"--parts={','.join(parts)}",
          f"--function_size_examples={examples}"]


def measure_data(size: str, *, out_dir: str, work_dir: str, mnist_dir: str,
                 memory: bool, env: dict) -> dict:
  """Runs data_figures into ``out_dir``/data; its figures, or an error."""
  data_dir = os.path.join(out_dir, "data")
  command = data_command(size, out_dir=data_dir, work_dir=work_dir,
                         mnist_dir=mnist_dir, memory=memory)
  print(f"bench: data figures: {' '.join(command[1:])}", file=sys.stderr,
        flush=True)
  output, status, error = runner.run_to_end(command, env=env,
                                            timeout=DATA_TIMEOUT_S[size])
  log_path = os.path.join(out_dir, "logs", "data_figures.log")
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w") as f:
    f.write(output)
  if error is None and status != 0:
    error = f"exit status {status}"
  if error:
    print(f"bench: data figures FAILED ({error}); see {log_path}",
          file=sys.stderr, flush=True)
    return {"command": command, "error": error}
  with open(os.path.join(data_dir, "results.json")) as f:
    figures = json.load(f)
  figures.pop("machine", None)  # the report has it once
  return {"command": command, "error": None, **figures}


def measure(names: list, size: str, *, out_dir: str, mnist_dir: str,
            data_work_dir: str, data_memory: bool, env: dict) -> dict:
  """The figures ``names`` (plan.STRAGGLER, plan.DATA) at ``size``."""
  out = {}
  if plan_lib.STRAGGLER in names:
    figure = straggler_lib.measure(straggler_lib.SETTINGS[size],
                                   mnist_dir=mnist_dir, out_dir=out_dir)
    straggler_lib.plot(figure, os.path.join(out_dir, "straggler.png"))
    out[plan_lib.STRAGGLER] = figure
  if plan_lib.DATA in names:
    out[plan_lib.DATA] = measure_data(size, out_dir=out_dir,
                                      work_dir=data_work_dir,
                                      mnist_dir=mnist_dir,
                                      memory=data_memory, env=env)
  return out


def errors(figs: dict) -> list:
  """What failed, one string each."""
  out = [f"straggler {e}" for e in
         (figs.get(plan_lib.STRAGGLER) or {}).get("errors", ())]
  data = figs.get(plan_lib.DATA)
  if data and data["error"]:
    out.append(f"data figures: {data['error']}")
  return out


def plots(figs: dict) -> list:
  """The PNGs these figures wrote into the bench's --out_dir."""
  return ["straggler.png"] if plan_lib.STRAGGLER in figs else []


def _straggler_rows(figure: dict) -> list:
  slowed = figure["slowed_task"]
  lines = []
  for strategy, row in figure["strategies"].items():
    rates = [row[k]["examples_per_sec"] for k in ("without", "with")]
    lines.append(f"| straggler ({slowed} at a quarter of its speed), "
                 f"{strategy}: examples/s without / with (ratio) | "
                 f"{report_lib.fmt(rates[0])} / {report_lib.fmt(rates[1])} "
                 f"({report_lib.fmt(row['ratio'], '.3f')}) |")
  cpu = [row["with"]["straggler"].get("cpu_seconds_per_second")
         for row in figure["strategies"].values()
         if row["with"]["straggler"]]
  lines.append(f"| straggler: {slowed}'s measured duty cycle (planned "
               f"{figure['planned_duty_cycle']:g}); its CPU seconds per "
               f"second per run | "
               f"{report_lib.fmt(figure['measured_duty_cycle'], '.3f')}; "
               f"{', '.join(report_lib.fmt(c, '.2f') for c in cpu)} |")
  return lines


def _data_rows(data: dict) -> list:
  lines = []
  decode = data.get("decode")
  if decode:
    lines.append(f"| data: decode examples/s on one thread, 28 px PNG / "
                 f"299 px JPEG; mini-Inception step (PNG / step) | "
                 f"{decode['png_28px']:,.0f} / {decode['jpeg_299px']:,.0f}; "
                 f"{decode['mini_inception_step']:,.1f} "
                 f"({decode['png_28px_over_step']:.1f}x) |")
  for strategy, row in (data.get("streaming_cost") or {}).items():
    lines.append(f"| data: streamed / in memory, {strategy}: examples/s "
                 f"(ratio); test accuracy (points) | "
                 f"{row['files']['examples_per_sec']:,.0f} / "
                 f"{row['in_memory']['examples_per_sec']:,.0f} "
                 f"({row['speed_ratio']:.3f}); "
                 f"{row['files']['test_accuracy']:.4f} / "
                 f"{row['in_memory']['test_accuracy']:.4f} "
                 f"({row['accuracy_points']:+.2f}) |")
  size = data.get("ps_function_size")
  if size:
    small, large = size["train_examples"]
    lines.append(f"| data: ps dataset function bytes, files of {small:,} / "
                 f"{large:,} examples; in memory, a tenth / all of MNIST | "
                 f"{size['files_bytes'][0]:,} / {size['files_bytes'][1]:,}; "
                 f"{size['in_memory_bytes'][0]:,} / "
                 f"{size['in_memory_bytes'][1]:,} |")
  memory = data.get("memory")
  if memory:
    points = memory["points"]
    lines.append(f"| data: peak RSS MiB, {points[0]['train_examples']:,} / "
                 f"{points[1]['train_examples']:,} examples, streamed; in "
                 f"memory | {points[0]['streamed_peak_rss_mb']:,.0f} / "
                 f"{points[1]['streamed_peak_rss_mb']:,.0f}; "
                 f"{points[0]['in_memory_peak_rss_mb']:,.0f} / "
                 f"{points[1]['in_memory_peak_rss_mb']:,.0f} |")
  return lines


def rows(figs: dict) -> list:
  """Their rows of results.md's figure table."""
  lines = []
  if figs.get(plan_lib.STRAGGLER):
    lines += _straggler_rows(figs[plan_lib.STRAGGLER])
  if figs.get(plan_lib.DATA):
    lines += _data_rows(figs[plan_lib.DATA])
  return lines


def _get(mapping: Optional[dict], *keys):
  """mapping[k1][k2]..., or None where a level is missing."""
  for key in keys:
    if not isinstance(mapping, dict):
      return None
    mapping = mapping.get(key)
  return mapping


def targets(figs: dict) -> list:
  """Issue 13's targets, when the data figures were planned."""
  if plan_lib.DATA not in figs:
    return []
  data = figs[plan_lib.DATA]
  rows_ = []
  for strategy in STRATEGIES:
    streaming = _get(data, "streaming_cost", strategy)
    points = _get(streaming, "accuracy_points")
    rows_ += [
        figures_lib.target(f"data: streamed / in-memory examples/s, "
                           f"{strategy}", _get(streaming, "speed_ratio"),
                           STREAMING_SPEED_GOAL, unit="x"),
        figures_lib.target(f"data: streamed - in-memory test accuracy, "
                           f"{strategy}, points (absolute)",
                           None if points is None else abs(points),
                           ACCURACY_POINTS_GOAL, higher=False,
                           unit=" points")]
  growth = _get(data, "ps_function_size", "files_difference")
  rows_ += [
      figures_lib.target("data: ps dataset function, bytes more or less for "
                         "10x the data", None if growth is None
                         else abs(growth), FUNCTION_GROWTH_GOAL,
                         higher=False, unit=" bytes"),
      figures_lib.target("data: 28 px PNG decode / mini-Inception step "
                         "examples/s", _get(data, "decode",
                                            "png_28px_over_step"),
                         DECODE_GOAL, unit="x"),
      figures_lib.target("data: streamed peak RSS growth for 10x the data "
                         "(--data_memory)", _get(data, "memory",
                                                 "streamed_growth"),
                         MEMORY_GROWTH_GOAL, higher=False, unit="x")]
  return rows_
