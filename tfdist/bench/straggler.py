r"""The straggler figure: ``python -m tfdist.bench.straggler --out_dir=DIR``.

The talk's claim about slow nodes, measured: synchronous training
(multiworker, 2 workers) goes at the pace of its slowest worker, while
asynchronous training (ps: chief, 2 workers, 1 ps) keeps most of its
throughput, because the fast worker takes the steps the slow one does not.
Softmax regression on the bundled MNIST sample runs under each strategy
twice, as real task processes on loopback (tfdist.bench.jobs): without and
with a straggler, worker-1 slowed to about a quarter of its speed by a
duty-cycled SIGSTOP/SIGCONT from this process (25 ms running, 75 ms
stopped, from the start of the second epoch, the first one the examples/s
count). Each training task gets its own core, as in the rest of the bench
(tfdist.bench.pin). Writes into --out_dir:

* ``results.json``: the settings, the load average, per strategy the
  examples/s (steady, from the primary task's result line) without and with
  the straggler and their ratio, and the slowed worker's measured duty cycle
  (running share of wall time, from the signals' times) and CPU seconds per
  wall second;
* ``straggler.png``: examples/s per strategy, without and with;
* ``logs/straggler-<strategy>-<with|without>.log``: every task's output.

The trainers' own deadlines are set far above a 75 ms stop
(``TRAINER_FLAGS``): the straggler is slow, never lost.

Owns DutyCycle, Settings, measure and the plot. Imports tfdist.cli,
tfdist.cluster.specs, tfdist.data (the bundled sample's path), tfdist.errors and
tfdist.bench (jobs, pin, report); no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from typing import Optional

from tfdist import cli
from tfdist import data as data_lib
from tfdist.bench import jobs
from tfdist.bench import pin
from tfdist.bench import report as report_lib
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError

PROG = "python -m tfdist.bench.straggler"
SLOWED_TASK = "worker-1"
STRATEGIES = ("multiworker", "ps")
# Deadlines far above a 75 ms stop: the heartbeat (multiworker), the stall
# watch (ps) and every peer deadline must see a slow worker, not a lost one.
TRAINER_FLAGS = ("--heartbeat_timeout=120", "--stall_timeout=120",
                 "--peer_timeout=300")
# The straggler starts with this line of the primary task: the second
# epoch, the first one steady examples/s count.
_STEADY_EPOCH_LINE = "Epoch 2/"
_POLL_S = 0.05  # how often the output is looked at: a polling interval


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
  """How much each run trains, and how slow the straggler is.

  Attributes:
    strategies: the strategies measured (each without and with).
    epochs, steps_per_epoch, batch_size: of each run (batch per worker);
      epochs after the first are the steady ones.
    running_ms, stopped_ms: the straggler's duty cycle: it runs
      ``running_ms`` of every ``running_ms + stopped_ms``.
    run_timeout: seconds before a run's tasks are killed and it is
      recorded as failed.
  """
  strategies: tuple = STRATEGIES
  epochs: int = 4
  steps_per_epoch: int = 800
  batch_size: int = 100
  running_ms: float = 25.0
  stopped_ms: float = 75.0
  run_timeout: float = 240.0


SETTINGS = {
    "full": Settings(),
    # The suite's: one strategy, a handful of steps; form, not speed.
    "smoke": Settings(strategies=("multiworker",), epochs=2,
                      steps_per_epoch=30, run_timeout=150.0),
}


def _cpu_seconds(pid: int) -> Optional[float]:
  """User + system CPU seconds of a process so far (None once it is gone)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
  except OSError:
    return None
  # Fields 14 and 15 of proc(5), counted from the state (field 3) here.
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DutyCycle:
  """Slows one process: a thread lets it run ``running_ms``, then stops it
  (SIGSTOP) for ``stopped_ms``, until :meth:`stop`, which always leaves it
  running (SIGCONT) and returns what was measured."""

  def __init__(self, pid: int, *, running_ms: float, stopped_ms: float):
    self._pid = pid
    self._running_s, self._stopped_s = running_ms / 1000, stopped_ms / 1000
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._cycle, daemon=True,
                                    name="straggler duty cycle")
    self._measured = {"running_s": 0.0, "stopped_s": 0.0, "cycles": 0}
    # (time.monotonic(), CPU seconds) at the start and at the last resume:
    # the process may be gone by the time stop() is called.
    self._cpu_first = self._cpu_last = None
    self._started = None

  def start(self) -> None:
    self._started = time.monotonic()
    self._cpu_first = (self._started, _cpu_seconds(self._pid))
    self._thread.start()

  def _signal(self, signum: int) -> bool:
    try:
      os.kill(self._pid, signum)
      return True
    except ProcessLookupError:
      return False  # it exited: nothing left to slow

  def _cycle(self) -> None:
    measured = self._measured
    try:
      while True:
        began = time.monotonic()
        if self._done.wait(self._running_s) or not self._signal(
            signal.SIGSTOP):
          measured["running_s"] += time.monotonic() - began
          return
        stopped = time.monotonic()
        self._done.wait(self._stopped_s)
        self._signal(signal.SIGCONT)
        resumed = time.monotonic()
        cpu = _cpu_seconds(self._pid)
        if cpu is not None:
          self._cpu_last = (resumed, cpu)
        measured["running_s"] += stopped - began
        measured["stopped_s"] += resumed - stopped
        measured["cycles"] += 1
    finally:
      self._signal(signal.SIGCONT)

  @property
  def cycles(self) -> int:
    """Stop/continue cycles completed so far."""
    return self._measured["cycles"]

  def stop(self) -> dict:
    """Ends the cycle, leaves the process running; the measured cycle."""
    self._done.set()
    if self._started is None:
      return {}
    self._thread.join(timeout=10)
    self._signal(signal.SIGCONT)  # also if the thread never got to run
    measured = dict(self._measured)
    total = measured["running_s"] + measured["stopped_s"]
    measured["duty_cycle"] = (round(measured["running_s"] / total, 3)
                              if total else None)
    (start, cpu_start), (end, cpu_end) = (self._cpu_first,
                                          self._cpu_last or (None, None))
    measured["cpu_seconds_per_second"] = (
        round((cpu_end - cpu_start) / (end - start), 3)
        if None not in (cpu_start, cpu_end) and end > start else None)
    measured.update(running_s=round(measured["running_s"], 2),
                    stopped_s=round(measured["stopped_s"], 2))
    return measured


