r"""The sharding figures: ``python -m tfdist.bench.sharding --out_dir=DIR``.

The sparse model (trainers.sparse: an embedding-bag classifier of
generated id lists) as real task processes on loopback
(tfdist.bench.jobs), a chief and 2 workers with 1, 2 or 4 ps tasks, its
table split over them (``--variable_partitioner=min_size``):

* **scaling**: step time and examples/s (the second epoch) with 1, 2 and
  4 ps tasks at a fixed table (``--vocab_size`` x ``--embedding_dim``);
* **memory**: each ps task's peak resident memory in those runs, which
  falls about as 1/N above the runtime's own (the bytes the result line
  says each holds: the table's shard and its Adagrad accumulator);
* **capped**: a larger table under a memory cap on every ps task, as a
  Kubernetes limit would set it (``RLIMIT_AS``, tfdist.bench.capped): the
  cap is what a ps of the 2-way split needed (its measured address-space
  peak) and some room; one ps, holding the whole table, cannot train
  under it, two can;
* **traffic**: the bytes every ps task sent and received per step
  (``ss``'s counters of its sockets, over the second epoch) against the
  table's size: a lookup reads the batch's rows, never the whole table;
* the same model also trains under mirrored and multiworker (the table
  mirrored whole on every replica): one run each, for their accuracy.

Writes ``results.json`` (settings, machine, load, every run's figures),
``sharding.png`` and ``logs/<run>.log`` into --out_dir. The chief's
accuracy is compared with the data's known best (the Bayes rule's).

Owns Settings, the runs and the plot. Imports tfdist.cli, errors,
data.planted and tfdist.bench (capped, jobs, report, runner); no
TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from typing import Optional

from tfdist import cli
from tfdist.bench import capped
from tfdist.bench import jobs
from tfdist.bench import report as report_lib
from tfdist.bench import runner
from tfdist.data import planted as planted_lib
from tfdist.errors import ConfigError

PROG = "python -m tfdist.bench.sharding"
_POLL_S = 0.05  # how often the output is looked at: a polling interval
_SAMPLE_S = 0.25  # how often the ps tasks' memory is read
_EPOCH_LINE = re.compile(r"^Epoch (\d+)/")
_PROGRESS_LINE = re.compile(r"^\d+/\d+ - ")
_HOSTING_PEAK = re.compile(r"(ps-\d+) peak memory ([\d.]+) MiB")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
  """What the runs train.

  Attributes:
    vocab_size: the table of the scaling and memory runs (rows).
    embedding_dim: floats per row.
    ps_counts: the ps tasks of the scaling runs.
    traffic_vocabs: tables of the traffic runs (2 ps tasks).
    capped_vocab: the table that one capped ps cannot hold.
    cap_room_mib: the cap: the 2-way split's address-space peak plus this.
    epochs, steps_per_epoch: of every run (the second epoch is measured).
    run_timeout: seconds before a run's tasks are killed (it failed).
  """
  vocab_size: int = 1_000_000
  embedding_dim: int = 32
  ps_counts: tuple = (1, 2, 4)
  traffic_vocabs: tuple = (100_000, 1_000_000, 4_000_000)
  capped_vocab: int = 4_000_000
  cap_room_mib: int = 128
  epochs: int = 2
  steps_per_epoch: int = 400
  run_timeout: float = 900.0


SETTINGS = {"full": Settings(),
            # Every run and file in a few minutes: form, not figures.
            "smoke": Settings(vocab_size=50_000, traffic_vocabs=(20_000,
                                                                 50_000),
                              capped_vocab=50_000, ps_counts=(1, 2),
                              steps_per_epoch=60, run_timeout=300.0)}


def table_bytes(settings: Settings, vocab: int) -> int:
  return vocab * settings.embedding_dim * 4


def _ps_memory(pid: int) -> Optional[dict]:
  """A process's peak address space and resident memory (MiB)."""
  try:
    with open(f"/proc/{pid}/status") as f:
      fields = dict(line.split(":", 1) for line in f if ":" in line)
  except OSError:
    return None
  if "VmPeak" not in fields or "VmHWM" not in fields:
    return None  # exited meanwhile (a zombie's status has no memory)
  return {name: int(fields[key].split()[0]) / 1024
          for name, key in (("vm_peak_mib", "VmPeak"),
                            ("rss_peak_mib", "VmHWM"))}


