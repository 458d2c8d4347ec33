"""What to train and how: :class:`TrainConfig`, one declaration per setting.

Each field is one training setting: its name, type, default and help (the
field's ``metadata["help"]``) are all there is; the trainers generate their absl
flags from the fields (tfdist.app) and only override defaults. Everything here
is checked without TensorFlow. Imports tfdist.errors and of
tfdist.training: checkpoint, communication, elastic, fused_step, precision,
schedules, sharding and strategy (their plain-Python checks and constants).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from tfdist.errors import ConfigError
from tfdist.training import checkpoint as checkpoint_lib
from tfdist.training import communication
from tfdist.training import elastic
from tfdist.training import fused_step as fused_step_lib
from tfdist.training import precision as precision_lib
from tfdist.training import schedules
from tfdist.training import sharding
from tfdist.training import strategy as strategy_lib

OPTIMIZERS = ("sgd", "momentum", "adam", "adagrad")
# --verbose=-1: a progress bar on a terminal, one line per epoch in logs
# (where the bar's carriage returns would be noise); see keras_verbosity.
AUTO_VERBOSE = -1


def _setting(default, help_text: str):
  return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
  """What to train and how; every field is a flag of the same name."""
  strategy: str = _setting(
      "mirrored",
      f"Distribution strategy: {', '.join(strategy_lib.STRATEGIES)}.")
  batch_size: int = _setting(
      100, "Examples per replica per step (the global batch is this times "
      "the replicas in sync; under ps, one worker's step). Larger than the "
      "training split allows: capped to it, said in one line.")
  epochs: int = _setting(5, "Training epochs.")
  steps_per_epoch: int = _setting(
      0, "Steps per epoch; 0 = one pass over the training split.")
  learning_rate: Optional[float] = _setting(
      None, "Learning rate (unset: 0.5, or the compiled optimizer's own "
      "when the model function returns a compiled model).")
  optimizer: Optional[str] = _setting(
      None, f"Optimizer: {', '.join(OPTIMIZERS)} (momentum is SGD with "
      "0.9; adagrad updates only the looked-up rows of a table, adam every "
      "row each step). Unset: the optimizer the model function compiled its "
      "model with, else sgd; set, it replaces a compiled one (one line says "
      "so).")
  model_dir: Optional[str] = _setting(
      None, "Where the chief writes checkpoints and result.json; unset "
      "writes nothing.")
  num_cpu_devices: int = _setting(
      2, "mirrored without GPUs: logical CPU replicas.")
  all_reduce: str = _setting(
      "auto", f"multiworker all-reduce: {', '.join(strategy_lib.ALL_REDUCE)}.")
  steps_per_execution: int = _setting(
      1, "Steps per tf.function call; under ps each scheduled function "
      "(one RPC to a worker) runs this many steps.")
  local_ps_workers: int = _setting(
      2, "ps without TF_CONFIG: workers of the in-process cluster.")
  peer_timeout: float = _setting(
      120.0, "Seconds to wait for the other tasks before failing (at "
      "start-up, in barriers, checkpoint saves; see "
      "tfdist.liveness.deadlines).")
  min_workers: int = _setting(
      0, "multiworker with --model_dir: when workers are lost and not back "
      "within --peer_timeout, the others (at least this many) regroup and "
      "train on from the last checkpoint, with the same global batch "
      "(--batch_size x the full cluster's workers); 0 = off "
      "(docs/reliability.md, Elastic multiworker).")
  heartbeat_timeout: float = _setting(
      10.0, "multiworker: seconds without a peer's heartbeat (killed, "
      "stopped, cut off) before the job stops with status 200.")
  stall_timeout: float = _setting(
      0.0, "ps chief: seconds without a completed step (a stalled worker or "
      "ps) before the chief goes on without a stalled worker (or, when it "
      "cannot, stops with status 200); 0 = 50 x the measured step time, at "
      "least 10 s.")
  eval_batch_size: int = _setting(
      1000, "Batch size of the test-set evaluations.")
  seed: int = _setting(0, "Seed for weights and shuffling.")
  verbose: int = _setting(
      AUTO_VERBOSE, "Keras verbosity on the chief: 0 silent, 1 progress bar, "
      "2 one line per epoch; -1 = 1 on a terminal, else 2. Other tasks are "
      "silent.")
  export_dir: Optional[str] = _setting(
      None, "Where the chief exports the trained model: a new SavedModel "
      "version per run, for TensorFlow Serving (tfdist.serving.export).")
  tflite: bool = _setting(
      False, "Also export model.tflite (float) to --export_dir.")
  tflite_quantize: bool = _setting(
      False, "Also export model_quant.tflite (dynamic-range quantised).")
  # Fault tolerance (tfdist.training.checkpoint).
  checkpoint_every_steps: int = _setting(
      0, "With --model_dir: save every N steps (0 = off).")
  checkpoint_every_epochs: int = _setting(
      1, "With --model_dir: save every N epochs (0 = off).")
  keep_checkpoints: int = _setting(
      3, "How many checkpoints the chief keeps in --model_dir; a relaunch "
      "resumes from the latest.")
  preemption_check_steps: int = _setting(
      10, "multiworker: how often (steps) the workers agree on whether one "
      "got SIGTERM (one small all-reduce each).")
  # Synchronised batch norm and mixed precision (tfdist.training.precision).
  sync_batch_norm: bool = _setting(
      False, "mirrored/multiworker: batch-norm statistics over the global "
      "batch (all replicas), not each replica's own.")
  mixed_precision: bool = _setting(
      False, "16-bit compute, float32 variables (--mixed_precision_dtype).")
  mixed_precision_dtype: str = _setting(
      "auto", "With --mixed_precision: float16 (loss-scaled), bfloat16, or "
      "auto = float16 on GPUs, bfloat16 on CPUs.")
  # The large-batch recipe (tfdist.training.schedules).
  lr_scaling: str = _setting(
      "none", "none, or linear: --learning_rate x global batch / "
      "--base_batch_size (the large-batch recipe).")
  base_batch_size: int = _setting(
      100, "The global batch --learning_rate was tuned for.")
  warmup_epochs: float = _setting(
      0.0, "Ramp the learning rate up linearly over this many epochs.")
  # Communication (tfdist.training.communication).
  all_reduce_dtype: str = _setting(
      "float32", "float32, or float16: all-reduce gradients in half the "
      "bytes (mirrored, multiworker).")
  fused_step: str = _setting(
      "auto", "auto, on or off: one all-reduce per step for the gradients, "
      "the loss and every metric (tfdist.training.fused_step); auto = on under "
      "mirrored and multiworker (Keras' own step, said in one line, when a "
      "metric's state is not a sum), off under ps.")
  accumulate_steps: int = _setting(
      1, "Gradient accumulation (fused step): K micro-batches of "
      "--batch_size per replica, then one all-reduce and one update; the "
      "global batch (steps per epoch, --lr_scaling, examples/s) counts K.")
  eval_every_epoch: bool = _setting(
      False, "Evaluate the test set after every epoch (untimed) and report "
      "accuracy against training time.")
  eval_timeout: float = _setting(
      600.0, "The evaluator task: seconds without a new checkpoint before it "
      "gives up.")
  # Variables split over the ps tasks (tfdist.training.sharding).
  variable_partitioner: str = _setting(
      sharding.DEFAULT_PARTITIONER,
      "ps: how variables are split over the ps tasks: min_size (a variable "
      "of at least 2 x --min_shard_bytes into shards of at least that size, "
      "at most one per ps task: big tables split, small variables stay "
      "whole), fixed (every variable into --variable_shards shards), none.")
  min_shard_bytes: int = _setting(
      sharding.DEFAULT_MIN_SHARD_BYTES,
      "--variable_partitioner=min_size: the smallest shard, in bytes.")
  variable_shards: int = _setting(
      0, "--variable_partitioner=fixed: shards per variable, up to the "
      "number of ps tasks; 0 = one per ps task.")

  def __post_init__(self):
    _check_choices(self)
    _check_numbers(self)
    for name in ("model_dir", "export_dir"):
      if getattr(self, name) == "":
        raise ConfigError(f"--{name}='': name a directory, or leave the "
                          "flag out to write none")
    for name in ("tflite", "tflite_quantize"):
      if getattr(self, name) and not self.export_dir:
        raise ConfigError(f"--{name} writes into the export: add "
                          "--export_dir=DIR")
    self.checkpoint_options()  # validates the checkpoint fields
    if self.sync_batch_norm and self.strategy == "ps":
      raise ConfigError("--sync_batch_norm: ps workers train asynchronously, "
                        "each on its own batch, so there is no global batch "
                        "to synchronise over; use --strategy=multiworker or "
                        "mirrored, or drop the flag")
    # Checks the dtype, and float16 under ps, before the TF import.
    precision_lib.policy_name(enabled=self.mixed_precision,
                              dtype=self.mixed_precision_dtype,
                              has_gpu=False, strategy=self.strategy)
    schedules.check(lr_scaling=self.lr_scaling,
                    base_batch_size=self.base_batch_size,
                    warmup_epochs=self.warmup_epochs)
    communication.check(all_reduce_dtype=self.all_reduce_dtype,
                        strategy=self.strategy)
    self.fuses_step()  # validates --fused_step with --accumulate_steps
    elastic.check(min_workers=self.min_workers, strategy=self.strategy,
                  model_dir=self.model_dir)
    sharding.check(strategy=self.strategy,
                   variable_partitioner=self.variable_partitioner,
                   min_shard_bytes=self.min_shard_bytes,
                   variable_shards=self.variable_shards)

  def fuses_step(self) -> bool:
    """Whether the training step is tfdist.training.fused_step's."""
    return fused_step_lib.enabled(fused_step=self.fused_step,
                                  accumulate_steps=self.accumulate_steps,
                                  strategy=self.strategy)

  def checkpoint_options(self) -> checkpoint_lib.CheckpointOptions:
    """The checkpoint schedule these fields describe."""
    return checkpoint_lib.CheckpointOptions(
        every_steps=self.checkpoint_every_steps,
        every_epochs=self.checkpoint_every_epochs,
        keep=self.keep_checkpoints,
        preemption_check_steps=self.preemption_check_steps)


