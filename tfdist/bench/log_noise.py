"""Noise after training: E-level lines and tracebacks after the last epoch.

Owns: what counts as noise in a task's log once training is over (an
E-level line of TensorFlow's C++ or absl logging, ``E1205 09:26:34.1...``,
or a Python traceback) and where training ends in a chief's log (the
summary line of its last epoch, as Keras prints it at ``--verbose=2``, the
default off a terminal). A successful job prints none after that line;
lines before it may name a lost task. The chaos sweep (tfdist.bench.chaos)
and the fault-tolerance tests use it. Imports nothing from tfdist.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

_E_LEVEL = re.compile(r"^E\d{4} \d\d:\d\d:\d\d")
_TRACEBACK = "Traceback (most recent call last):"
# A launcher's or pod wrapper's prefix: "[chief-0] ".
_PREFIX = re.compile(r"^\[[\w.-]+\] ")
_EPOCH = re.compile(r"^Epoch (\d+)/(\d+)$")
_EPOCH_SUMMARY = re.compile(r"^\d+/\d+ - ")


def _bare(line: str) -> str:
  return _PREFIX.sub("", line, count=1)


def is_noise(line: str) -> bool:
  """Whether ``line`` (prefixed or not) is E-level or starts a traceback."""
  line = _bare(line)
  return bool(_E_LEVEL.match(line)) or line.startswith(_TRACEBACK)


def training_end(lines: Sequence[str], prefix: str = "") -> Optional[int]:
  """The index in ``lines`` of the last epoch's summary line (of the lines
  that start with ``prefix``, e.g. ``"[chief-0] "``), else of its
  ``Epoch N/N`` line; None if the last epoch never began."""
  end = None
  for index, line in enumerate(lines):
    if not line.startswith(prefix):
      continue
    text = line[len(prefix):]
    epoch = _EPOCH.match(text)
    if epoch and epoch.group(1) == epoch.group(2):
      end = index
    elif end is not None and _EPOCH_SUMMARY.match(text) and (
        _EPOCH.match(lines[end][len(prefix):])):
      end = index
  return end


def after_training(lines: Sequence[str], prefix: str = "") -> list:
  """The noise lines after the end of training (:func:`training_end`, read
  from the lines with ``prefix``) in ``lines``, of every task in them; all
  of them if training never ended there."""
  end = training_end(lines, prefix)
  return [line for line in lines[0 if end is None else end + 1:]
          if is_noise(line)]
