"""The benchmark's figures and targets, from the records of its runs.

Every figure picks its runs by the tags and labels the plan gave them
(tfdist.bench.plan), never by their names: examples/s per run, seconds to an
accuracy, weak scaling per series, the trainer's overhead against plain Keras
and against the TF tutorial's code (the peer), collectives per step and
milliseconds per collective and per ps RPC, synchronous against asynchronous
accuracy over time, the large-batch recipe, the float16 all-reduce and peak
memory. Owns them and the targets they are held to. Imports
tfdist.training.communication and tfdist.bench.plan only.
"""

from __future__ import annotations

import statistics
from typing import Optional

from tfdist.bench import plan as plan_lib
from tfdist.training import communication

SOFTMAX_THRESHOLDS = (0.91, 0.915)
INCEPTION_THRESHOLD = 0.98
# The trainer against plain Keras, mini-Inception: examples/s ratio goal.
INCEPTION_OVERHEAD_GOAL = 0.95


def _primary(record: Optional[dict]) -> Optional[dict]:
  """The result of the task that timed and evaluated a run, if it ran."""
  if not record or record["error"]:
    return None
  return record["tasks"].get(plan_lib.primary_task(record["strategy"]))


def _tagged(records: dict, tag: str) -> list:
  """The records of the runs tagged ``tag``, in the order they ran."""
  return [r for r in records.values() if tag in r.get("tags", ())]


def _one(records: dict, tag: str) -> Optional[dict]:
  """The record of the run tagged ``tag`` (None if it was not run)."""
  tagged = _tagged(records, tag)
  return tagged[0] if tagged else None


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


def rounds_overhead(trainers: list, kerases: list) -> Optional[dict]:
  """The trainer's examples/s against plain Keras's over alternated
  rounds: the ratio of the medians, or None unless every round ran."""
  if not trainers or not all(trainers) or not all(kerases) or not kerases:
    return None
  trainer = [r["steady_examples_per_sec"] for r in trainers]
  keras = [r["steady_examples_per_sec"] for r in kerases]
  return {"trainer_examples_per_sec": trainer,
          "keras_examples_per_sec": keras,
          "ratio": round(statistics.median(trainer)
                         / statistics.median(keras), 3)}


def _throughput(records: dict) -> tuple:
  """A row per run, and each evaluated run's seconds to its thresholds."""
  rows, time_to_accuracy = [], {}
  for name, record in records.items():
    primary = _primary(record)
    rows.append({
        "run": name, "strategy": record["strategy"],
        "trainer": record["trainer"], "workers": record["workers"],
        "global_batch_size": record["global_batch_size"],
        "examples_per_sec": primary and primary["steady_examples_per_sec"],
        "test_accuracy": primary and primary["test_accuracy"],
        "max_task_rss_mb": max((m for m in record["peak_rss_mb"].values()
                                if m), default=None),
        "error": record["error"]})
    if primary and "accuracy_curve" in primary:
      time_to_accuracy[name] = {
          f"{t:g}": seconds_to_accuracy(primary["accuracy_curve"], t)
          for t in (SOFTMAX_THRESHOLDS if record["trainer"] == "mnist"
                    else (INCEPTION_THRESHOLD,))}
  return rows, time_to_accuracy


def _weak_scaling(records: dict) -> dict:
  """Efficiency of 2 workers per series (label): multiworker and ps always
  (None if not run), then every further series whose 1-worker run ran."""
  out = {"multiworker": None, "ps": None}
  scaling = _tagged(records, plan_lib.SCALING)
  for one in (r for r in scaling if r["workers"] == 1):
    many = [r for r in scaling if r["label"] == one["label"]
            and r["workers"] > 1]
    out[one["label"]] = weak_scaling(
        _primary(one), _primary(many[0]) if many else None,
        many[0]["workers"] if many else 2)
  return out


def _overheads(records: dict) -> dict:
  """The trainer against plain Keras per comparison: softmax at one step per
  execution (``overhead``, always), at several (if run), mini-Inception
  (medians of the alternated rounds, if run)."""
  groups = {}
  for record in _tagged(records, plan_lib.OVERHEAD):
    key = (record["label"], record["steps_per_execution"])
    side = "keras" if record["strategy"] == "keras" else "trainer"
    groups.setdefault(key, {"keras": [], "trainer": []})[side].append(
        _primary(record))
  out = {"overhead": None}
  for (label, steps), sides in groups.items():
    trainer = (sides["trainer"] or [None])[0]
    keras = (sides["keras"] or [None])[0]
    if label:
      out["overhead_inception"] = rounds_overhead(sides["trainer"],
                                                  sides["keras"])
    elif steps == 1:
      out["overhead"] = overhead(trainer, keras)
    else:
      ratio = overhead(trainer, keras)
      if ratio:
        out["overhead_steps_per_execution"] = dict(
            ratio, steps_per_execution=steps)
  return out


def _series(records: dict, label: str) -> dict:
  """The weak-scaling series ``label``: workers -> primary result."""
  return {r["workers"]: _primary(r) for r in _tagged(records, plan_lib.SCALING)
          if r["label"] == label}


