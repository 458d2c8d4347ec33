"""A ps chief's liveness pieces, one at a time, for tests/liveness/test_liveness.py.

python tests/liveness_task.py peer_watch WORKDIR
  runs 50 step boundaries of tfdist.training.checkpoint's callback while its
  question to the peers hangs (printing the seconds each took), then
  answers it (worker-1 asked to stop): the next boundary saves and stops.
python tests/liveness_task.py ps_save WORKDIR
  a ps chief (2 ps tasks in this process, worker-0 a process of its own)
  runs steps on worker-0, saves, stops worker-0 (SIGSTOP) between steps
  and saves again (tfdist.training.ps_save: no function registered with
  it), each save's 2 ps tasks writing at once (their writes meet at a
  barrier);
  prints the saves and the tasks they wrote on.
python tests/liveness_task.py save WORKDIR
  gets SIGTERM (sent to itself) inside a save nested in training that runs
  Python for 5 s (the task's handler runs; the save's sentinel must not
  act); then reaches the next step boundary of tfdist.training.checkpoint's
  callback, which saves to WORKDIR.
python tests/liveness_task.py unreadable WORKDIR
  starts a stall watch on a ClusterCoordinator whose private attributes
  differ from TensorFlow's, then waits for its child processes to end.
python tests/liveness_task.py after_fit WORKDIR
  ends fit with worker-1 stopped (a socket that never speaks) and worker-0
  answering; the stall watch must go on without worker-1 (TensorFlow would
  hold the chief's final save or test accuracy on it): the task ends with
  0 when it does, with 1 when the watch probed 3 times and did not.
python tests/liveness_task.py stall_watch WORKDIR
  unreadable, then (if it ended with 0) after_fit, in this one process
  (one TensorFlow import); their outputs apart after a line "---".
The ps cluster's peers are free loopback ports (nobody there) unless said.
"""

import json
import os
import queue
import signal
import socket
import sys
import threading
import time
import types

os.environ["TF_USE_LEGACY_KERAS"] = "1"

# pylint: disable=g-import-not-at-top,protected-access
import portpicker

from tfdist import cli
from tfdist.cluster import preflight
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import Preempted
from tfdist.liveness import deadlines
from tfdist.liveness import stall_watch
from tfdist.liveness import watchdog


def _cluster(worker_0: str = "", worker_1: str = "") -> dict:
  free = [f"127.0.0.1:{portpicker.pick_unused_port()}" for _ in range(4)]
  return {"chief": [free[0]], "worker": [worker_0 or free[1],
                                         worker_1 or free[2]],
          "ps": [free[3]]}


def _checkpointing(workdir: str, **kwargs):
  """tfdist.training.checkpoint's callback of a small model, begun (its SIGTERM
  handler installed) and in its first epoch."""
  import tensorflow as tf
  from tfdist.training import checkpoint
  model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
  model.compile(optimizer="sgd", loss="mse")
  saving = checkpoint.Checkpointing(
      model=model, strategy=tf.distribute.get_strategy(), model_dir=workdir,
      write_dir=workdir, options=checkpoint.CheckpointOptions(),
      steps_per_epoch=1000, signature={}, workers_agree=False, **kwargs)
  callback = saving.callback()
  callback.set_model(model)
  callback.on_train_begin()
  callback.on_epoch_begin(0)
  return callback


def peer_watch_off_the_loop(workdir: str) -> int:
  asked, answer = threading.Event(), threading.Event()

  def ask():  # a stopped peer: no answer until released
    asked.set()
    answer.wait(30)
    return "worker-1" if answer.is_set() else None

  callback = _checkpointing(workdir, peer_preempted=ask)
  asked.wait(10)
  for batch in range(50):
    started = time.monotonic()
    callback.on_train_batch_end(batch)
    print(f"{time.monotonic() - started:.4f}", flush=True)
  answer.set()
  deadline = time.monotonic() + 10
  try:
    while time.monotonic() < deadline:
      callback.on_train_batch_end(50)
      time.sleep(0.05)  # the next step boundary, until the answer is read
  except Preempted as e:
    return cli.report(e)
  return 0


