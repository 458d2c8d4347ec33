"""Hosting: ps-strategy tasks that hold variables and run steps for the chief.

Under ``--strategy=ps`` only the chief runs ``fit`` (it coordinates); the
workers run the steps it dispatches and the ps tasks hold the variables. Such
a task hosts a TensorFlow server until the chief says training is over
(:func:`host_until_done`). The chief talks to the hosting tasks through small
marker files written on their own machines by remote ops:

* :func:`signal_done`: the chief tells every task that training is over (or
  that the job was preempted);
* :func:`preemption_requested`: the chief asks whether a task got SIGTERM
  and left a request to stop.

A worker the chief went on without (stalled, or lost by the end of
training: tfdist.liveness.stall_watch) is no longer in the chief's cluster and
cannot be told. The chief leaves a record of it in ``--model_dir``
(:func:`record_left_out`); once the job is done (the chief's
``result.json`` is newer), the worker, awake again or replaced, exits 0 by
itself, so that its Job completes.

:func:`start_local_ps_cluster` hosts workers and a ps inside one process, for
``--strategy=ps`` without TF_CONFIG. Imports tfdist.cluster.specs, console,
errors and cluster.preflight; TensorFlow only inside functions.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from typing import Optional

from tfdist import console
from tfdist import errors
from tfdist.cluster import preflight
from tfdist.cluster import specs as cluster_lib


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


def _answers(address: str) -> bool:
  """Whether a task (in preflight, or its TensorFlow server) answers at
  ``address``. A stopped process (SIGSTOP, a hung machine) does not: its
  kernel still accepts connections, so a bare connect would count it."""
  return (preflight.probe(address) or ("",))[0] in ("tfdist", "server")


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
  machine and keeps hosting; the chief finds it with a remote op (see
  :func:`preemption_requested`), saves a checkpoint and stops every task.
  """
  return _marker("preempt", address)


def restart_marker(address: str) -> str:
  """Where the chief marks a worker or ps task before it re-executes itself (it
  goes on without a stalled worker: tfdist.liveness.stall_watch.StallWatch): the
  task then gives the chief's restart ``RESTART_S`` more seconds."""
  return _marker("restart", address)


# How long a restarting chief may take to answer again: TensorFlow's import,
# the data, then its preflight (seconds, or a minute on a loaded machine).
RESTART_S = 60.0


def _write_atomically(path: str, text: str) -> None:
  temp = path + ".tmp"
  with open(temp, "w") as f:
    f.write(text)
  os.replace(temp, path)  # the chief never sees a half-written request


def _hosting_tasks(task: cluster_lib.Task):
  for job in ("worker", "ps"):
    for index, address in enumerate(task.cluster.get(job, ())):
      yield job, index, address


def _device(job: str, index: int) -> str:
  return f"/job:{job}/replica:0/task:{index}/device:CPU:0"


# How long a remote op to a task that answered a moment ago may take; longer
# means it stopped since (SIGSTOP): the op would never return.
_REMOTE_OP_S = 5.0


def _write_on(job: str, index: int, path: str, text: str) -> None:
  """Writes ``text`` to ``path`` on task ``job-index``'s own machine (a
  remote op, in a thread). Raises what the op raised, or TimeoutError when
  it did not return within ``_REMOTE_OP_S``."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  outcome = []

  def write():
    try:
      with tf.device(_device(job, index)):
        tf.io.write_file(path, text)
      outcome.append(None)
    except Exception as e:  # pylint: disable=broad-except
      outcome.append(e)

  writer = threading.Thread(target=write, daemon=True,
                            name=f"write on {job}-{index}")
  writer.start()
  writer.join(_REMOTE_OP_S)
  if not outcome:
    raise TimeoutError(f"no answer within {_REMOTE_OP_S:.0f} s")
  if outcome[0] is not None:
    raise outcome[0]


def preemption_requested(task: Optional[cluster_lib.Task]) -> Optional[str]:
  """The name of a worker or ps task that asked to stop (SIGTERM), or None.

  Run by a ps-strategy chief's peer watch (tfdist.training.checkpoint), about
  once a second during ``fit``: one probe and one small remote op per task. A
  task that cannot be asked (dead, restarting, stopped) is skipped; the
  coordinator deals with lost workers, and a lost ps fails the chief.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if task is None:
    return None  # in-process cluster: no task can be signalled alone
  for job, index, address in _hosting_tasks(task):
    if not _answers(address):
      continue  # a remote op would wait forever for a stopped task
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
  if task is None:
    return  # in-process cluster: its servers end with this process
  pending = {f"{job}-{index}": (job, index, address)
             for job, index, address in _hosting_tasks(task)}
  failures = {}
  start = time.monotonic()
  last_report = start
  while True:
    for name, (job, index, address) in list(pending.items()):
      if not _answers(address):
        continue  # gone or stopped: a remote op to it would never return
      try:
        _write_on(job, index, done_marker(address),
                  "preempted" if preempted else "done")
        del pending[name]
      except Exception as e:  # pylint: disable=broad-except
        failures[name] = e
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
    # the chief is gone (see host_until_done).
    why = (type(failures[name]).__name__ if name in failures
           else "it did not answer")
    console.info(f"could not tell {name} at {address} that training is over "
                 f"({why})")


