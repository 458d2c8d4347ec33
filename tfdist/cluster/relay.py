"""Child processes' output read as whole lines, and relayed with a prefix.

A child's stdout and stderr are two pipes, each read by its own thread, and
every line is handed on whole. Merged into one pipe (``stderr=STDOUT``), a
line the child writes on one stream (its JSON result on stdout) can land in
the middle of a partial line of the other (a traceback another thread is
writing), and whoever reads the result loses it. The lines of one stream
keep their order; the two streams interleave only between lines.

Owns: :func:`follow` (the two reader threads of a process) and
:class:`Relay` (one output whole ``[NAME] text`` lines go to, one at a
time). tfdist.cluster.launch, tfdist.k8s.pods and tfdist.bench.jobs use them.
Imports nothing from tfdist.
"""

from __future__ import annotations

import subprocess
import threading
from typing import Callable


def read_lines(stream, on_line: Callable[[str], None]) -> None:
  """Calls ``on_line`` with each line of the binary ``stream`` until its
  end (decoded, trailing whitespace removed), a last line without a newline
  too, once; then closes the stream."""
  with stream:
    for raw in iter(stream.readline, b""):
      on_line(raw.decode(errors="replace").rstrip())


def follow(process: subprocess.Popen,
           on_line: Callable[[str], None]) -> list:
  """Starts one daemon thread per output pipe of ``process`` (started with
  ``stdout=PIPE, stderr=PIPE``, binary), each calling ``on_line`` with the
  whole lines of its pipe; returns the threads (they end at the pipes'
  end). ``on_line`` is called from both threads."""
  readers = [threading.Thread(target=read_lines, args=(stream, on_line),
                              daemon=True)
             for stream in (process.stdout, process.stderr)]
  for reader in readers:
    reader.start()
  return readers


class Relay:
  """A text output (the launcher's stdout) that lines ``[NAME] text`` are
  written to from many threads: each line whole, in one write and a flush
  under one lock, so no two lines ever mix."""

  def __init__(self, out):
    self._out = out
    self._lock = threading.Lock()

  def write(self, name: str, text: str) -> None:
    line = f"[{name}] {text}\n"
    with self._lock:
      self._out.write(line)
      self._out.flush()