_SERVER = (
    "import json, sys, tensorflow as tf; "
    "tf.distribute.Server(tf.train.ClusterSpec(json.loads(sys.argv[1])), "
    "job_name=sys.argv[2], task_index=int(sys.argv[3]), start=True).join()")


def _ps_strategy(cluster: dict) -> tuple:
  """ParameterServerStrategy of the chief of ``cluster``, its ps tasks
  served in this process, its worker in a process of its own (a bare
  TensorFlow server): returns (the strategy, the worker's process)."""
  import subprocess
  import tensorflow as tf
  spec = tf.train.ClusterSpec(cluster)
  for index in range(len(cluster["ps"])):
    tf.distribute.Server(spec, job_name="ps", task_index=index, start=True)
  worker = subprocess.Popen([sys.executable, "-c", _SERVER,
                             json.dumps(cluster), "worker", "0"])
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      spec, task_type="chief", task_id=0, rpc_layer="grpc")
  try:
    return tf.distribute.experimental.ParameterServerStrategy(resolver), worker
  except BaseException:
    worker.kill()
    raise


def _instrumented_saves() -> list:
  """Counts tfdist.training.ps_save's saves (the replacement took effect), and
  makes each ps task's write wait for the other's (they run at once)."""
  from tensorflow.python.checkpoint import functional_saver
  from tfdist.training import ps_save
  calls, barrier = [], threading.Barrier(2, timeout=20)
  parallel_save, shard_save = (ps_save._parallel_save,
                               functional_saver._single_shard_save)

  def counted(saver, *args):
    calls.append(1)
    return parallel_save(saver, *args)

  def met(prefix, shard, task, options):
    barrier.wait()  # BrokenBarrierError if the other task's never comes
    return shard_save(prefix, shard, task, options)

  ps_save._parallel_save = counted
  functional_saver._single_shard_save = met
  return calls


def ps_save_with_a_stopped_worker(workdir: str) -> int:
  import tensorflow as tf
  from tfdist.training import ps_save
  free = [f"127.0.0.1:{portpicker.pick_unused_port()}" for _ in range(4)]
  cluster = {"chief": free[:1], "worker": free[1:2], "ps": free[2:]}
  strategy, worker = _ps_strategy(cluster)
  try:
    with strategy.scope():  # a variable on each ps task
      model = tf.keras.Sequential([tf.keras.layers.Dense(4, input_shape=(3,))])
      model.compile(optimizer="sgd", loss="mse")
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(
        strategy)
    step = tf.function(lambda: [v.assign_add(tf.ones_like(v))
                                for v in model.trainable_variables])
    saves = _instrumented_saves()
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model), workdir, max_to_keep=3)
    for number in (1, 2):
      for _ in range(3):
        coordinator.schedule(step)
      coordinator.join()  # between steps: worker-0 holds none
      if number == 2:
        os.kill(worker.pid, signal.SIGSTOP)
      # A save that registered a function with worker-0 would wait for it
      # holding the GIL: the sentinel ends the task with 142.
      with watchdog.phase("checkpoint save", deadline_s=30,
                          may_hold_gil=True), ps_save.op_by_op(model):
        manager.save()
      print(f"saved {number} with {len(saves)} parallel saves on "
            f"{sorted(ps_save.variable_tasks(model))}", flush=True)
    return 0
  finally:
    worker.kill()


def sigterm_in_a_save(workdir: str) -> int:
  task = cluster_lib.make_task(_cluster(), "chief", 0)
  callback = _checkpointing(workdir)
  with watchdog.phase("training", peers=preflight.peers_of(task),
                      grace_s=1):
    # As a ps chief's: a sentinel too, which must learn that the task's
    # handler ran (from the watchdog's thread: the handler only counts).
    with deadlines.checkpoint_write(task, peer_timeout=60, nbytes=0,
                                    may_hold_gil=True):
      os.kill(os.getpid(), signal.SIGTERM)  # as Kubernetes would
      for _ in range(100):  # a save that runs Python between its ops
        time.sleep(0.05)
    try:
      callback.on_train_batch_end(0)  # the next step boundary
    except Preempted as e:
      return cli.report(e)
  return 0


