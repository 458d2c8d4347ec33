"""``python -m tfdist.k8s render|exercise ...``: dispatches to the command."""

from __future__ import annotations

import sys

from tfdist.k8s import exercise
from tfdist.k8s import render

COMMANDS = {"render": render.main, "exercise": exercise.main}


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] and argv[0] in COMMANDS:
    return COMMANDS[argv[0]](argv[1:])
  if argv[:1] in (["-h"], ["--help"]):
    print("usage: python -m tfdist.k8s render|exercise ... (--help after "
          "either lists its flags)")
    return 0
  print("error: say what to do: python -m tfdist.k8s render|exercise ... "
        "(--help after either lists its flags)", file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(main())
