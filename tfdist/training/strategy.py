"""The three distribution strategies, and what each task of a cluster does.

Which strategy, which role:

================  ===========================  ==============================
strategy          tasks that train (run fit)   tasks that host (no fit)
================  ===========================  ==============================
``mirrored``      the one process              none
``multiworker``   chief and every worker       none
``ps``            the chief only (it drives)   workers (compute) and ps
================  ===========================  ==============================

:func:`plan_role` decides a task's role without TensorFlow, so every
misconfiguration is reported before the slow import; :func:`create` then builds
the strategy of a training task (tfdist.training.hosting runs the others).
Imports tfdist.cluster.specs, console, liveness.deadlines, errors,
training.hosting and cluster.preflight; TensorFlow only inside functions.
"""

from __future__ import annotations

import contextlib
from typing import Optional

from tfdist import console
from tfdist.cluster import preflight
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError
from tfdist.liveness import deadlines
from tfdist.training import hosting

STRATEGIES = ("mirrored", "multiworker", "ps")
ALL_REDUCE = ("auto", "ring", "nccl")

TRAIN, HOST, EVALUATE = "train", "host", "evaluate"


def plan_role(strategy: str, task: Optional[cluster_lib.Task]) -> str:
  """Returns TRAIN, HOST or EVALUATE for this task; no TensorFlow needed.

  Args:
    strategy: one of STRATEGIES.
    task: this process's task from TF_CONFIG, or None when there is none.

  Raises:
    ConfigError: the strategy and the cluster do not fit together.
  """
  if strategy not in STRATEGIES:
    raise ConfigError(f"unknown strategy {strategy!r}; use one of "
                      f"{', '.join(STRATEGIES)}")
  if task is None:
    return TRAIN
  if task.type == "evaluator":
    return EVALUATE
  cluster = task.cluster
  training_tasks = sum(len(cluster.get(t, ())) for t in ("chief", "worker"))
  if strategy == "mirrored":
    if training_tasks > 1 or "ps" in cluster:
      raise ConfigError(
          "--strategy=mirrored trains on one machine, but TF_CONFIG describes "
          f"a cluster of {training_tasks} training tasks; use "
          "--strategy=multiworker (or ps), or unset TF_CONFIG")
    return TRAIN
  if strategy == "multiworker":
    if "ps" in cluster:
      raise ConfigError("--strategy=multiworker: the cluster has ps tasks, "
                        "which all-reduce training does not use; use "
                        "--strategy=ps or remove \"ps\" from the cluster spec")
    return TRAIN
  # ps
  missing = [t for t in ("chief", "worker", "ps") if t not in cluster]
  if missing:
    raise ConfigError(f"--strategy=ps needs a chief, at least one worker and "
                      f"at least one ps task; the cluster has no "
                      f"{' and no '.join(missing)} (see "
                      "cluster_specs/chief_two_workers_ps.json)")
  return TRAIN if task.type == "chief" else HOST


def check_keras(strategy: str) -> None:
  """Fails with one line unless ``tf.keras`` is tf-keras (Keras 2).

  Keras 3 cannot run ParameterServerStrategy (keras-team/keras#18624) and its
  ``fit`` fails under MultiWorkerMirroredStrategy; tfdist's training loop is
  written for, and tested with, tf-keras under all three strategies.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tf.keras.__name__.startswith("tf_keras"):
    raise ConfigError(
        f"--strategy={strategy} needs tf-keras (Keras 2), but tf.keras is "
        f"Keras 3 ({tf.keras.__name__}); pip install 'tf-keras~="
        f"{'.'.join(tf.__version__.split('.')[:2])}.0' and set "
        "TF_USE_LEGACY_KERAS=1 before TensorFlow is imported")


def configure_cpu_devices(count: int) -> None:
  """Splits the CPU into ``count`` logical devices (before TF initialises).

  MirroredStrategy on a machine without GPUs then has ``count`` replicas:
  the same code path as several GPUs, testable on a laptop. Once
  TensorFlow has started (tfdist.fit in a notebook that ran TensorFlow
  already), the devices it has stand when they are ``count``.

  Raises:
    RuntimeError: TensorFlow started with another number of CPU devices.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if count < 1:
    raise ConfigError(f"--num_cpu_devices={count}: need at least 1")
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
  except RuntimeError:
    if len(tf.config.list_logical_devices("CPU")) != count:
      raise


def _resolver(cluster: dict, task_type: str, task_index: int):
  # A SimpleClusterResolver built from our validated task, not TensorFlow's
  # TFConfigClusterResolver: TF_CONFIG was already checked, and the library
  # never reads the environment itself.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_index,
      rpc_layer="grpc")