def _peer(records: dict) -> Optional[dict]:
  """tfdist's multiworker against the TF tutorial's code on as many
  workers: examples/s and their ratio per cluster size."""
  ours = _series(records, "multiworker")
  out = {}
  for record in _tagged(records, plan_lib.PEER):
    peer, tfdist = _primary(record), ours.get(record["workers"])
    if peer and tfdist:
      out[str(record["workers"])] = _ratio(tfdist, peer, "tfdist", "peer")
  return out or None


def _ratio(a: dict, b: dict, a_name: str, b_name: str) -> dict:
  """Two runs' examples/s and a's over b's."""
  a_rate, b_rate = (r["steady_examples_per_sec"] for r in (a, b))
  return {f"{a_name}_examples_per_sec": a_rate,
          f"{b_name}_examples_per_sec": b_rate,
          "ratio": round(a_rate / b_rate, 3)}


def _multiworker_one(records: dict) -> Optional[dict]:
  """multiworker with one worker against the one-device trainer (mirrored
  on one device, the overhead run): what the multi-worker runtime costs."""
  one_device = next((_primary(r) for r in _tagged(records, plan_lib.OVERHEAD)
                     if r["strategy"] == "mirrored" and not r["label"]
                     and r["steps_per_execution"] == 1), None)
  multiworker = _series(records, "multiworker").get(1)
  if not one_device or not multiworker:
    return None
  return _ratio(multiworker, one_device, "multiworker", "one_device")


def _ms_per_step(result: dict) -> float:
  return 1000 * result["global_batch_size"] / result["steady_examples_per_sec"]


def _collectives(records: dict) -> Optional[dict]:
  """Collectives per step (counted in the traced step) and milliseconds per
  collective of the multiworker series: each worker computes the same
  per-worker batch at 1 and 2 workers, so the extra milliseconds of a
  2-worker step over the extra collectives is what one costs (round trips,
  and waiting for the slower worker)."""
  series = _series(records, "multiworker")
  one, two = series.get(1), series.get(2)
  if not one or not two or two.get("collectives_per_step") is None:
    return None
  extra = two["collectives_per_step"] - (one.get("collectives_per_step") or 0)
  ms_one, ms_two = _ms_per_step(one), _ms_per_step(two)
  return {"collectives_per_step": two["collectives_per_step"],
          "collectives_per_step_one_worker": one.get("collectives_per_step"),
          "all_reduce_bytes": two.get("all_reduce_bytes"),
          "ms_per_step_one_worker": round(ms_one, 3),
          "ms_per_step_two_workers": round(ms_two, 3),
          "ms_per_collective": (round((ms_two - ms_one) / extra, 3)
                                if extra > 0 else None)}


def _ps_rpc(records: dict) -> Optional[dict]:
  """Milliseconds per ps RPC: one ps worker's step at 1 step per scheduled
  function (one RPC each) against N steps per function (one RPC per N)."""
  single = _series(records, "ps").get(1)
  for record in _tagged(records, plan_lib.SCALING):
    n = record["steps_per_execution"]
    batched = _primary(record)
    if (record["strategy"] == "ps" and n > 1 and record["workers"] == 1
        and single and batched):
      saved = _ms_per_step(single) - _ms_per_step(batched)
      return {"steps_per_execution": n,
              "ms_per_step": round(_ms_per_step(single), 3),
              "ms_per_step_batched": round(_ms_per_step(batched), 3),
              "ms_per_rpc": round(saved / (1 - 1 / n), 3)}
  return None


def _model_accuracy(records: dict) -> dict:
  """mini-Inception's accuracy run, if it was planned."""
  record = _one(records, plan_lib.MODEL_ACCURACY)
  if record is None:
    return {}
  result = _primary(record)
  return {"inception": result and {
      "run": record["name"], "model": result["model"],
      "test_accuracy": result["test_accuracy"],
      "examples_per_sec": result["steady_examples_per_sec"],
      f"seconds_to_{INCEPTION_THRESHOLD:g}": seconds_to_accuracy(
          result["accuracy_curve"], INCEPTION_THRESHOLD),
      "curve": result["accuracy_curve"]}}


