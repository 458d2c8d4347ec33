r"""The entry point of every training pod: TF_CONFIG from spec, role and index.

    python -m tfdist.k8s.pod --cluster_spec=/etc/tfdist/cluster.json \
        --task_type=worker -- python -m trainers.mnist --strategy=multiworker

The pods of one Indexed Job share one template, so none of them can carry
its own TF_CONFIG. Each pod instead reads the cluster spec (a ConfigMap
volume), its task type (an argument of its Job) and its index (the
``JOB_COMPLETION_INDEX`` that the Job controller sets), builds its TF_CONFIG
and runs the trainer with it.

It stays the parent of the trainer instead of exec'ing it: as PID 1 of the
container it must pass the kubelet's SIGTERM on (PID 1 ignores signals it
has no handler for), and a trainer killed by signal N must end the pod with
status 128 + N, which the Job's podFailurePolicy retries.

Owns pod_tf_config and run_child (also how tfdist.k8s.exercise runs a pod).
Imports tfdist.cli, tfdist.cluster.specs, tfdist.console and
tfdist.cluster.launch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Mapping, Optional

from tfdist import cli
from tfdist import console
from tfdist.cluster import launch
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError

# Set by the Job controller in every pod of an Indexed Job.
INDEX_ENV = "JOB_COMPLETION_INDEX"


def pod_tf_config(*, cluster: Mapping[str, tuple], task_type: str,
                  completion_index: Optional[str]) -> str:
  """The TF_CONFIG of the pod with this task type and completion index.

  Args:
    cluster: the validated cluster spec of the job.
    task_type: the pod's role, e.g. ``worker``.
    completion_index: the value of JOB_COMPLETION_INDEX, or None if unset.

  Raises:
    ConfigError: no index, an index that is not a number, or a task the
      cluster does not have.
  """
  if completion_index is None or not completion_index.strip():
    raise ConfigError(f"{INDEX_ENV} is not set; run this in a pod of an "
                      "Indexed Job (completionMode: Indexed), or set it by "
                      "hand to the task index")
  if not completion_index.strip().isdigit():
    raise ConfigError(f"{INDEX_ENV}={completion_index!r} is not a task "
                      "index; it must be a number from 0")
  return cluster_lib.make_tf_config(cluster, task_type,
                                    int(completion_index))


def run_child(command: list, env: dict) -> int:
  """Runs ``command`` with ``env``, forwarding SIGTERM and SIGINT to it.

  Returns the child's shell-style exit status (128 + N when killed by
  signal N).
  """
  process = subprocess.Popen(command, env=env)

  def forward(signum, frame):
    del frame
    process.send_signal(signum)

  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, forward)
  return launch.exit_status(process.wait())


def main(argv=None) -> int:
  own, command = cli.split_command(sys.argv[1:] if argv is None else argv)
  parser = cli.OneLineParser(
      prog="python -m tfdist.k8s.pod",
      usage="python -m tfdist.k8s.pod --cluster_spec FILE --task_type TYPE "
            "-- COMMAND [ARGS...]",
      description="Run COMMAND with the TF_CONFIG of this pod of an Indexed "
                  "Job.")
  parser.add_argument("--cluster_spec", required=True,
                      help="the job's cluster spec (mounted from a ConfigMap)")
  parser.add_argument("--task_type", required=True,
                      help="this Job's role: chief, worker, ps or evaluator")
  args = parser.parse_args(own)
  try:
    if not command:
      raise ConfigError("no command to run; put it after --, e.g. -- python "
                        "-m trainers.mnist --strategy=multiworker")
    spec = cluster_lib.load_spec(args.cluster_spec)
    tf_config = pod_tf_config(cluster=spec, task_type=args.task_type,
                              completion_index=os.environ.get(INDEX_ENV))
  except ConfigError as e:
    return cli.report(e)
  index = os.environ[INDEX_ENV].strip()
  console.info(f"pod task {args.task_type}-{index} at "
               f"{spec[args.task_type][int(index)]}")
  # An entry point may set the environment: the child gets its TF_CONFIG.
  env = dict(os.environ, TF_CONFIG=tf_config)
  try:
    return run_child(command, env)
  except OSError as e:
    return cli.report(ConfigError(f"cannot run {command[0]!r} ({e.strerror})"))


if __name__ == "__main__":
  sys.exit(main())
