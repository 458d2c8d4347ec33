r"""The save figures: ``python -m tfdist.bench.saves --out_dir=DIR``.

The shipped ``k8s/sparse-ps`` job (trainers.sparse under ps with 2 ps
tasks: a 4,000,000 x 64 table with Adagrad, 2 GiB a save; ``--vocab_size``
scales it to a smaller machine), as real task processes on loopback
(tfdist.bench.jobs), saving every ``--every_steps`` steps into a
``--model_dir`` on this machine's disk (``--stall_timeout`` may set the
stall deadline below what a save takes: a save of any size is no stall).
Figures:

* each checkpoint's bytes (variables and Adagrad slots), its write
  deadline (tfdist.liveness.deadlines.write_deadline_s at the run's
  ``--peer_timeout``) and when each ps task's data file was complete (the
  spread between them: the ps tasks write at once, tfdist.training.ps_save);
* the chief's seconds per save (its wait for the steps in flight
  included), and how the job ended (every task 0, no stall line).

Writes ``results.json`` (settings, machine, figures) and ``logs/saves.log``
into --out_dir. Imports tfdist.cli, liveness.deadlines, errors and tfdist.bench
(jobs, report); no TensorFlow.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys
import tempfile
import time

from tfdist import cli
from tfdist.bench import jobs
from tfdist.bench import report as report_lib
from tfdist.errors import ConfigError
from tfdist.liveness import deadlines

PROG = "python -m tfdist.bench.saves"
_DATA = re.compile(r"ckpt-(\d+)\.data-(\d+)-of-(\d+)$")


def _checkpoints(model_dir: str) -> list:
  """Each checkpoint left: its step, bytes, and when each data file (one
  per ps task) was complete, seconds after the first."""
  found = {}
  for path in glob.glob(os.path.join(model_dir, "checkpoints", "*.data-*")):
    match = _DATA.search(path)
    if match:
      found.setdefault(int(match.group(1)), []).append(
          (os.path.getmtime(path), os.path.getsize(path)))
  rows = []
  for step, files in sorted(found.items()):
    first = min(at for at, _ in files)
    rows.append({"step": step, "bytes": sum(size for _, size in files),
                 "data_files_complete_s": sorted(
                     round(at - first, 2) for at, _ in files)})
  return rows


def _flags(args, model_dir: str, data_dir: str) -> list:
  return [f"--vocab_size={args.vocab_size}",
          f"--embedding_dim={args.embedding_dim}",
          f"--generated_dir={data_dir}", "--epochs=1",
          f"--steps_per_epoch={args.steps}", f"--model_dir={model_dir}",
          "--checkpoint_every_epochs=0",
          f"--checkpoint_every_steps={args.every_steps}",
          f"--keep_checkpoints={args.steps // args.every_steps}",
          f"--peer_timeout={args.peer_timeout:g}",
          f"--stall_timeout={args.stall_timeout:g}", "--verbose=2"]


def measure(args, work_dir: str, out_dir: str) -> dict:
  """One job; its figures."""
  model_dir = os.path.join(work_dir, "model")
  job = jobs.Job("ps-2ps", _flags(args, model_dir, work_dir),
                 trainer="sparse")
  started, load = time.monotonic(), os.getloadavg()[0]
  try:
    job.start()
    alive = job.wait(job.task_names(), started + args.run_timeout)
  finally:
    job.kill()
  os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
  with open(os.path.join(out_dir, "logs", "saves.log"), "w") as f:
    for name in job.task_names():
      f.writelines(f"[{name}] {line}\n" for line in job.output[name])
  line = job.result(job.primary)
  result = json.loads(line) if line else {}
  saved = sum(result.get("bytes_per_ps", {}).values())
  return {
      "statuses": {n: job.status(n) for n in job.task_names()},
      "alive_at_timeout": alive,
      "stall_lines": [l for n in job.task_names() for l in job.output[n]
                      if "no step completed" in l],
      "bytes_per_save": saved,
      "write_deadline_s": round(deadlines.write_deadline_s(
          peer_timeout=args.peer_timeout, nbytes=saved), 1),
      "stall_deadline_s": args.stall_timeout or "auto: 50 x the step time, at "
                          "least 10 s",
      "saves": result.get("checkpoints_saved"),
      "seconds_per_save": (round(result["checkpoint_seconds"]
                                 / result["checkpoints_saved"], 2)
                           if result.get("checkpoints_saved") else None),
      "checkpoints": _checkpoints(model_dir),
      "load_average_1min": {"start": round(load, 1),
                            "end": round(os.getloadavg()[0], 1)},
      "wall_seconds": round(time.monotonic() - started, 1)}


def main(argv=None) -> int:
  parser = cli.OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--vocab_size", type=int, default=4_000_000)
  parser.add_argument("--embedding_dim", type=int, default=64)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--every_steps", type=int, default=20)
  parser.add_argument("--peer_timeout", type=float, default=60.0)
  parser.add_argument("--stall_timeout", type=float, default=0.0)
  parser.add_argument("--run_timeout", type=float, default=1800.0)
  args = parser.parse_args(argv)
  if min(args.vocab_size, args.embedding_dim, args.every_steps) < 1 or (
      args.steps < args.every_steps):
    raise ConfigError("--vocab_size, --embedding_dim and --every_steps must "
                      "be at least 1, --steps at least --every_steps")
  work_dir = tempfile.mkdtemp(prefix="tfdist-saves-")
  try:
    figures = measure(args, work_dir, args.out_dir)
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)
  report = {"command": " ".join([PROG, *(argv or sys.argv[1:])]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": report_lib.machine(), "settings": vars(args),
            **figures}
  report_lib.write_atomically(os.path.join(args.out_dir, "results.json"),
                              json.dumps(report, indent=1))
  print(json.dumps({k: report[k] for k in (
      "statuses", "stall_lines", "bytes_per_save", "write_deadline_s",
      "stall_deadline_s", "seconds_per_save", "checkpoints",
      "load_average_1min")}, indent=1))
  ok = not figures["alive_at_timeout"] and not figures["stall_lines"] and all(
      s == 0 for s in figures["statuses"].values())
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(cli.run(main))