def pin_tasks(job: jobs.Job) -> dict:
  """Gives each training task of a just started ``job`` its core (as
  tfdist.bench.pin does through exec): every thread the task has now, and
  so every thread it starts later. Returns task name -> core."""
  cores = sorted(os.sched_getaffinity(0))
  pinned = {}
  for name, process in job.processes.items():
    job_name, index = name.rsplit("-", 1)
    core = pin.core_for(cluster_lib.make_task(job.cluster, job_name,
                                              int(index)), cores)
    if core is None:
      continue
    try:
      for thread in os.listdir(f"/proc/{process.pid}/task"):
        os.sched_setaffinity(int(thread), {core})
    except (FileNotFoundError, ProcessLookupError):
      continue  # it already exited: its status says why
    pinned[name] = core
  return pinned


def trainer_flags(settings: Settings, mnist_dir: str) -> list:
  """The flags of every task of a run (jobs.Job adds --strategy)."""
  return [f"--mnist_dir={mnist_dir}", f"--batch_size={settings.batch_size}",
          f"--epochs={settings.epochs}",
          f"--steps_per_epoch={settings.steps_per_epoch}", "--verbose=2",
          *TRAINER_FLAGS]


def _wait_for_line(job: jobs.Job, name: str, text: str, until: float) -> bool:
  """Whether task ``name`` printed a line containing ``text`` before it
  exited or time.monotonic() passed ``until``."""
  while time.monotonic() < until:
    if any(text in line for line in list(job.output[name])):
      return True
    if not job.alive(name):
      return False
    time.sleep(_POLL_S)
  return False


def _outcome(job: jobs.Job, alive: list, timeout: float) -> Optional[str]:
  """Why a finished run failed, or None."""
  if alive:
    return f"{', '.join(alive)} did not finish within {timeout:.0f} s"
  failed = [f"{name} exited {job.status(name)}" for name in job.task_names()
            if job.status(name) != 0]
  if failed:
    return "; ".join(failed)
  if job.result(job.primary) is None:
    return f"no result line from {job.primary}"
  return None