def _sync_vs_async(records: dict) -> Optional[dict]:
  sync_record = _one(records, plan_lib.SYNC)
  async_record = _one(records, plan_lib.ASYNC)
  sync, asynchronous = _primary(sync_record), _primary(async_record)
  if not sync or not asynchronous:
    return None
  # Compare at the time both have trained for: the shorter run's end.
  at = min(sync["accuracy_curve"][-1][0],
           asynchronous["accuracy_curve"][-1][0])
  return {
      "sync_run": sync_record["name"], "async_run": async_record["name"],
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


def _large_batch(records: dict) -> Optional[dict]:
  base_record = _one(records, plan_lib.RECIPE_BASE)
  base = _primary(base_record)
  if not base:
    return None
  large = {"base_global_batch": base["global_batch_size"],
           "base_learning_rate": base_record["learning_rate"],
           "base_accuracy": base["test_accuracy"], "runs": {}}
  for record in _tagged(records, plan_lib.LARGE_BATCH):
    result = _primary(record)
    if result:
      large["runs"][record["name"]] = {
          "label": record["label"],
          "global_batch_size": result["global_batch_size"],
          "test_accuracy": result["test_accuracy"],
          "points_vs_base": round(100 * (result["test_accuracy"]
                                         - base["test_accuracy"]), 2)}
  return large


def _all_reduce_float16(records: dict) -> Optional[dict]:
  fp32 = _primary(_one(records, plan_lib.ALL_REDUCE_FLOAT32))
  fp16 = _primary(_one(records, plan_lib.ALL_REDUCE_FLOAT16))
  if not (fp32 and fp16 and fp32["all_reduce_bytes"]
          and fp16["all_reduce_bytes"]):
    return None
  return {
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


def figures(records: dict) -> dict:
  """Every figure the module docstring lists, from the runs' records."""
  out = {}
  out["throughput"], out["time_to_accuracy"] = _throughput(records)
  out["weak_scaling"] = _weak_scaling(records)
  out.update(_overheads(records))
  out["peer"] = _peer(records)
  out["multiworker_one_vs_one_device"] = _multiworker_one(records)
  out["collectives"] = _collectives(records)
  out["ps_rpc"] = _ps_rpc(records)
  out.update(_model_accuracy(records))
  out["sync_vs_async"] = _sync_vs_async(records)
  out["large_batch"] = _large_batch(records)
  out["all_reduce_float16"] = _all_reduce_float16(records)
  memory = {f"{name}/{task}": mb for name, record in records.items()
            for task, mb in record["peak_rss_mb"].items() if mb}
  out["peak_rss_mb"] = {"per_task": memory,
                        "max": max(memory.values(), default=None)}
  return out


def target(name: str, value, goal: float, *, higher: bool = True,
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
      target("trainer / plain Keras examples/s (one device)",
             overhead.get("ratio"), 1.0, unit="x"),
      target("weak scaling, softmax, 2 multiworker workers",
             scaling["multiworker"], 0.80),
      target("softmax to 0.915 test accuracy, training seconds (fastest run)",
             min(best) if best else None, 10.0, higher=False, unit=" s"),
      target("share of equal training times at which sync accuracy >= "
             "async", sync.get("sync_ahead_fraction"), 1.0),
      target("peak memory per task, MiB", figs["peak_rss_mb"]["max"],
             1536.0, higher=False, unit=" MiB"),
  ]
  rows += _issue15_targets(figs)
  large = (figs["large_batch"] or {}).get("runs", {})
  recipe = next((r for r in large.values()
                 if r["label"] == plan_lib.RECIPE_LABEL), None)
  rows.append(target("8x batch with the recipe: accuracy points below base",
                     None if recipe is None
                     else round(-recipe["points_vs_base"], 2) + 0.0, 0.5,
                     higher=False, unit=" points"))
  if "mini-Inception multiworker" in scaling:
    rows.append(target("weak scaling, mini-Inception, 2 multiworker workers",
                       scaling["mini-Inception multiworker"], 0.95))
  if "inception" in figs:
    rows.append(target(
        f"mini-Inception test accuracy (seconds to {INCEPTION_THRESHOLD:g}: "
        "see figures)", (figs["inception"] or {}).get("test_accuracy"),
        INCEPTION_THRESHOLD))
  if "overhead_inception" in figs:
    rows.append(target(
        "trainer / plain Keras examples/s, mini-Inception (one device)",
        (figs["overhead_inception"] or {}).get("ratio"),
        INCEPTION_OVERHEAD_GOAL, unit="x"))
  fp16 = figs["all_reduce_float16"] or {}
  rows.append(target("float16 all-reduce: bytes vs float32",
                     fp16.get("ratio"), 0.5, higher=False))
  rows.append(target("float16 all-reduce: accuracy difference, points",
                     fp16.get("points_difference"), 0.3, higher=False,
                     unit=" points"))
  return rows


def _issue15_targets(figs: dict) -> list:
  """One collective per step, a peer beside every figure, ps RPCs
  amortised."""
  scaling = figs["weak_scaling"]
  rows = [target("weak scaling, softmax, 2 multiworker workers, batch 100 "
                 "(fused step)", scaling["multiworker"], 0.5)]
  multiworker_one = figs.get("multiworker_one_vs_one_device")
  rows.append(target("multiworker 1 worker / one-device trainer examples/s",
                     multiworker_one and multiworker_one["ratio"], 0.95,
                     unit="x"))
  peer = (figs["peer"] or {}).get("2")
  rows.append(target("tfdist / TF tutorial peer examples/s, 2 workers",
                     peer and peer["ratio"], 1.5, unit="x"))
  for label, value in scaling.items():
    if label.startswith("ps, "):
      rows.append(target(f"weak scaling, {label}, 2 workers", value, 0.8))
  return rows
