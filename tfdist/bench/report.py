"""The benchmark's report: the machine, results.md, the plots, atomic files.

Owns what the figures ran on and how they are shown. Imports
tfdist.bench.figures (thresholds) only; matplotlib when plotting.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform

from tfdist.bench.figures import INCEPTION_THRESHOLD


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


def fmt(value, spec: str = ",.0f") -> str:
  return "–" if value is None else format(value, spec)


def _runs_table(report: dict) -> list:
  """The machine, the command and a row per run."""
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
        f"{row['global_batch_size']} | {fmt(row['examples_per_sec'])} | "
        f"{fmt(row['test_accuracy'], '.4f')} | "
        f"{fmt(reached, '.2f')} | "
        f"{fmt(row['max_task_rss_mb'])} |"
        + (f" FAILED: {row['error']}" if row["error"] else ""))
  return lines


def _figure_rows(figs: dict) -> list:
  """A row per figure."""
  lines = ["| figure | value |", "|---|---|"]
  for name, value in figs["weak_scaling"].items():
    lines.append(f"| weak-scaling efficiency, {name}, 2 workers | "
                 f"{fmt(value, '.3f')} |")
  if figs["overhead"]:
    lines.append(f"| trainer / plain Keras examples/s | "
                 f"{figs['overhead']['ratio']:.3f} |")
  spe = figs.get("overhead_steps_per_execution")
  if spe:
    lines.append(_ratio_row(
        f"trainer / plain Keras examples/s, {spe['steps_per_execution']} "
        "steps per execution", spe, "trainer", "keras"))
  lines += _communication_rows(figs)
  rounds = figs.get("overhead_inception")
  if rounds:
    trainer, keras = (", ".join(f"{r:,.0f}" for r in rounds[side])
                      for side in ("trainer_examples_per_sec",
                                   "keras_examples_per_sec"))
    lines.append(f"| trainer / plain Keras examples/s, mini-Inception "
                 f"(ratio of the medians) | {rounds['ratio']:.3f} "
                 f"({trainer} / {keras}) |")
  inception = figs.get("inception")
  if inception:
    seconds = inception[f"seconds_to_{INCEPTION_THRESHOLD:g}"]
    lines.append(f"| {inception['model']}: seconds to "
                 f"{INCEPTION_THRESHOLD:g} test accuracy; final accuracy | "
                 f"{fmt(seconds, '.1f')}; {inception['test_accuracy']:.4f} |")
  sync = figs["sync_vs_async"]
  if sync:
    lines.append(f"| accuracy after {sync['at_seconds']:.1f} s: sync / async "
                 f"| {fmt(sync['sync_accuracy'], '.4f')} / "
                 f"{fmt(sync['async_accuracy'], '.4f')} |")
    lines.append(f"| share of that time sync was at least as accurate | "
                 f"{fmt(sync['sync_ahead_fraction'], '.2f')} |")
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
  return lines


def _ratio_row(title: str, ratio: dict, a: str, b: str) -> str:
  """A row of tfdist.bench.figures' ratio of a's examples/s to b's."""
  return (f"| {title} | {ratio['ratio']:.3f} "
          f"({ratio[f'{a}_examples_per_sec']:,.0f} / "
          f"{ratio[f'{b}_examples_per_sec']:,.0f}) |")


def _communication_rows(figs: dict) -> list:
  """The peer, multiworker on one worker, collectives and ps RPCs."""
  lines = [_ratio_row(f"tfdist / TF tutorial peer examples/s, {workers} "
                      "worker(s)", peer, "tfdist", "peer")
           for workers, peer in (figs.get("peer") or {}).items()]
  one = figs.get("multiworker_one_vs_one_device")
  if one:
    lines.append(_ratio_row(
        "multiworker 1 worker / one-device trainer examples/s", one,
        "multiworker", "one_device"))
  coll = figs.get("collectives")
  if coll:
    lines.append(f"| multiworker: collectives per step (1 / 2 workers); ms "
                 f"per step (1 / 2 workers); ms per collective | "
                 f"{fmt(coll['collectives_per_step_one_worker'])} / "
                 f"{fmt(coll['collectives_per_step'])}; "
                 f"{coll['ms_per_step_one_worker']:.2f} / "
                 f"{coll['ms_per_step_two_workers']:.2f}; "
                 f"{fmt(coll['ms_per_collective'], '.2f')} |")
  rpc = figs.get("ps_rpc")
  if rpc:
    lines.append(f"| ps, 1 worker: ms per step at 1 / "
                 f"{rpc['steps_per_execution']} steps per RPC; ms per RPC | "
                 f"{rpc['ms_per_step']:.2f} / "
                 f"{rpc['ms_per_step_batched']:.2f}; "
                 f"{rpc['ms_per_rpc']:.2f} |")
  return lines


def markdown(report: dict, more_rows: tuple = ()) -> str:
  """results.md: the machine, the command, the tables (``more_rows``: more
  rows of the figure table)."""
  lines = (_runs_table(report) + [""] + _figure_rows(report["figures"])
           + list(more_rows))
  lines += ["", "| target | goal | value | |", "|---|---|---|---|"]
  for t in report["targets"]:
    lines.append(f"| {t['target']} | {t['goal']:g} | "
                 f"{fmt(t['value'], '.4g')} | {t['note']} |")
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


def write_atomically(path: str, text: str) -> None:
  # Whole or not at all: readers never see half a file.
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)
