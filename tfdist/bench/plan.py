"""What the benchmark runs: its modes, and every run as data.

Owns the settings of each mode, Run (one configuration, tagged with the
figures it is measured for) and the plan of a mode. Imports tfdist.errors
only: nothing here starts a process.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from tfdist.errors import ConfigError

LARGE_BATCH_FACTOR = 8

# What a run is measured for; tfdist.bench.figures picks runs by these tags.
SCALING = "scaling"  # weak scaling: the 1- and 2-worker runs of one label
OVERHEAD = "overhead"  # the trainer against plain Keras, same label
SYNC, ASYNC = "sync", "async"  # accuracy against time, 2 workers each
RECIPE_BASE = "recipe_base"  # the base batch of the large-batch runs
LARGE_BATCH = "large_batch"  # 8x the base batch; the label says how
ALL_REDUCE_FLOAT32 = "all_reduce_float32"  # gradient bytes per step
ALL_REDUCE_FLOAT16 = "all_reduce_float16"
MODEL_ACCURACY = "model_accuracy"  # mini-Inception: seconds to accuracy
PEER = "peer"  # the TF tutorial's code beside multiworker, same workers
# Figures measured by their own commands, not by runs of the plan
# (tfdist.bench.figure_commands); --runs selects them by these names too.
STRAGGLER = "straggler"  # tfdist.bench.straggler: a slowed worker
DATA = "data"  # tfdist.bench.data_figures: streaming input
# The label of the peer's weak-scaling series.
PEER_LABEL = "peer (TF tutorial)"
# The large-batch run whose accuracy is a target.
RECIPE_LABEL = "8x, linear scaling + warmup"


@dataclasses.dataclass(frozen=True, kw_only=True)
class InceptionSettings:
  """The mini-Inception runs (``trainers.inception``).

  Attributes:
    width: the model's filter multiplier (0.5: 0.98 after about 50,000
      examples; 865 examples/s on one thread of an idle EPYC core).
    batch_size: examples per replica per step.
    learning_rate: of the momentum SGD the trainer uses.
    momentum: that SGD's momentum, which the plain Keras fit uses too.
    epochs, examples_per_epoch: the time-to-accuracy run (one worker,
      evaluated after every epoch).
    scaling_epochs, scaling_examples_per_epoch: the runs that measure
      examples/s only (not evaluated until the end): weak scaling and
      overhead.
    weak_scaling: whether to run 1 and 2 multiworker workers.
    overhead_rounds: how many times the trainer and a plain Keras fit of the
      same model run, alternated so that both see the same machine load;
      0: none.
  """
  width: float = 0.5
  batch_size: int = 64
  learning_rate: float = 0.05
  momentum: float = 0.9
  epochs: int = 12
  examples_per_epoch: int = 6400
  scaling_epochs: int = 4
  scaling_examples_per_epoch: int = 3200
  weak_scaling: bool = True
  overhead_rounds: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
  """How much each run trains.

  Attributes:
    epochs: epochs per run (the first is warm-up, excluded from examples/s).
    examples_per_epoch: examples per epoch, for every run: steps per epoch
      are this over the run's global batch, so all runs see the same data
      and evaluate (for accuracy against time) at the same points.
    softmax: whether to run the softmax regression runs (all but the
      mini-Inception ones).
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
    own_figures: the figures measured by their own commands (STRAGGLER,
      DATA), at this mode's size.
    run_timeout: seconds before a run is killed and recorded as failed.
  """
  epochs: int
  examples_per_epoch: int
  softmax: bool = True
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
  own_figures: tuple = ()
  run_timeout: float = 600.0


MODES = {
    # CI: every run and file, on tiny settings.
    "smoke": Settings(epochs=2, examples_per_epoch=1600, run_timeout=180,
                      own_figures=(STRAGGLER, DATA)),
    "quick": Settings(epochs=6, examples_per_epoch=12000, run_timeout=300),
    "full": Settings(epochs=20, examples_per_epoch=12000, limit_run=True,
                     scaling_batch_sizes=(400, 1600), steps_per_execution=10,
                     inception=InceptionSettings(),
                     own_figures=(STRAGGLER, DATA)),
    # --inception: mini-Inception only, with the trainer against plain Keras
    # (what full mode runs, plus the alternated overhead rounds).
    "inception-full": Settings(
        epochs=20, examples_per_epoch=12000, softmax=False, run_timeout=1800,
        inception=InceptionSettings(overhead_rounds=2)),
    "inception-quick": Settings(
        epochs=6, examples_per_epoch=12000, softmax=False, run_timeout=600,
        inception=InceptionSettings(epochs=4, examples_per_epoch=3200,
                                    scaling_epochs=3,
                                    scaling_examples_per_epoch=1600,
                                    overhead_rounds=1)),
    # --inception --smoke: every mini-Inception run and figure but weak
    # scaling, tiny; the accuracy run long enough to learn (0.82 after 200
    # steps here, where 8 steps predicted one class: 0.11).
    "inception-smoke": Settings(
        epochs=2, examples_per_epoch=1600, softmax=False, run_timeout=180,
        inception=InceptionSettings(
            width=0.125, batch_size=16, epochs=2, examples_per_epoch=1600,
            scaling_epochs=2, scaling_examples_per_epoch=64,
            weak_scaling=False, overhead_rounds=1)),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
  """One configuration: a trainer under a strategy on a cluster size.

  ``strategy`` is ``keras`` for the plain Keras baseline, ``peer`` for the
  TF tutorial's MultiWorkerMirroredStrategy code (tfdist.bench.peer, under
  TF_CONFIG like multiworker). ``workers`` is the
  number of training workers (plus a chief and one ps under ps).
  ``eval_every_epoch`` gives the accuracy curve (untimed, but wall time).
  ``tags`` say which figures the run is measured for; ``label`` names it in
  them (the weak-scaling series, the large-batch variant, the overhead
  comparison).
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
  steps_per_execution: int = 1
  tags: frozenset = frozenset()
  label: str = ""

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
    """The spec for tfdist.cluster.launch (port 0: picked at launch), or
    None."""
    if self.strategy in ("multiworker", "peer"):
      return {"worker": ["127.0.0.1:0"] * self.workers}
    if self.strategy == "ps":
      return {"chief": ["127.0.0.1:0"],
              "worker": ["127.0.0.1:0"] * self.workers, "ps": ["127.0.0.1:0"]}
    return None

  @property
  def primary_task(self) -> str:
    """The task whose result is the run's (it times and evaluates)."""
    return primary_task(self.strategy)


