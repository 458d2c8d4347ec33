"""One-line messages for people reading a terminal or pod log, and the one
JSON result line programs read. Imports nothing from tfdist."""

import io
import json
import os
import sys


def info(message: str) -> None:
  """Prints ``tfdist: message`` to stderr, flushed at once.

  Flushed because the launcher and ``kubectl logs`` interleave several tasks'
  output: a buffered line would show up late and out of order.
  """
  print(f"tfdist: {message}", file=sys.stderr, flush=True)


def result(obj: dict) -> None:
  """Prints ``obj`` as one JSON line to stdout, written whole.

  The line is what benchmarks, tests and users' scripts parse. ``print``
  may write the text and its newline separately (unbuffered, as under the
  launcher), and another thread's output between the two would cut the line;
  here what ``sys.stdout`` holds is flushed first, then the complete line
  goes out in one ``os.write`` (repeated only for what a short write left).
  """
  line = (json.dumps(obj) + "\n").encode()
  sys.stdout.flush()
  try:
    fd = sys.stdout.fileno()
  except (AttributeError, io.UnsupportedOperation):  # e.g. a notebook's
    sys.stdout.write(line.decode())
    sys.stdout.flush()
    return
  while line:
    line = line[os.write(fd, line):]