def signal_restart(task: cluster_lib.Task, *, skip=()) -> None:
  """Tells every worker and ps task but ``skip`` (and those that do not
  answer) that the chief is about to re-execute itself (a task not told
  exits at its usual deadline)."""
  for job, index, address in _hosting_tasks(task):
    if f"{job}-{index}" in skip or not _answers(address):
      continue
    try:
      _write_on(job, index, restart_marker(address), "restarting")
    except Exception:  # pylint: disable=broad-except
      continue


LEFT_OUT_DIR = "left_out"  # in --model_dir: a file per worker left out
RESULT_FILE = "result.json"  # the chief's, in --model_dir once it is done


def record_left_out(model_dir: str, task: cluster_lib.Task,
                    workers: list) -> None:
  """Records, before the chief goes on without ``workers`` (names), that
  they were left out: a file each, holding its address."""
  directory = os.path.join(model_dir, LEFT_OUT_DIR)
  os.makedirs(directory, exist_ok=True)
  for name in workers:
    job, index = name.rsplit("-", 1)
    _write_atomically(os.path.join(directory, name),
                      task.cluster[job][int(index)])


def _mtime(path: str) -> Optional[float]:
  try:
    return os.path.getmtime(path)
  except OSError:
    return None


def left_out_and_done(model_dir: Optional[str], task: cluster_lib.Task, *,
                      since: float) -> bool:
  """Whether the chief went on without this task (a record written since
  ``since``, this process's start, naming it at its address) and then
  finished the training (its result is newer than the record)."""
  if not model_dir:
    return False
  record = os.path.join(model_dir, LEFT_OUT_DIR, task.name)
  left_at = _mtime(record)
  if left_at is None or left_at < since:
    return False
  try:
    with open(record) as f:
      if f.read() != task.address:
        return False
  except OSError:
    return False
  done_at = _mtime(os.path.join(model_dir, RESULT_FILE))
  return done_at is not None and done_at >= left_at


def _left_out_line(task: cluster_lib.Task) -> None:
  console.info(f"{task.name}: chief-0 went on without this task (stalled "
               "or lost) and finished training; exiting")


def _remove(*paths: str) -> None:
  for path in paths:
    if os.path.exists(path):
      os.remove(path)