def _check_choices(config: TrainConfig) -> None:
  for name, choices in (("strategy", strategy_lib.STRATEGIES),
                        ("optimizer", OPTIMIZERS),
                        ("all_reduce", strategy_lib.ALL_REDUCE)):
    value = getattr(config, name)
    if value not in choices and not (name == "optimizer" and value is None):
      raise ConfigError(f"--{name}={value!r}: use one of {', '.join(choices)}")


def _check_numbers(config: TrainConfig) -> None:
  for name in ("batch_size", "epochs", "num_cpu_devices",
               "steps_per_execution", "local_ps_workers", "eval_batch_size"):
    if getattr(config, name) < 1:
      raise ConfigError(f"--{name}={getattr(config, name)}: must be at least 1")
  if config.steps_per_epoch < 0:
    raise ConfigError(f"--steps_per_epoch={config.steps_per_epoch}: must be 0 "
                      "(one pass over the data) or more")
  if config.learning_rate is not None and not config.learning_rate > 0:
    raise ConfigError(f"--learning_rate={config.learning_rate}: must be > 0")
  for name in ("peer_timeout", "heartbeat_timeout", "eval_timeout"):
    if not getattr(config, name) > 0:
      raise ConfigError(f"--{name}={getattr(config, name)}: must be > 0")
  if config.stall_timeout < 0:
    raise ConfigError(f"--stall_timeout={config.stall_timeout}: must be 0 "
                      "(derived from the step time) or more")
  if config.verbose not in (AUTO_VERBOSE, 0, 1, 2):
    raise ConfigError(f"--verbose={config.verbose}: use 0, 1, 2 or -1 (auto)")


def keras_verbosity(verbose: int, *, is_chief: bool, on_terminal: bool) -> int:
  """``fit``'s verbosity on this task: only the chief reports; -1 (auto) is
  a progress bar on a terminal, one line per epoch elsewhere."""
  if not is_chief:
    return 0
  if verbose == AUTO_VERBOSE:
    return 1 if on_terminal else 2
  return verbose
