r"""Runs a trainer whose checkpoint writes or restore are slow, as on a slow
volume: the chaos sweep's and the tests' way to widen those windows.

    python -m tfdist.bench.slowed --writes=1,2 --seconds=8 -- \
        -m trainers.mnist --strategy=ps --model_dir=/tmp/m ...

In this process, the checkpoint writes counted in ``--writes`` (1 is its
first write, ``final`` the final save into ``final/``) and, with
``--restore``, the restore each take ``--seconds`` longer: the time passes
inside TensorFlow's ``Checkpoint._write`` (within the save's deadline, past
the wait for the steps in flight) or before ``Checkpoint.read``, and then
the real write or read runs. Each slow one says so when it begins, in one
line (``tfdist.bench.slowed: write 2 of ... slowed by 8 s``), the moment
the sweep and the tests act on. A re-executed process (a ps chief going on
without a worker) runs the same command, so it is slowed again, its count
starting anew.

Imports tfdist.app (what an entry point sets before TensorFlow), cli and
errors; TensorFlow.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from typing import Optional, Sequence

from tfdist import cli
from tfdist.errors import ConfigError

PROG = "python -m tfdist.bench.slowed"
PREFIX = "tfdist.bench.slowed:"


def command(*, writes: str = "", restore: bool = False,
            seconds: float) -> list:
  """The words that run a ``[python] -m MODULE ...`` command after them,
  slowed (the interpreter given is this one)."""
  return [sys.executable, "-m", "tfdist.bench.slowed", f"--writes={writes}",
          f"--seconds={seconds:g}", *(["--restore"] if restore else []),
          "--"]


def _say(what: str, seconds: float) -> None:
  print(f"{PREFIX} {what} slowed by {seconds:g} s", file=sys.stderr,
        flush=True)


def _slow(writes: set, restore: bool, seconds: float) -> None:
  """Patches tf.train.Checkpoint's write and read in this process."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  checkpoint = tf.train.Checkpoint
  write, read = checkpoint._write, checkpoint.read  # pylint: disable=protected-access
  count = [0]

  def slow_write(self, file_prefix, *args, **kwargs):
    count[0] += 1
    final = "/final/" in str(file_prefix)
    if str(count[0]) in writes or (final and "final" in writes):
      _say(f"write {count[0]} of {file_prefix}", seconds)
      time.sleep(seconds)  # the slow volume itself
    return write(self, file_prefix, *args, **kwargs)

  def slow_read(self, save_path, *args, **kwargs):
    if restore:
      _say(f"restore of {save_path}", seconds)
      time.sleep(seconds)  # the slow volume itself
    return read(self, save_path, *args, **kwargs)

  checkpoint._write = slow_write  # pylint: disable=protected-access
  checkpoint.read = slow_read


def main(argv: Optional[Sequence[str]] = None) -> int:
  own, words = cli.split_command(sys.argv[1:] if argv is None else argv)
  parser = cli.OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
  parser.add_argument("--writes", default="",
                      help="comma list of write counts (1 = the first) "
                           "and/or final")
  parser.add_argument("--restore", action="store_true")
  parser.add_argument("--seconds", type=float, required=True)
  args = parser.parse_args(own)
  writes = {w.strip() for w in args.writes.split(",") if w.strip()}
  if words and os.path.basename(words[0]).startswith("python"):
    words = words[1:]  # python -m MODULE: run here, in this interpreter
  if (len(words) < 2 or words[0] != "-m" or args.seconds <= 0
      or not all(w == "final" or w.isdigit() for w in writes)):
    raise ConfigError(
        f"{PROG} --writes=N,...,final --seconds=S [--restore] -- [python] "
        "-m MODULE [ARG...]: S above 0, write counts from 1, a module to "
        "run")
  from tfdist import app  # pylint: disable=g-import-not-at-top
  app.prepare_environment()  # as the trainer's entry point, before TF
  _slow(writes, args.restore, args.seconds)
  sys.argv = [words[1], *words[2:]]
  runpy.run_module(words[1], run_name="__main__", alter_sys=True)
  return 0


if __name__ == "__main__":
  sys.exit(cli.run(main))