def socket_bytes(ports) -> int:
  """Bytes sent and received so far on the established TCP sockets whose
  local port is one of ``ports`` (the ps tasks' servers): ``ss -ti``."""
  text = subprocess.run(["ss", "-tinH", "state", "established"],
                        capture_output=True, text=True, check=True).stdout
  total, counting = 0, False
  for line in text.splitlines():
    if not line.startswith((" ", "\t")):  # a socket: its addresses
      local = line.split()[2]
      counting = int(local.rsplit(":", 1)[1]) in ports
    elif counting:
      total += sum(int(n) for n in re.findall(
          r"\bbytes_(?:acked|received):(\d+)", line))
  return total


class _Watch:
  """Samples the ps tasks' memory and, over the chief's second epoch, the
  bytes their sockets carried."""

  def __init__(self, job: jobs.Job):
    self._job = job
    self._ports = {int(a.rsplit(":", 1)[1]) for a in job.cluster["ps"]}
    self.memory = {}
    self.epoch_bytes = None
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True,
                                    name="sharding bench watch")

  def start(self) -> None:
    self._thread.start()

  def stop(self) -> None:
    self._done.set()
    self._thread.join()

  def _sample_memory(self) -> None:
    for name, process in self._job.processes.items():
      if name.startswith("ps-"):
        seen = _ps_memory(process.pid)
        if seen is not None:
          self.memory[name] = seen

  def _run(self) -> None:
    seen, began = 0, None
    while not self._done.wait(_SAMPLE_S if began is None else _POLL_S):
      self._sample_memory()
      lines = list(self._job.output.get("chief-0", ()))
      for line in lines[seen:]:
        epoch = _EPOCH_LINE.match(line)
        if epoch and epoch.group(1) == "2":
          began = socket_bytes(self._ports)
        elif began is not None and _PROGRESS_LINE.match(line):
          if self.epoch_bytes is None:
            self.epoch_bytes = socket_bytes(self._ports) - began
      seen = len(lines)


def _cluster(ps_tasks: int) -> dict:
  return {"chief": jobs.free_cluster("ps")["chief"],
          "worker": jobs.free_cluster("ps")["worker"],
          "ps": [address for _ in range(ps_tasks)
                 for address in jobs.free_cluster("ps")["ps"]]}


def _flags(settings: Settings, vocab: int, work_dir: str) -> list:
  return [f"--vocab_size={vocab}", f"--embedding_dim={settings.embedding_dim}",
          f"--generated_dir={work_dir}", f"--epochs={settings.epochs}",
          f"--steps_per_epoch={settings.steps_per_epoch}", "--verbose=2",
          "--peer_timeout=300", "--stall_timeout=300"]


