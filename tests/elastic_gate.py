"""A task whose restart is held back, as a pod whose replacement is not
scheduled until a node comes back (for tests/test_elastic.py).

python tests/elastic_gate.py GATE_DIR -- COMMAND [ARGS...]
  The first start of a task (named by its TF_CONFIG) leaves a mark in
  GATE_DIR and runs COMMAND; a later start of the same task waits until
  GATE_DIR/open exists (for at most 10 minutes, then exits 1), then runs
  COMMAND in its place (exec: the launcher's pid stays the task's).
"""

import os
import sys
import time

from tfdist.cluster import specs as cluster_lib

_WAIT_S = 600


def main(argv) -> int:
  gate, command = argv[1], argv[argv.index("--") + 1:]
  task = cluster_lib.task_from_environ(os.environ)
  mark = os.path.join(gate, f"{task.name}-started")
  if os.path.exists(mark):
    deadline = time.monotonic() + _WAIT_S
    while not os.path.exists(os.path.join(gate, "open")):
      if time.monotonic() > deadline:
        print(f"{task.name}: the gate stayed shut", file=sys.stderr)
        return 1
      time.sleep(0.1)  # polling a file, not ordering
  os.makedirs(gate, exist_ok=True)
  with open(mark, "w"):
    pass
  os.execvp(command[0], command)
  return 1  # not reached


if __name__ == "__main__":
  sys.exit(main(sys.argv))