def _write_log(job: jobs.Job, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    for name in job.task_names():
      f.writelines(f"[{name}] {line}\n" for line in job.output.get(name, ()))


def run_once(strategy: str, *, straggler: bool, settings: Settings,
             mnist_dir: str, log_path: str) -> dict:
  """One run of ``strategy``, with or without the straggler: its primary
  task's examples/s and accuracy, wall seconds, the measured duty cycle."""
  job = jobs.Job(strategy, trainer_flags(settings, mnist_dir))
  duty, error, alive = None, None, []
  start = time.monotonic()
  until = start + settings.run_timeout
  try:
    job.start()
    pinned = pin_tasks(job)
    if straggler:
      if _wait_for_line(job, job.primary, _STEADY_EPOCH_LINE, until):
        duty = DutyCycle(job.processes[SLOWED_TASK].pid,
                         running_ms=settings.running_ms,
                         stopped_ms=settings.stopped_ms)
        duty.start()
      else:
        error = f"{job.primary} never began its second epoch"
    alive = job.wait(job.task_names(), until)
  finally:
    measured = duty.stop() if duty else None
    job.kill()
  seconds = time.monotonic() - start
  _write_log(job, log_path)
  error = error or _outcome(job, alive, settings.run_timeout)
  line = job.result(job.primary)
  result = json.loads(line) if line and not error else {}
  record = {"examples_per_sec": result.get("steady_examples_per_sec"),
            "test_accuracy": result.get("test_accuracy"),
            "wall_seconds": round(seconds, 1), "pinned": pinned,
            "straggler": measured, "error": error}
  state = f"FAILED ({error}); see {log_path}" if error else (
      f"{record['examples_per_sec']:,.0f} examples/s, test accuracy "
      f"{record['test_accuracy']}, {seconds:.0f} s")
  print(f"straggler: {strategy} {'with' if straggler else 'without'}: "
        f"{state}", file=sys.stderr, flush=True)
  return record


def measure(settings: Settings, *, mnist_dir: str, out_dir: str) -> dict:
  """Every strategy without and with the straggler; the figure."""
  strategies = {}
  for strategy in settings.strategies:
    row = {}
    for straggler in (False, True):
      key = "with" if straggler else "without"
      row[key] = run_once(strategy, straggler=straggler, settings=settings,
                          mnist_dir=mnist_dir,
                          log_path=os.path.join(out_dir, "logs",
                                                f"straggler-{strategy}-{key}"
                                                ".log"))
    rates = [row[k]["examples_per_sec"] for k in ("without", "with")]
    row["ratio"] = round(rates[1] / rates[0], 3) if all(rates) else None
    strategies[strategy] = row
  duties = [row["with"]["straggler"]["duty_cycle"]
            for row in strategies.values()
            if (row["with"]["straggler"] or {}).get("duty_cycle")]
  return {"settings": dataclasses.asdict(settings),
          "slowed_task": SLOWED_TASK,
          "planned_duty_cycle": round(settings.running_ms / (
              settings.running_ms + settings.stopped_ms), 3),
          "measured_duty_cycle": (round(sum(duties) / len(duties), 3)
                                  if duties else None),
          "strategies": strategies,
          "errors": [f"{strategy} {key}: {row[key]['error']}"
                     for strategy, row in strategies.items()
                     for key in ("without", "with") if row[key]["error"]]}


def plot(figure: dict, path: str) -> None:
  """straggler.png: examples/s per strategy, without and with."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # files only, no display
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  strategies = list(figure["strategies"])
  fig, ax = plt.subplots(figsize=(6.5, 4))
  width = 0.38
  for offset, key, color in ((-width / 2, "without", "tab:blue"),
                             (width / 2, "with", "tab:red")):
    values = [figure["strategies"][s][key]["examples_per_sec"] or 0
              for s in strategies]
    bars = ax.bar([i + offset for i in range(len(strategies))], values,
                  width, color=color, label=f"{key} a straggler")
    ax.bar_label(bars, fmt="%.0f", fontsize=8)
  labels = [f"{s} (2 workers)\nwith / without: "
            f"{report_lib.fmt(figure['strategies'][s]['ratio'], '.2f')}"
            for s in strategies]
  ax.set_xticks(range(len(strategies)), labels)
  ax.set_ylabel("examples/s (median epoch after the first)")
  ax.set_title(f"{SLOWED_TASK} slowed to a duty cycle of "
               f"{report_lib.fmt(figure['measured_duty_cycle'], '.2f')}: "
               "sync vs async", fontsize=10)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _parser() -> cli.OneLineParser:
  parser = cli.OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--mnist_dir", default=data_lib.BUNDLED_MNIST_DIR,
                      help="the four MNIST IDX files (default: the sample "
                           "bundled with tfdist)")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny settings, one strategy: for tests")
  return parser


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  out_dir = os.path.abspath(args.out_dir)
  mnist_dir = os.path.abspath(args.mnist_dir)
  try:
    data_lib.load_mnist_idx(mnist_dir)  # one line naming a missing file
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--out_dir={args.out_dir}: cannot create it "
                      f"({e.strerror})") from e
  load_before = round(os.getloadavg()[0], 2)
  figure = measure(SETTINGS["smoke" if args.smoke else "full"],
                   mnist_dir=mnist_dir, out_dir=out_dir)
  figure["load_average"] = {"before": load_before,
                            "after": round(os.getloadavg()[0], 2)}
  figure["machine"] = report_lib.machine()
  plot(figure, os.path.join(out_dir, "straggler.png"))
  report_lib.write_atomically(os.path.join(out_dir, "results.json"),
                              json.dumps(figure, indent=1))
  print(json.dumps({k: figure[k] for k in ("measured_duty_cycle",
                                           "load_average")}
                   | {s: {"without": r["without"]["examples_per_sec"],
                          "with": r["with"]["examples_per_sec"],
                          "ratio": r["ratio"]}
                      for s, r in figure["strategies"].items()}), flush=True)
  for error in figure["errors"]:
    print(f"straggler: run failed: {error}", file=sys.stderr)
  return 1 if figure["errors"] else 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