def primary_task(strategy: str) -> str:
  """The task that times and evaluates a run of ``strategy``."""
  return {"ps": "chief-0", "multiworker": "worker-0",
          "peer": "worker-0"}.get(strategy, "local")


def _tags(*tags: str) -> frozenset:
  return frozenset(tags)


def _softmax_core(settings: Settings) -> list:
  """Throughput, overhead, weak scaling, sync against async, float16."""
  common = {"epochs": settings.epochs,
            "examples_per_epoch": settings.examples_per_epoch,
            "learning_rate": settings.learning_rate,
            "batch_size": settings.batch_size}
  return [
      Run(name="keras-1", strategy="keras", tags=_tags(OVERHEAD), **common),
      Run(name="mirrored-1", strategy="mirrored", tags=_tags(OVERHEAD),
          flags=("--num_cpu_devices=1",), **common),
      Run(name="multiworker-1", strategy="multiworker", tags=_tags(SCALING),
          label="multiworker", **common),
      Run(name="multiworker-2", strategy="multiworker", workers=2,
          tags=_tags(SCALING, SYNC, ALL_REDUCE_FLOAT32), label="multiworker",
          **common),
      Run(name="multiworker-2-fp16", strategy="multiworker", workers=2,
          flags=("--all_reduce_dtype=float16",),
          tags=_tags(ALL_REDUCE_FLOAT16), **common),
      *(Run(name=f"peer-{w}", strategy="peer", workers=w,
            tags=_tags(SCALING, PEER), label=PEER_LABEL, **common)
        for w in (1, 2)),
      Run(name="ps-1", strategy="ps", tags=_tags(SCALING), label="ps",
          **common),
      Run(name="ps-2", strategy="ps", workers=2, tags=_tags(SCALING, ASYNC),
          label="ps", **common),
  ]


