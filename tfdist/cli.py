"""What every ``python -m`` entry point of tfdist shares.

Owns: splitting argv at ``--``, an argparse parser whose errors are one line,
and turning the exceptions of :mod:`tfdist.errors` into one ``error:`` line
and their exit status. Imports only tfdist.errors. Entry points, not library
code, read ``sys.argv`` and set up the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Callable, Optional, Sequence, Tuple

from tfdist import errors


# The flags with which absl prints help and exits.
HELP_FLAGS = frozenset({"-h", "-?", "--help", "--helpshort", "--helpfull",
                        "--helpxml"})


@contextlib.contextmanager
def help_is_success(argv: Optional[Sequence[str]]):
  """Around ``absl.app.run``: help that was asked for ends with status 0
  (absl's own exit status for it is 1, a failure to every caller)."""
  args = list(sys.argv if argv is None else argv)[1:]
  try:
    yield
  except SystemExit as e:
    if e.code == 1 and HELP_FLAGS & set(args):
      raise SystemExit(0) from None
    raise


def split_command(argv: Sequence[str]) -> Tuple[list, list]:
  """``(own flags, command)``: argv split at the first ``--``."""
  argv = list(argv)
  if "--" not in argv:
    return argv, []
  split = argv.index("--")
  return argv[:split], argv[split + 1:]


class OneLineParser(argparse.ArgumentParser):
  """Reports a bad flag in one ``error:`` line, like every other bad input."""

  def error(self, message):
    self.exit(errors.EXIT_CONFIG,
              f"error: {message} (see {self.prog} --help)\n")


def report(error: BaseException) -> int:
  """Prints ``error`` as one line on stderr; returns its exit status."""
  if isinstance(error, errors.Preempted):
    print(f"tfdist: {error}", file=sys.stderr, flush=True)
    return errors.EXIT_PREEMPTED
  print(f"error: {error}", file=sys.stderr, flush=True)
  if isinstance(error, errors.ConfigError):
    return errors.EXIT_CONFIG
  if isinstance(error, errors.PeerLost):
    return errors.EXIT_PEER_LOST
  return errors.EXIT_FAILED


def run(main: Callable[[], int]) -> int:
  """Calls ``main()``; a tfdist error becomes one line and its status."""
  try:
    return main()
  except (errors.ConfigError, errors.PeerLost, errors.Stalled,
          errors.Preempted) as e:
    return report(e)