def _communication(all_reduce: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if all_reduce not in ALL_REDUCE:
    raise ConfigError(f"--all_reduce={all_reduce!r}: use one of "
                      f"{', '.join(ALL_REDUCE)}")
  implementation = tf.distribute.experimental.CommunicationImplementation
  if all_reduce == "nccl" and not tf.config.list_physical_devices("GPU"):
    raise ConfigError("--all_reduce=nccl needs GPUs and this machine has none; "
                      "use --all_reduce=ring or auto")
  return tf.distribute.experimental.CommunicationOptions(
      implementation={"auto": implementation.AUTO,
                      "ring": implementation.RING,
                      "nccl": implementation.NCCL}[all_reduce])


def create(strategy: str, *, task: Optional[cluster_lib.Task],
           num_cpu_devices: int = 1, all_reduce: str = "auto",
           local_ps_workers: int = 2, peer_timeout: float = 120.0,
           heartbeat_timeout: float = 10.0, variable_partitioner=None):
  """Builds the tf.distribute strategy for a task whose role is TRAIN.

  Args:
    strategy: one of STRATEGIES.
    task: this process's task, or None for a single process.
    num_cpu_devices: logical CPU replicas for ``mirrored`` on a machine
      without GPUs.
    all_reduce: ``auto``, ``ring`` or ``nccl`` for ``multiworker``.
    local_ps_workers: with ``ps`` and no TF_CONFIG, how many workers the
      in-process local cluster gets.
    peer_timeout: seconds to wait for the peers (see tfdist.cluster.preflight),
      before and while the strategy is created (tfdist.liveness.deadlines).
    heartbeat_timeout: ``multiworker``: seconds of silence after which a
      peer counts as lost.
    variable_partitioner: ``ps``: splits variables over the ps tasks
      (tfdist.training.sharding.partitioner); None places them whole.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  check_keras(strategy)
  if strategy == "mirrored":
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
      configure_cpu_devices(num_cpu_devices)
    devices = tf.config.list_logical_devices("GPU" if gpus else "CPU")
    if len(devices) == 1:
      # One replica: nothing to mirror or all-reduce, and tf.distribute's
      # per-step machinery (distributed iterator, replica context, mirrored
      # variables) costs 0.3-0.6 ms a step, as much as a small model's step
      # (tfdist.bench: 0.63x plain Keras). The default strategy is plain
      # Keras, with the same scope/run/reduce API.
      return tf.distribute.get_strategy()
    # A strategy made after another in this process (tfdist.fit in a sweep)
    # must not reuse its collective keys: TensorFlow keeps each collective's
    # shapes by key. (TensorFlow's own tests move the base the same way:
    # tensorflow/python/distribute/strategy_combinations.py.)
    tf.distribute.MirroredStrategy._collective_key_base += 100_000  # pylint: disable=protected-access
    return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])

  if strategy == "multiworker":
    options = _communication(all_reduce)
    if task is None:
      # TensorFlow silently trains alone here; say so, since a user who meant
      # to start a cluster forgot TF_CONFIG.
      console.info("no TF_CONFIG: --strategy=multiworker runs as a "
                   "single-worker cluster (set TF_CONFIG, or use "
                   "python -m tfdist.launch, to train on several)")
      return tf.distribute.MultiWorkerMirroredStrategy(
          communication_options=options)
    # Before the constructor, which starts our server and then waits
    # forever for every peer: find them with a deadline, same spec.
    preflight.check_peers(task, timeout=peer_timeout)
    # A peer may still vanish before its server starts: TensorFlow's
    # registration deadline, not its hour.
    with deadlines.multiworker_creation(task, peer_timeout=peer_timeout,
                                        heartbeat_timeout=heartbeat_timeout):
      return tf.distribute.MultiWorkerMirroredStrategy(
          cluster_resolver=_resolver(cluster_lib.training_cluster(task),
                                     task.type, task.index),
          communication_options=options)

  # ps
  if task is None:
    cluster = hosting.start_local_ps_cluster(num_workers=local_ps_workers)
    console.info(f"no TF_CONFIG: --strategy=ps runs an in-process cluster of "
                 f"{local_ps_workers} workers and 1 ps on loopback")
  else:
    cluster = cluster_lib.training_cluster(task)
    # The coordinator would wait forever for a missing worker or ps.
    preflight.check_peers(task, timeout=peer_timeout)
  with (deadlines.ps_creation(task, peer_timeout=peer_timeout) if task
        else contextlib.nullcontext()):
    return tf.distribute.ParameterServerStrategy(
        _resolver(cluster, "chief", 0),
        variable_partitioner=variable_partitioner)
