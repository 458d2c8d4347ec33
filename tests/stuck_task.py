"""A task whose main thread blocks inside TensorFlow, for the watchdog tests.

python tests/stuck_task.py op READY DEADLINE PEER_ADDRESS
  blocks in an op (a dequeue from an empty queue: C++ with the GIL free);
  READY is written by an op of the same function, once C++ runs.
python tests/stuck_task.py gil READY DEADLINE PEER_ADDRESS
  blocks in C code that holds the GIL (libc's sleep called through
  ctypes.PyDLL), as TensorFlow does while it registers a function with a
  stopped task: no Python thread runs, the sentinel acts.
python tests/stuck_task.py frozen READY DEADLINE PEER_ADDRESS
  a thread beats a heartbeat sentinel (as the ps chief's stall watch does)
  for twice its deadline, then READY, then the GIL is held for good.
python tests/stuck_task.py strategy READY DEADLINE TF_CONFIG
  runs preflight, then MultiWorkerMirroredStrategy's constructor, which
  blocks (holding the GIL) while a peer that passed preflight is gone.
python tests/stuck_task.py allreduce READY HEARTBEAT TF_CONFIG
  all-reduces in a loop with its peers (for up to 2 minutes); a peer that
  stops sending heartbeats for HEARTBEAT seconds ends it with status 200.
READY is a file written just before the blocking call (the loop); in op
mode, from inside it.
"""

import os
import signal
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

# pylint: disable=g-import-not-at-top
from tfdist import cli
from tfdist.cluster import preflight
from tfdist.cluster import specs as cluster_lib
from tfdist.liveness import coordination
from tfdist.liveness import watchdog


def _ready(path: str) -> None:
  with open(path, "w") as f:
    f.write(str(os.getpid()))


def block_in_op(ready: str, deadline_s: float, peer: str) -> int:
  import tensorflow as tf
  queue = tf.queue.FIFOQueue(1, tf.int32)

  @tf.function
  def ready_then_dequeue():
    # READY is written by an op of the running function, so the main thread
    # is already inside TensorFlow's C++ (the GIL free) when it appears: a
    # signal sent then cannot reach Python before the dequeue.
    written = tf.py_function(lambda: _ready(ready) or 0, [], tf.int32)
    with tf.control_dependencies([written]):
      return queue.dequeue()

  ready_then_dequeue.get_concrete_function()  # traced before the phase
  # Like the trainers: SIGTERM only recorded, for the training loop to act.
  signal.signal(signal.SIGTERM, lambda signum, frame: None)
  with watchdog.phase("first step", deadline_s=deadline_s,
                      peers={"worker-1": peer}, grace_s=2):
    ready_then_dequeue()
  return 0


def block_holding_the_gil(ready: str, deadline_s: float, peer: str) -> int:
  import ctypes
  signal.signal(signal.SIGTERM, lambda signum, frame: None)
  with watchdog.phase("first step", deadline_s=deadline_s,
                      peers={"ps-0": peer}, grace_s=2, may_hold_gil=True):
    _ready(ready)
    for _ in range(2):  # a signal interrupts sleep(): sleep again
      ctypes.PyDLL(None).sleep(120)
  return 0


def freeze_after_heartbeats(ready: str, deadline_s: float, peer: str) -> int:
  import ctypes
  import threading
  import time
  from tfdist.liveness import sentinel
  watching = sentinel.Sentinel(name="training", deadline_s=deadline_s,
                               grace_s=1, peers={"worker-1": peer})

  def beat():
    while True:
      time.sleep(0.2)
      watching.beat()
  threading.Thread(target=beat, daemon=True).start()
  time.sleep(2 * deadline_s)  # beaten: the sentinel must not act
  _ready(ready)
  ctypes.PyDLL(None).sleep(120)
  return 0


def _past_preflight(tf_config: str, **deadlines):
  """(task's peers, its resolver), coordination deadlines configured."""
  import tensorflow as tf
  task = cluster_lib.parse_tf_config(tf_config)
  cluster = {job: list(addresses) for job, addresses in task.cluster.items()}
  preflight.check_peers(task, timeout=30)
  coordination.configure(cluster, **deadlines)
  return preflight.peers_of(task), (
      tf.distribute.cluster_resolver.SimpleClusterResolver(
          tf.train.ClusterSpec(cluster), task_type=task.type,
          task_id=task.index, rpc_layer="grpc"))


def _lost(error, phase: str, peers: dict) -> None:
  # As an entry point must: no TensorFlow teardown after a lost peer.
  watchdog.exit_now(cli.report(coordination.peer_lost(error, phase, peers)))


def block_in_strategy(ready: str, deadline_s: float, tf_config: str) -> int:
  import tensorflow as tf
  peers, resolver = _past_preflight(tf_config, register_timeout_s=deadline_s)
  with watchdog.phase("strategy creation", deadline_s=deadline_s + 10,
                      peers=peers, holds_gil=True):
    _ready(ready)
    try:
      tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except tf.errors.DeadlineExceededError as e:
      _lost(e, "strategy creation", peers)
  return 0


def all_reduce_until_a_peer_stalls(ready: str, heartbeat_s: float,
                                   tf_config: str) -> int:
  import tensorflow as tf
  peers, resolver = _past_preflight(tf_config, register_timeout_s=60,
                                    heartbeat_timeout_s=heartbeat_s)
  strategy = tf.distribute.MultiWorkerMirroredStrategy(
      cluster_resolver=resolver)

  @tf.function
  def step():
    return strategy.run(lambda: tf.distribute.get_replica_context()
                        .all_reduce("sum", tf.ones([1000])))

  step()
  _ready(ready)
  try:
    for _ in range(100000):  # a couple of minutes at most
      step()
  except tf.errors.OpError as e:
    _lost(e, "training", peers)
  return 0


if __name__ == "__main__":
  mode, ready, deadline, arg = sys.argv[1:]
  run = {"op": block_in_op, "gil": block_holding_the_gil,
         "frozen": freeze_after_heartbeats,
         "strategy": block_in_strategy,
         "allreduce": all_reduce_until_a_peer_stalls}[mode]
  sys.exit(run(ready, float(deadline), arg))
