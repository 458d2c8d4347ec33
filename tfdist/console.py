"""One-line status messages for people reading a terminal or pod log."""

import sys


def info(message: str) -> None:
  """Prints ``tfdist: message`` to stderr, flushed at once.

  Flushed because the launcher and ``kubectl logs`` interleave several tasks'
  output: a buffered line would show up late and out of order.
  """
  print(f"tfdist: {message}", file=sys.stderr, flush=True)
