r"""Runs a command under a memory cap, as a Kubernetes memory limit would.

    python -m tfdist.bench.capped --address_space_mib=4096 -- \
        python -m trainers.sparse --strategy=ps ...

Sets the process's address-space limit (``RLIMIT_AS``), then execs the
command, which inherits it: an allocation past the cap fails, as a ps
task's would past its pod's limit (where the kernel kills it instead).
The sharding bench (tfdist.bench.sharding) caps its ps tasks this way.

Imports tfdist.cli and tfdist.errors only.
"""

from __future__ import annotations

import os
import resource
import sys
from typing import Optional, Sequence

from tfdist import cli
from tfdist.errors import ConfigError

PROG = "python -m tfdist.bench.capped"


def command(address_space_mib: int) -> list:
  """The words that run a command after them under the cap."""
  return [sys.executable, "-m", "tfdist.bench.capped",
          f"--address_space_mib={address_space_mib}", "--"]


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Caps this process's address space, then execs the command."""
  own, words = cli.split_command(sys.argv[1:] if argv is None else argv)
  parser = cli.OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
  parser.add_argument("--address_space_mib", type=int, required=True)
  args = parser.parse_args(own)
  if not words or args.address_space_mib < 1:
    return cli.report(ConfigError(
        "give a cap of at least 1 MiB and the command after --: "
        f"{PROG} --address_space_mib=N -- COMMAND [ARG...]"))
  cap = args.address_space_mib << 20
  resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
  os.execvp(words[0], words)
  return 127  # not reached: execvp replaces this process or raises


if __name__ == "__main__":
  sys.exit(cli.run(main))