def _start_watch(coordinator_queue, **watch_args):
  """A stall watch and its callback, begun on a model whose coordinator
  has ``coordinator_queue`` as its closure queue."""
  task = cluster_lib.make_task(watch_args.pop("cluster", _cluster()),
                               "chief", 0)
  watch = stall_watch.StallWatch(task, **watch_args)
  callback = watch.callback()
  callback.set_model(types.SimpleNamespace(
      _cluster_coordinator=types.SimpleNamespace(
          _cluster=types.SimpleNamespace(closure_queue=coordinator_queue))))
  callback.on_train_begin()
  return watch, callback


def _children() -> list:
  """This process's children that have not exited (zombies left out)."""
  pid = os.getpid()
  with open(f"/proc/{pid}/task/{pid}/children") as f:
    children = f.read().split()
  alive = []
  for child in children:
    try:
      with open(f"/proc/{child}/stat") as f:
        if f.read().rsplit(")", 1)[1].split()[0] != "Z":
          alive.append(child)
    except FileNotFoundError:
      pass
  return alive


def unreadable_coordinator(workdir: str) -> int:
  del workdir
  # Another TensorFlow: no _queue, no inflight_closure_count.
  _start_watch(types.SimpleNamespace(pending=0))
  deadline = time.monotonic() + 120
  while _children() and time.monotonic() < deadline:
    time.sleep(0.2)  # the sentinel ends, or ends this process (142)
  print("no child left", flush=True)
  return 0


def stopped_worker_after_fit(workdir: str) -> int:
  del workdir
  stopped = socket.socket()
  stopped.bind(("127.0.0.1", 0))
  stopped.listen(16)  # the kernel accepts; nothing ever answers
  worker_0 = socket.socket()
  worker_0.bind(("127.0.0.1", 0))
  cluster = _cluster(worker_0=f"127.0.0.1:{worker_0.getsockname()[1]}",
                     worker_1=f"127.0.0.1:{stopped.getsockname()[1]}")
  worker_0.close()
  answering = preflight._Listener(  # worker-0 answers its handshake
      cluster_lib.make_task(cluster, "worker", 0),
      f"tfdist-preflight {cluster_lib.spec_digest(cluster)} "
      "worker-0\n".encode())
  stall_watch.on_stalled_workers(
      lambda names: (print(f"goes on without {names}", flush=True),
                     watchdog.exit_now(0)))
  watch, callback = _start_watch(
      types.SimpleNamespace(_queue=queue.Queue(), inflight_closure_count=0),
      cluster=cluster, stall_timeout=1)
  probes = []
  silent_peers = watch.silent_peers
  watch.silent_peers = lambda **kwargs: (probes.append(1),
                                         silent_peers(**kwargs))[1]
  callback.on_train_batch_begin(0)
  callback.on_train_batch_end(0)
  callback.on_train_end()  # the final save, the test accuracy, ...
  deadline = time.monotonic() + 30
  while len(probes) < 3 and time.monotonic() < deadline:
    time.sleep(0.05)  # the watch probes the peers once a stall deadline
  answering.close()
  print(f"the watch probed the peers {len(probes)} times and went on with "
        "worker-1", flush=True)
  return 1


def both_stall_watches(workdir: str) -> int:
  status = unreadable_coordinator(workdir)
  print("---", flush=True)
  return status or stopped_worker_after_fit(workdir)


if __name__ == "__main__":
  mode, work = sys.argv[1:]
  sys.exit({"peer_watch": peer_watch_off_the_loop, "save": sigterm_in_a_save,
            "ps_save": ps_save_with_a_stopped_worker,
            "unreadable": unreadable_coordinator,
            "after_fit": stopped_worker_after_fit,
            "stall_watch": both_stall_watches}[mode](work))
