r"""Runs a command on one CPU core chosen by its task: the bench's fair share.

    python -m tfdist.bench.pin -- python -m trainers.mnist --strategy=multiworker ...

tfdist.bench measures weak scaling as N workers against one worker with the
same per-worker resources. Capping TensorFlow's thread pools is not enough
for that: a model with parallel branches (Inception) runs them on several
inter-op threads, so one worker alone takes both cores of a 2-core machine
and two workers then seem not to scale at all. Pinning worker i to core i
(modulo the cores this process may use) gives every training task exactly
one core. Tasks that do not compute steps (a ps-strategy chief, ps tasks,
an evaluator) are left unpinned; a single process (no TF_CONFIG) runs on the
first core.

The affinity is set on this process and then the command is exec'd: it is
inherited across exec and by every thread the command starts.

Owns core_for. Imports tfdist.cli and tfdist.cluster.specs only.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from tfdist import cli
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError


def core_for(task: Optional[cluster_lib.Task],
             cores: Sequence[int]) -> Optional[int]:
  """The core a task runs on, or None to leave it unpinned.

  Args:
    task: the task from TF_CONFIG, or None for a single process.
    cores: the cores this process may use, in order.
  """
  if task is None:
    return cores[0]
  if task.type == "worker" or (task.type == "chief" and
                               "ps" not in task.cluster):
    # Under multiworker a chief trains like any worker; it goes after them.
    slot = task.index if task.type == "worker" else len(
        task.cluster.get("worker", ()))
    return cores[slot % len(cores)]
  return None


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Pins this process as :func:`core_for` says, then execs the command."""
  own, command = cli.split_command(sys.argv[1:] if argv is None else argv)
  if own or not command:
    return cli.report(ConfigError(
        "give the command after --: python -m tfdist.bench.pin -- COMMAND "
        "[ARG...]"))
  task = cluster_lib.task_from_environ(os.environ)
  core = core_for(task, sorted(os.sched_getaffinity(0)))
  if core is not None:
    os.sched_setaffinity(0, {core})
  os.execvp(command[0], command)
  return 127  # not reached: execvp replaces this process or raises


if __name__ == "__main__":
  sys.exit(cli.run(main))
