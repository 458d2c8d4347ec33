"""The three distribution strategies, and what each task of a cluster does.

Which strategy, which role:

================  ===========================  ==============================
strategy          tasks that train (run fit)   tasks that serve variables
================  ===========================  ==============================
``mirrored``      the one process              none
``multiworker``   chief and every worker       none
``ps``            the chief only (it drives)   workers (compute) and ps
================  ===========================  ==============================

:func:`plan_role` decides a task's role without TensorFlow, so every
misconfiguration is reported before the slow import; :func:`create` then
builds the strategy and :func:`serve` runs a ps-strategy worker or ps task.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import threading
import time
from typing import Optional

from tfdist import errors
from tfdist import cluster as cluster_lib
from tfdist import console
from tfdist import preflight
from tfdist.errors import ConfigError

STRATEGIES = ("mirrored", "multiworker", "ps")
ALL_REDUCE = ("auto", "ring", "nccl")

TRAIN, SERVE, EVALUATE = "train", "serve", "evaluate"


def plan_role(strategy: str, task: Optional[cluster_lib.Task]) -> str:
  """Returns TRAIN, SERVE or EVALUATE for this task; no TensorFlow needed.

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
  return TRAIN if task.type == "chief" else SERVE


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
  the same code path as several GPUs, testable on a laptop.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if count < 1:
    raise ConfigError(f"--num_cpu_devices={count}: need at least 1")
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def training_cluster(task: cluster_lib.Task) -> dict:
  """The cluster TensorFlow sees: without the evaluator, which never trains."""
  return {k: list(v) for k, v in task.cluster.items() if k != "evaluator"}


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
           local_ps_workers: int = 2, peer_timeout: float = 120.0):
  """Builds the tf.distribute strategy for a task whose role is TRAIN.

  Args:
    strategy: one of STRATEGIES.
    task: this process's task, or None for a single process.
    num_cpu_devices: logical CPU replicas for ``mirrored`` on a machine
      without GPUs.
    all_reduce: ``auto``, ``ring`` or ``nccl`` for ``multiworker``.
    local_ps_workers: with ``ps`` and no TF_CONFIG, how many workers the
      in-process local cluster gets.
    peer_timeout: seconds to wait for the peers (see tfdist.preflight).
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
    return tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=_resolver(training_cluster(task), task.type,
                                   task.index),
        communication_options=options)

  # ps
  if task is None:
    cluster = start_local_ps_cluster(num_workers=local_ps_workers)
    console.info(f"no TF_CONFIG: --strategy=ps runs an in-process cluster of "
                 f"{local_ps_workers} workers and 1 ps on loopback")
  else:
    cluster = training_cluster(task)
    # The coordinator would wait forever for a missing worker or ps.
    preflight.check_peers(task, timeout=peer_timeout)
  return tf.distribute.ParameterServerStrategy(
      _resolver(cluster, "chief", 0))


def start_local_ps_cluster(*, num_workers: int) -> dict:
  """Starts ``num_workers`` workers and one ps in this process, on loopback.

  Returns the cluster dict (with a chief address for the coordinator). The
  servers live as long as the process: the pattern of TensorFlow's own
  ``create_in_process_cluster``.
  """
  import portpicker  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ports = [portpicker.pick_unused_port() for _ in range(num_workers + 2)]
  cluster = {"chief": [f"127.0.0.1:{ports[0]}"],
             "worker": [f"127.0.0.1:{p}" for p in ports[1:-1]],
             "ps": [f"127.0.0.1:{ports[-1]}"]}
  config = tf.compat.v1.ConfigProto()
  # In one process the servers share the inter-op thread pool; with fewer
  # threads than workers + 1 (a 2-core laptop) the workers deadlock.
  config.inter_op_parallelism_threads = max(num_workers + 1, os.cpu_count())
  spec = tf.train.ClusterSpec(cluster)
  for job in ("worker", "ps"):
    for index in range(len(cluster[job])):
      tf.distribute.Server(spec, job_name=job, task_index=index, config=config,
                           protocol="grpc", start=True)
  return cluster


def _reachable(address: str, timeout: float = 1.0) -> bool:
  host, port = cluster_lib.split_address(address, where="peer")
  try:
    with socket.create_connection((host.strip("[]"), port), timeout=timeout):
      return True
  except OSError:
    return False


def _marker(kind: str, address: str) -> str:
  safe = address.replace(":", "_").replace("[", "").replace("]", "")
  return os.path.join(tempfile.gettempdir(), f"tfdist-{kind}-{safe}")


def done_marker(address: str) -> str:
  """Where the chief marks a ps-strategy worker or ps task as finished.

  The chief writes this file *on the task's own machine* by running
  ``tf.io.write_file`` on the task's device (see :func:`signal_done`); the
  task polls for it and exits 0. The name is keyed by the task's address, so
  tasks sharing a machine (and /tmp) never see each other's marker.
  """
  return _marker("done", address)


def preempt_marker(address: str) -> str:
  """Where a ps-strategy worker or ps task that got SIGTERM asks to stop.

  The reverse channel of :func:`done_marker`: the task writes it on its own
  machine and keeps serving; the chief finds it with a remote op (see
  :func:`preemption_requested`), saves a checkpoint and stops every task.
  """
  return _marker("preempt", address)


def _write_atomically(path: str, text: str) -> None:
  temp = path + ".tmp"
  with open(temp, "w") as f:
    f.write(text)
  os.replace(temp, path)  # the chief never sees a half-written request


def _serving_tasks(task: cluster_lib.Task):
  for job in ("worker", "ps"):
    for index, address in enumerate(task.cluster.get(job, ())):
      yield job, index, address


def _device(job: str, index: int) -> str:
  return f"/job:{job}/replica:0/task:{index}/device:CPU:0"


def preemption_requested(task: Optional[cluster_lib.Task]) -> Optional[str]:
  """The name of a worker or ps task that asked to stop (SIGTERM), or None.

  Run by a ps-strategy chief between steps: one small remote op per task.
  A task that cannot be asked (dead, restarting) is skipped; the
  coordinator deals with lost workers, and a lost ps fails the chief.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if task is None:
    return None  # in-process cluster: no task can be signalled alone
  for job, index, address in _serving_tasks(task):
    try:
      with tf.device(_device(job, index)):
        found = tf.io.matching_files(preempt_marker(address))
      if int(tf.size(found)) > 0:
        return f"{job}-{index}"
    except tf.errors.OpError:
      continue
  return None