def _start_server(task: cluster_lib.Task, *, peer_timeout: float) -> None:
  """Checks the peers, then starts this task's TensorFlow server."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Same spec as the chief and every peer, before hosting anything. A
  # restarted task rejoins a running job: once any peer answers as a running
  # TensorFlow server, the others count as found (the chief checked them all
  # before training began, and some may have finished since).
  preflight.check_peers(task, timeout=peer_timeout,
                        found_if_running=tuple(preflight.peers_of(task)))
  tf.distribute.Server(
      tf.train.ClusterSpec(cluster_lib.training_cluster(task)),
      job_name=task.type, task_index=task.index, protocol="grpc", start=True)


def _wait_for_chief(task: cluster_lib.Task, *, chief_grace: float,
                    preempt_grace: float, model_dir: Optional[str],
                    since: float) -> Optional[int]:
  """Polls until the done marker appears (None) or this task must exit
  without it (its exit status; PeerLost when the chief went silent; 0
  once the chief went on without it and finished: left_out_and_done).

  The chief answered this task's preflight moments ago (or, for a task
  rejoining a running job, a peer did and the chief had checked them all):
  from then on it may be silent for at most ``chief_grace`` seconds (its
  server starts right after its own preflight), not until a longer wait
  for a chief that never came up.
  """
  marker, request = done_marker(task.address), preempt_marker(task.address)
  restart = restart_marker(task.address)
  chief = task.cluster["chief"][0]
  seen_at = time.monotonic()
  asked_at = None
  restart_until = 0.0
  sigterm = []
  # Only records: the request is written from the loop below.
  signal.signal(signal.SIGTERM, lambda signum, frame: sigterm.append(signum))
  while not os.path.exists(marker):
    now = time.monotonic()
    if left_out_and_done(model_dir, task, since=since):
      _left_out_line(task)
      return errors.EXIT_OK
    if sigterm and asked_at is None:
      _write_atomically(request, task.name)
      asked_at = now
      console.info(f"{task.name}: SIGTERM; asking chief-0 to save a "
                   "checkpoint and stop every task")
    if asked_at is not None and now - asked_at > preempt_grace:
      console.info(f"{task.name}: chief-0 did not stop the job within "
                   f"{preempt_grace:.0f} s of SIGTERM; exiting")
      os.remove(request)
      return errors.EXIT_PREEMPTED
    if os.path.exists(restart):
      _remove(restart)
      console.info(f"{task.name}: chief-0 restarts; waiting up to "
                   f"{RESTART_S:.0f} s for it")
      restart_until = now + RESTART_S
    if _answers(chief):
      seen_at = now
    elif now < restart_until:
      pass  # the chief re-executes itself: silent meanwhile
    elif now - seen_at > chief_grace:
      raise errors.PeerLost(f"hosting: chief-0 did not answer for "
                            f"{chief_grace:.0f} s without finishing",
                            [f"chief-0 at {chief}"])
    time.sleep(0.5)  # a polling interval, not synchronisation
  return None


def host_until_done(task: cluster_lib.Task, *,
                    chief_grace: Optional[float] = None,
                    peer_timeout: float = 120.0,
                    preempt_grace: float = 20.0,
                    model_dir: Optional[str] = None,
                    since: Optional[float] = None) -> int:
  """Hosts a ps-strategy worker or ps task until the chief is done.

  SIGTERM (preemption) does not stop the task at once: it asks the chief
  (see :func:`preempt_marker`) to save a checkpoint and stop every task, and
  keeps hosting meanwhile, since a ps holds the variables the chief saves.

  Returns the exit status: 0 when the chief signalled the end of training,
  143 when it signalled that the job was preempted (see :func:`signal_done`)
  or when this task got SIGTERM and the chief did not stop the job within
  ``preempt_grace`` seconds (Kubernetes kills a pod 30 s after SIGTERM by
  default). Raises PeerLost when the chief did not answer (killed, or
  stopped) for longer than ``chief_grace`` seconds without finishing,
  counted from this task's preflight, which it answered (so that no task
  is left behind waiting forever; a chief that said it restarts gets
  ``RESTART_S`` for it), or when a peer is not up within ``peer_timeout``
  seconds; ConfigError when a peer was started from another spec (statuses:
  tfdist.errors). Returns 0 too when the chief went on without this task
  and finished (a record in ``model_dir`` written after ``since``, this
  process's start: :func:`left_out_and_done`), also when no peer is left
  to find in preflight.
  ``chief_grace`` defaults to ``peer_timeout``.
  """
  since = time.time() if since is None else since
  marker, request = done_marker(task.address), preempt_marker(task.address)
  # Left by an earlier job on the same address.
  _remove(marker, request, restart_marker(task.address))
  try:
    _start_server(task, peer_timeout=peer_timeout)
  except errors.PeerLost:
    if not left_out_and_done(model_dir, task, since=since):
      raise
    _left_out_line(task)
    return errors.EXIT_OK
  console.info(f"{task.name} hosting at {task.address} until chief-0 at "
               f"{task.cluster['chief'][0]} is done")
  status = _wait_for_chief(task,
                           chief_grace=chief_grace or peer_timeout,
                           preempt_grace=preempt_grace, model_dir=model_dir,
                           since=since)
  if status is not None:
    return status
  with open(marker) as f:
    preempted = f.read() == "preempted"
  _remove(marker, request)
  if preempted:
    console.info(f"{task.name}: the job was preempted and chief-0 saved a "
                 "checkpoint; exiting to be restarted with it")
    return errors.EXIT_PREEMPTED
  console.info(f"{task.name}: chief-0 finished training; exiting")
  return errors.EXIT_OK