def _write_log(job: jobs.Job, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    for name in job.task_names():
      f.writelines(f"[{name}] {line}\n" for line in job.output.get(name, ()))


def _failure(job: jobs.Job, alive: list) -> Optional[str]:
  """Why a run failed (its first error line, or the statuses), or None."""
  if alive:
    return f"{', '.join(alive)} still running at the run's timeout"
  if job.status(job.primary) == 0 and job.result(job.primary):
    return None
  for name in [job.primary, *job.task_names()]:
    if job.error_lines(name):
      return f"{name}: {job.error_lines(name)[0]}"
  return "; ".join(f"{n} exited {job.status(n)}" for n in job.task_names()
                   if job.status(n) != 0)


def run_ps(name: str, *, settings: Settings, ps_tasks: int, vocab: int,
           work_dir: str, out_dir: str,
           cap_mib: Optional[int] = None) -> dict:
  """One ps job (chief, 2 workers, ``ps_tasks`` ps, each capped at
  ``cap_mib`` if given); its record."""
  prefix = ((lambda task: capped.command(cap_mib)
             if task.startswith("ps-") else [])
            if cap_mib else (lambda task: []))
  job = jobs.Job("ps", _flags(settings, vocab, work_dir),
                 cluster=_cluster(ps_tasks), trainer="sparse", prefix=prefix)
  watch = _Watch(job)
  start = time.monotonic()
  try:
    job.start()
    watch.start()
    alive = job.wait(job.task_names(), start + settings.run_timeout)
  finally:
    job.kill()
    watch.stop()
  _write_log(job, os.path.join(out_dir, "logs", f"{name}.log"))
  error = _failure(job, alive)
  line = job.result(job.primary)
  result = json.loads(line) if line and not error else {}
  steps = settings.steps_per_epoch
  peaks = {m.group(1): float(m.group(2)) for task in job.task_names()
           for line in job.output[task] for m in [_HOSTING_PEAK.search(line)]
           if m}
  record = {
      "ps_tasks": ps_tasks, "vocab_size": vocab,
      "table_mib": round(table_bytes(settings, vocab) / 2**20, 1),
      "cap_mib": cap_mib, "error": error,
      "wall_seconds": round(time.monotonic() - start, 1),
      "examples_per_sec": result.get("steady_examples_per_sec"),
      "step_ms": (round(1000 * result["epoch_seconds"][-1] / steps, 2)
                  if result else None),
      "test_accuracy": result.get("test_accuracy"),
      "sharded_variables": result.get("sharded_variables"),
      "bytes_per_ps": result.get("bytes_per_ps"),
      "peak_rss_mib_per_ps": peaks or None,
      "address_space_peak_mib_per_ps": {
          task: round(m["vm_peak_mib"]) for task, m in watch.memory.items()},
      "ps_bytes_per_step": (round(watch.epoch_bytes / steps)
                            if watch.epoch_bytes and not error else None)}
  print(f"sharding: {name}: "
        + (f"FAILED: {error}" if error else
           f"{record['examples_per_sec']} examples/s, {record['step_ms']} "
           f"ms/step, accuracy {record['test_accuracy']}, ps peak "
           f"{record['peak_rss_mib_per_ps']} MiB, "
           f"{record['ps_bytes_per_step']} ps bytes/step"),
        file=sys.stderr, flush=True)
  return record


def run_synchronous(strategy: str, *, settings: Settings, vocab: int,
                    work_dir: str, out_dir: str) -> dict:
  """The model under mirrored (one process, 2 replicas) or multiworker (2
  workers): the table mirrored whole. Its accuracy and examples/s."""
  flags = _flags(settings, vocab, work_dir)
  if strategy == "mirrored":
    output, status, error = runner.run_to_end(
        [sys.executable, "-m", "trainers.sparse", "--strategy=mirrored",
         *flags], env=runner.child_env(dict(os.environ)),
        timeout=settings.run_timeout)
    with open(os.path.join(out_dir, "logs", "mirrored.log"), "w") as f:
      f.write(output)
    lines = [line for line in output.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines and status == 0 else {}
    error = error or (None if result else f"exited {status}")
  else:
    job = jobs.Job("multiworker", flags, trainer="sparse")
    try:
      job.start()
      alive = job.wait(job.task_names(),
                       time.monotonic() + settings.run_timeout)
    finally:
      job.kill()
    _write_log(job, os.path.join(out_dir, "logs", "multiworker.log"))
    error = _failure(job, alive)
    line = job.result(job.primary)
    result = json.loads(line) if line and not error else {}
  print(f"sharding: {strategy}: {error or result.get('test_accuracy')}",
        file=sys.stderr, flush=True)
  return {"vocab_size": vocab, "error": error,
          "test_accuracy": result.get("test_accuracy"),
          "examples_per_sec": result.get("steady_examples_per_sec")}


def _best_accuracy(settings: Settings, vocab: int, work_dir: str):
  path = os.path.join(work_dir, planted_lib.Planted(vocab_size=vocab).name,
                      planted_lib.INFO_FILE)
  try:
    with open(path) as f:
      return json.load(f)["best_accuracy"]
  except OSError:
    return None


def measure(settings: Settings, *, work_dir: str, out_dir: str) -> dict:
  """Every run of the module docstring; the figures."""
  def ps_run(ps_tasks, vocab, cap_mib=None):
    name = f"ps{ps_tasks}-{vocab}" + (f"-capped{cap_mib}" if cap_mib else "")
    runs[name] = run_ps(name, settings=settings, ps_tasks=ps_tasks,
                        vocab=vocab, work_dir=work_dir, out_dir=out_dir,
                        cap_mib=cap_mib)
    return runs[name]

  runs = {}
  scaling = {n: ps_run(n, settings.vocab_size) for n in settings.ps_counts}
  traffic = {v: (scaling.get(2) if v == settings.vocab_size else None)
             or ps_run(2, v) for v in settings.traffic_vocabs}
  split = traffic.get(settings.capped_vocab) or ps_run(2,
                                                        settings.capped_vocab)
  peaks = (split["address_space_peak_mib_per_ps"] or {}).values()
  cap_mib = int(max(peaks)) + settings.cap_room_mib if peaks else None
  capped_runs = ({n: ps_run(n, settings.capped_vocab, cap_mib)
                  for n in (1, 2)} if cap_mib else {})
  small = min(settings.traffic_vocabs)
  synchronous = {s: run_synchronous(s, settings=settings, vocab=small,
                                    work_dir=work_dir, out_dir=out_dir)
                 for s in ("mirrored", "multiworker")}
  two_ps = capped_runs.get(2, {})
  return {
      "settings": dataclasses.asdict(settings),
      "best_accuracy": {v: _best_accuracy(settings, v, work_dir)
                        for v in sorted({settings.vocab_size,
                                         *settings.traffic_vocabs})},
      "scaling": scaling, "traffic": traffic,
      "capped": {"vocab_size": settings.capped_vocab,
                 "table_mib": round(table_bytes(
                     settings, settings.capped_vocab) / 2**20, 1),
                 "cap_mib": cap_mib, "runs": capped_runs,
                 "one_ps_failed": bool(capped_runs.get(1, {}).get("error")),
                 "two_ps_trained": bool(two_ps) and not two_ps["error"]},
      "synchronous": synchronous,
      "errors": [f"{name}: {r['error']}" for name, r in runs.items()
                 if r["error"] and (not r["cap_mib"] or r["ps_tasks"] > 1)]
                + [f"{s}: {r['error']}" for s, r in synchronous.items()
                   if r["error"]]}


def plot(figure: dict, path: str) -> None:
  """sharding.png: examples/s and peak memory per ps against the ps tasks;
  the bytes per step against the table's size."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # files only, no display
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  scaling = {int(n): r for n, r in figure["scaling"].items()
             if not r["error"]}
  fig, (speed, memory, traffic) = plt.subplots(1, 3, figsize=(14, 4))
  counts = sorted(scaling)
  speed.bar([str(n) for n in counts],
            [scaling[n]["examples_per_sec"] for n in counts])
  speed.set_xlabel("ps tasks")
  speed.set_ylabel("examples/s (second epoch)")
  speed.set_title("speed, table "
                  f"{next(iter(scaling.values()))['table_mib']:,.0f} MiB"
                  if scaling else "speed")
  for n in counts:
    speed.annotate(f"{scaling[n]['step_ms']} ms/step",
                   (counts.index(n), scaling[n]["examples_per_sec"]),
                   ha="center", va="bottom", fontsize=8)
  peaks = [max((scaling[n]["peak_rss_mib_per_ps"] or {0: 0}).values())
           for n in counts]
  memory.plot(counts, peaks, "o-", label="measured (largest ps)")
  if counts:
    held = [max(scaling[n]["bytes_per_ps"].values()) / 2**20 for n in counts]
    base = peaks[0] - held[0]
    memory.plot(counts, [base + h for h in held], "x--",
                label="runtime + bytes it holds")
  memory.set_xlabel("ps tasks")
  memory.set_ylabel("peak resident MiB per ps task")
  memory.set_xticks(counts)
  memory.legend(fontsize=8)
  capped = figure["capped"]
  memory.set_title(f"capped at {capped['cap_mib']} MiB address space: "
                   f"{capped['table_mib']:,.0f} MiB table\n1 ps "
                   f"{'failed' if capped['one_ps_failed'] else 'trained'}, "
                   f"2 ps {'trained' if capped['two_ps_trained'] else 'failed'}",
                   fontsize=9)
  points = sorted((r["table_mib"], r["ps_bytes_per_step"])
                  for r in figure["traffic"].values()
                  if r["ps_bytes_per_step"])
  traffic.loglog([p[0] for p in points], [p[1] / 2**20 for p in points],
                 "o-", label="measured per step (2 ps)")
  traffic.loglog([p[0] for p in points], [p[0] for p in points], ":",
                 label="the whole table")
  traffic.set_xlabel("table MiB")
  traffic.set_ylabel("MiB to and from the ps tasks")
  traffic.set_title("lookup traffic per step")
  traffic.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _parser() -> cli.OneLineParser:
  parser = cli.OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--work_dir", default=os.path.join(
      os.environ.get("TMPDIR", "/tmp"), "tfdist-sharding-bench"),
                      help="where the generated data goes (never into the "
                           "repository)")
  parser.add_argument("--smoke", action="store_true",
                      help="small tables, few steps: every run and file")
  return parser


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  out_dir = os.path.abspath(args.out_dir)
  try:
    os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
  except OSError as e:
    raise ConfigError(f"--out_dir={args.out_dir}: cannot create it "
                      f"({e.strerror})") from e
  started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
  load_before = round(os.getloadavg()[0], 2)
  figure = measure(SETTINGS["smoke" if args.smoke else "full"],
                   work_dir=os.path.abspath(args.work_dir), out_dir=out_dir)
  figure.update(
      command=" ".join([PROG, *(["--smoke"] if args.smoke else []),
                        f"--out_dir={args.out_dir}"]),
      started=started, machine=report_lib.machine(),
      load_average={"before": load_before,
                    "after": round(os.getloadavg()[0], 2)})
  plot(figure, os.path.join(out_dir, "sharding.png"))
  report_lib.write_atomically(os.path.join(out_dir, "results.json"),
                              json.dumps(figure, indent=1))
  for error in figure["errors"]:
    print(f"sharding: run failed: {error}", file=sys.stderr)
  return 1 if figure["errors"] else 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