def _large_batch(settings: Settings) -> list:
  """The large-batch recipe: the base batch, then 8x it as 2 workers x 4x
  the per-worker batch, for the same epochs (8x fewer steps)."""
  recipe = {"epochs": settings.epochs,
            "examples_per_epoch": settings.examples_per_epoch,
            "learning_rate": settings.recipe_learning_rate}
  big = {"strategy": "multiworker", "workers": 2, "tags": _tags(LARGE_BATCH),
         "batch_size": settings.batch_size * LARGE_BATCH_FACTOR // 2}
  warmup = ("--lr_scaling=linear",
            f"--warmup_epochs={settings.warmup_epochs:g}")
  runs = [
      Run(name="recipe-base", strategy="multiworker", label="base",
          batch_size=settings.batch_size, tags=_tags(RECIPE_BASE), **recipe),
      Run(name="multiworker-2-8x", label="8x, no recipe", **big, **recipe),
      Run(name="multiworker-2-8x-linear", label="8x, linear scaling",
          flags=("--lr_scaling=linear",), **big, **recipe),
      Run(name="multiworker-2-8x-recipe", label=RECIPE_LABEL, flags=warmup,
          **big, **recipe),
  ]
  if settings.limit_run:
    runs.append(Run(name="multiworker-2-8x-recipe-from-0.5",
                    label="8x, recipe from base rate 0.5", flags=warmup,
                    **big, **dict(recipe,
                                  learning_rate=settings.learning_rate)))
  return runs


def _softmax_variants(settings: Settings) -> list:
  """Overhead and weak scaling with several steps per execution, and weak
  scaling at larger per-worker batches."""
  common = {"epochs": settings.epochs,
            "examples_per_epoch": settings.examples_per_epoch,
            "learning_rate": settings.learning_rate,
            "batch_size": settings.batch_size}
  runs = []
  n = settings.steps_per_execution
  if n > 1:
    # What per-step host overhead costs (overhead ratio, weak scaling).
    spe = {"steps_per_execution": n, **common}
    runs += [
        Run(name=f"keras-1-spe{n}", strategy="keras", tags=_tags(OVERHEAD),
            **spe),
        Run(name=f"mirrored-1-spe{n}", strategy="mirrored",
            flags=("--num_cpu_devices=1",), tags=_tags(OVERHEAD), **spe),
        *(Run(name=f"{strategy}-{w}-spe{n}", strategy=strategy,
              workers=w, tags=_tags(SCALING),
              label=f"{strategy}, {n} steps per execution", **spe)
          for strategy in ("multiworker", "ps") for w in (1, 2))]
  scaling = dict(common, epochs=settings.scaling_epochs,
                 examples_per_epoch=settings.scaling_examples_per_epoch,
                 eval_every_epoch=False)
  for batch in settings.scaling_batch_sizes:
    runs += [Run(name=f"multiworker-{w}-b{batch}", strategy="multiworker",
                 workers=w, tags=_tags(SCALING),
                 label=f"multiworker, batch {batch} per worker",
                 **dict(scaling, batch_size=batch)) for w in (1, 2)]
  return runs


def _inception(inception: InceptionSettings) -> list:
  """Seconds to accuracy, weak scaling, and the trainer against plain Keras
  (the plain fit of the same model, batch and momentum SGD)."""
  model = {"trainer": "inception", "batch_size": inception.batch_size,
           "learning_rate": inception.learning_rate}
  width = f"--width={inception.width:g}"
  short = {"epochs": inception.scaling_epochs,
           "examples_per_epoch": inception.scaling_examples_per_epoch,
           "eval_every_epoch": False, **model}
  runs = [Run(name="inception-1", strategy="mirrored",
              flags=("--num_cpu_devices=1", width),
              tags=_tags(MODEL_ACCURACY), epochs=inception.epochs,
              examples_per_epoch=inception.examples_per_epoch, **model)]
  if inception.weak_scaling:
    runs += [Run(name=f"inception-multiworker-{w}", strategy="multiworker",
                 workers=w, flags=(width,), tags=_tags(SCALING),
                 label="mini-Inception multiworker", **short)
             for w in (1, 2)]
  for round_ in range(1, inception.overhead_rounds + 1):
    runs += [
        Run(name=f"inception-mirrored-1-round{round_}", strategy="mirrored",
            flags=("--num_cpu_devices=1", width), tags=_tags(OVERHEAD),
            label="mini-Inception", **short),
        Run(name=f"inception-keras-1-round{round_}", strategy="keras",
            flags=("--model=mini_inception", width,
                   f"--momentum={inception.momentum:g}"),
            tags=_tags(OVERHEAD), label="mini-Inception", **short)]
  return runs


def plan(settings: Settings) -> list:
  """Every run of a mode, in the order they run."""
  runs = []
  if settings.softmax:
    runs += (_softmax_core(settings) + _large_batch(settings)
             + _softmax_variants(settings))
  if settings.inception:
    runs += _inception(settings.inception)
  return runs


def _matching(names: list, patterns: Optional[str]) -> list:
  """The names that contain one of the comma-separated ``patterns`` (all
  of them for None)."""
  if patterns is None:
    return list(names)
  wanted = [p for p in patterns.split(",") if p]
  return [name for name in names if any(p in name for p in wanted)]


def select(runs: list, patterns: Optional[str], *,
           own_figures: tuple = ()) -> list:
  """The runs whose name contains one of the comma-separated ``patterns``
  (all of them for None); ConfigError if neither a run nor one of
  ``own_figures`` does."""
  chosen = [r for r in runs if _matching([r.name], patterns)]
  if not chosen and not select_own_figures(own_figures, patterns):
    names = [r.name for r in runs] + list(own_figures)
    raise ConfigError(f"--runs={patterns}: matches no run of this mode; "
                      f"names: {', '.join(names)}")
  return chosen


def select_own_figures(own_figures: tuple, patterns: Optional[str]) -> list:
  """The figures measured by their own commands that ``patterns`` select
  (as :func:`select`: by substring; all of them for None)."""
  return _matching(list(own_figures), patterns)
