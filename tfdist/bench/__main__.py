"""``python -m tfdist.bench``: runs a mode's plan, writes the report.

    python -m tfdist.bench [--smoke|--quick] [--inception] [--runs=a,b] \
        [--data_memory] [--data_work_dir=DIR] --out_dir=DIR [--mnist_dir=DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from tfdist import cli
from tfdist import data as data_lib
from tfdist.bench import data_figures
from tfdist.bench import figure_commands
from tfdist.bench import figures as figures_lib
from tfdist.bench import plan as plan_lib
from tfdist.bench import report as report_lib
from tfdist.bench import runner
from tfdist.errors import ConfigError

PROG = "python -m tfdist.bench"
# The real MNIST sample bundled with the package: the bench needs no data
# path, and its figures use the same files as the tests.
DEFAULT_MNIST_DIR = data_lib.BUNDLED_MNIST_DIR


def _parser() -> argparse.ArgumentParser:
  parser = cli.OneLineParser(
      prog=PROG,
      description="Benchmark the trainers on this machine: results.json, "
                  "results.md and PNG plots in --out_dir.")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--mnist_dir", default=DEFAULT_MNIST_DIR,
                      help="the four MNIST IDX files (default: the sample "
                           "bundled with tfdist)")
  size = parser.add_mutually_exclusive_group()
  size.add_argument("--quick", action="store_true",
                    help="a few minutes on 2 cores")
  size.add_argument("--smoke", action="store_true",
                    help="tiny settings: every run and file, for CI")
  parser.add_argument("--inception", action="store_true",
                      help="mini-Inception only: seconds to accuracy, weak "
                           "scaling, and the trainer against plain Keras")
  parser.add_argument("--runs", metavar="SUBSTRINGS",
                      help="only the mode's runs whose name contains one of "
                           "these comma-separated strings (e.g. "
                           "inception,keras-1; straggler and data name "
                           "those figures); figures of runs left out are "
                           "not measured")
  parser.add_argument("--data_memory", action="store_true",
                      help="full mode: also the data figures' memory part "
                           "(peak RSS as the training set grows 10x; "
                           "writes over 1 GB into --data_work_dir)")
  parser.add_argument("--data_work_dir", default=data_figures.WORK_DIR,
                      help="where the data figures' generated shards go "
                           "(never into the repository)")
  return parser


def check_paths(*, out_dir: str, mnist_dir: str) -> None:
  """Bad paths are one line before anything runs."""
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


def _command_line(args) -> str:
  """The command as the report shows it."""
  words = [PROG] + [f"--{flag}" for flag in ("quick", "smoke", "inception",
                                             "data_memory")
                    if getattr(args, flag)]
  if args.runs:
    words.append(f"--runs={args.runs}")
  return " ".join(words + [f"--out_dir={args.out_dir}"])


def _write_report(report: dict, out_dir: str) -> None:
  report_lib.write_atomically(os.path.join(out_dir, "results.json"),
                              json.dumps(report, indent=1))
  table = report_lib.markdown(report, figure_commands.rows(report["figures"]))
  report_lib.write_atomically(os.path.join(out_dir, "results.md"), table)
  print(table)
  for t in report["targets"]:
    print(f"target: {t['target']}: {report_lib.fmt(t['value'], '.4g')} "
          f"(goal {t['goal']:g}): {t['note']}")


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  size = "smoke" if args.smoke else "quick" if args.quick else "full"
  mode = f"inception-{size}" if args.inception else size
  settings = plan_lib.MODES[mode]
  out_dir = os.path.abspath(args.out_dir)
  mnist_dir = os.path.abspath(args.mnist_dir)
  try:
    runs = plan_lib.select(plan_lib.plan(settings), args.runs,
                           own_figures=settings.own_figures)
    own = plan_lib.select_own_figures(settings.own_figures, args.runs)
    if args.data_memory and (mode != "full" or plan_lib.DATA not in own):
      raise ConfigError("--data_memory adds to the data figures of full "
                        "mode: drop --smoke, --quick and --inception, and "
                        "let --runs select data")
    check_paths(out_dir=out_dir, mnist_dir=mnist_dir)
  except ConfigError as e:
    return cli.report(e)

  started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
  load_before = round(os.getloadavg()[0], 2)
  env = runner.child_env(os.environ)
  records = {run.name: runner.execute(run, settings=settings, env=env,
                                      mnist_dir=mnist_dir, out_dir=out_dir)
             for run in runs}
  figs = figures_lib.figures(records)
  figs.update(figure_commands.measure(
      own, size, out_dir=out_dir, mnist_dir=mnist_dir, env=env,
      data_work_dir=os.path.abspath(args.data_work_dir),
      data_memory=args.data_memory))
  report = {
      "mode": mode, "command": _command_line(args), "started": started,
      "load_average": {"before": load_before,
                       "after": round(os.getloadavg()[0], 2)},
      "machine": report_lib.machine(), "thread_env": runner.THREAD_ENV,
      "settings": dataclasses.asdict(settings), "figures": figs,
      "runs": records,
      "targets": figures_lib.targets(figs) + figure_commands.targets(figs),
      "plots": (report_lib.plots(figs, out_dir)
                + figure_commands.plots(figs))}
  _write_report(report, out_dir)
  failed = [name for name, r in records.items() if r["error"]]
  failed += figure_commands.errors(figs)
  if failed:
    print(f"bench: {len(failed)} run(s) failed: {', '.join(failed)}; see "
          f"{os.path.join(out_dir, 'logs')}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
