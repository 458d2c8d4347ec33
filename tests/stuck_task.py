"""A task whose main thread blocks inside TensorFlow, for the watchdog tests.

python tests/stuck_task.py op READY DEADLINE PEER_ADDRESS
  blocks in an op (a dequeue from an empty queue: C++ with the GIL free).
python tests/stuck_task.py strategy READY DEADLINE TF_CONFIG
  runs preflight, then MultiWorkerMirroredStrategy's constructor, which
  blocks (holding the GIL) while a peer that passed preflight is gone.
READY is a file written just before the blocking call.
"""

import os
import signal
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

# pylint: disable=g-import-not-at-top
from tfdist import cli
from tfdist import cluster as cluster_lib
from tfdist import coordination
from tfdist import preflight
from tfdist import watchdog


def _ready(path: str) -> None:
  with open(path, "w") as f:
    f.write(str(os.getpid()))


def block_in_op(ready: str, deadline_s: float, peer: str) -> int:
  import tensorflow as tf
  queue = tf.queue.FIFOQueue(1, tf.int32)
  # Like the trainers: SIGTERM only recorded, for the training loop to act.
  signal.signal(signal.SIGTERM, lambda signum, frame: None)
  with watchdog.phase("first step", deadline_s=deadline_s,
                      peers={"worker-1": peer}, grace_s=2):
    _ready(ready)
    queue.dequeue()
  return 0


def block_in_strategy(ready: str, deadline_s: float, tf_config: str) -> int:
  import tensorflow as tf
  task = cluster_lib.parse_tf_config(tf_config)
  cluster = {job: list(addresses) for job, addresses in task.cluster.items()}
  preflight.check_peers(task, timeout=30)
  peers = preflight.peers_of(task)
  coordination.configure(cluster, register_timeout_s=deadline_s)
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(cluster), task_type=task.type,
      task_id=task.index, rpc_layer="grpc")
  with watchdog.phase("strategy creation", deadline_s=deadline_s + 10,
                      peers=peers, holds_gil=True):
    _ready(ready)
    try:
      tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except tf.errors.DeadlineExceededError as e:
      return cli.report(coordination.peer_lost(e, "strategy creation", peers))
  return 0


if __name__ == "__main__":
  mode, ready, deadline, arg = sys.argv[1:]
  run = {"op": block_in_op, "strategy": block_in_strategy}[mode]
  sys.exit(run(ready, float(deadline), arg))