def signal_done(task: Optional[cluster_lib.Task], *, preempted: bool = False,
                restart_timeout: float = 60.0) -> None:
  """Tells every worker and ps task of a ps cluster that training is over.

  With ``preempted``, that the job was preempted (the chief saved a
  checkpoint): they then exit 143 too, so Kubernetes restarts the whole job
  at once instead of the tasks waiting a minute for a chief that is gone.

  A task that cannot be told may be restarting (a worker killed near the
  end of training comes back after it): it is retried for up to
  ``restart_timeout`` seconds, since once the chief has exited nothing
  could tell it any more. Not when preempted: the chief's own grace period
  is short, and every task stops on its own once the chief is gone.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if task is None:
    return  # in-process cluster: its servers end with this process
  pending = {f"{job}-{index}": (job, index, address)
             for job, index, address in _serving_tasks(task)}
  errors = {}
  start = time.monotonic()
  last_report = start
  while True:
    for name, (job, index, address) in list(pending.items()):
      try:
        with tf.device(_device(job, index)):
          tf.io.write_file(done_marker(address),
                           "preempted" if preempted else "done")
        del pending[name]
      except Exception as e:  # pylint: disable=broad-except
        errors[name] = e
    elapsed = time.monotonic() - start
    if not pending or preempted or elapsed >= restart_timeout:
      break
    if time.monotonic() - last_report >= preflight.REPORT_EVERY:
      name = next(iter(pending))
      console.info(f"waiting for {name} at {pending[name][2]} (restarting?) "
                   "to tell it training is over, "
                   f"{elapsed:.0f}/{restart_timeout:.0f} s")
      last_report = time.monotonic()
    time.sleep(0.5)  # a polling interval, not synchronisation
  for name, (_, _, address) in pending.items():
    # A task that died for good cannot be told; it stops on its own once
    # the chief is gone (see serve).
    console.info(f"could not tell {name} at {address} that training is over "
                 f"({type(errors[name]).__name__})")


def serve(task: cluster_lib.Task, *, chief_timeout: float = 300.0,
          chief_grace: float = 60.0, peer_timeout: float = 120.0,
          preempt_grace: float = 20.0) -> int:
  """Runs a ps-strategy worker or ps task until the chief is done.

  SIGTERM (preemption) does not stop the task at once: it asks the chief
  (see :func:`preempt_marker`) to save a checkpoint and stop every task, and
  keeps serving meanwhile, since a ps holds the variables the chief saves.

  Returns the exit status: 0 when the chief signalled the end of training,
  143 when it signalled that the job was preempted (see :func:`signal_done`)
  or when this task got SIGTERM and the chief did not stop the job within
  ``preempt_grace`` seconds (Kubernetes kills a pod 30 s after SIGTERM by
  default), 1 when the chief never came up within ``chief_timeout`` seconds
  or vanished for longer than ``chief_grace`` seconds without finishing (so
  that no task is left behind waiting forever). Raises ConfigError when a
  peer is not up within ``peer_timeout`` seconds or was started from
  another spec.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  marker = done_marker(task.address)
  request = preempt_marker(task.address)
  for stale in (marker, request):
    if os.path.exists(stale):
      os.remove(stale)  # left by an earlier job on the same address
  # Same spec as the chief and every peer, before serving anything. A
  # restarted task rejoins a running job: once any peer answers as a running
  # TensorFlow server, the others count as found (the chief checked them all
  # before training began, and some may have finished since).
  preflight.check_peers(task, timeout=peer_timeout,
                        found_if_running=tuple(preflight.peers_of(task)))
  tf.distribute.Server(tf.train.ClusterSpec(training_cluster(task)),
                       job_name=task.type, task_index=task.index,
                       protocol="grpc", start=True)
  chief = task.cluster["chief"][0]
  console.info(f"{task.name} serving at {task.address} until chief-0 at "
               f"{chief} is done")
  start = time.monotonic()
  seen_at = asked_at = None
  sigterm = threading.Event()
  # Only a flag: the request is written from the loop below.
  signal.signal(signal.SIGTERM, lambda signum, frame: sigterm.set())
  while not os.path.exists(marker):
    now = time.monotonic()
    if sigterm.is_set() and asked_at is None:
      _write_atomically(request, task.name)
      asked_at = now
      console.info(f"{task.name}: SIGTERM; asking chief-0 to save a "
                   "checkpoint and stop every task")
    if asked_at is not None and now - asked_at > preempt_grace:
      console.info(f"{task.name}: chief-0 did not stop the job within "
                   f"{preempt_grace:.0f} s of SIGTERM; exiting")
      os.remove(request)
      return errors.EXIT_PREEMPTED
    if _reachable(chief):
      seen_at = now
    elif seen_at is None and now - start > chief_timeout:
      console.info(f"chief-0 at {chief} did not come up within "
                   f"{chief_timeout:.0f} s; {task.name} exits")
      return 1
    elif seen_at is not None and now - seen_at > chief_grace:
      console.info(f"chief-0 at {chief} has been gone for "
                   f"{chief_grace:.0f} s without finishing; {task.name} exits")
      return 1
    time.sleep(0.5)  # a polling interval, not synchronisation
  with open(marker) as f:
    preempted = f.read() == "preempted"
  for path in (marker, request):
    if os.path.exists(path):
      os.remove(path)
  if preempted:
    console.info(f"{task.name}: the job was preempted and chief-0 saved a "
                 "checkpoint; exiting to be restarted with it")
    return errors.EXIT_PREEMPTED
  console.info(f"{task.name}: chief-0 finished training; exiting")
  return 0
