"""The machine shared by the suite's test processes (pytest-xdist, -n 3).

Most tests wait on their jobs, so three run at once on the two cores
(setup.cfg). A test
marked ``exclusive`` runs alone: the quick chaos sweep acts at random
moments of start-up and training, and is meant to find defects of the
code, not of a machine whose cores another test's training takes.

Two file locks per run, read-write with the writer first: every test holds
``main`` shared while it runs (its setup, call and teardown, the module's
shared job included); an exclusive test first takes ``gate``, which no
other test can pass to start, then ``main`` exclusively, once the tests
running beside it ended. Without xdist (``-n 0``) nothing is locked.
"""

import contextlib
import fcntl
import os
import tempfile
import time

# The longest a test waits for the machine: an exclusive test for the one
# running beside it, a test for an exclusive one (their timeouts are 900 s).
WAIT_S = 1200.0
_POLL_S = 0.2  # between two tries of a lock


def _lock(f, kind: int, what: str) -> None:
  deadline = time.monotonic() + WAIT_S
  while True:
    try:
      fcntl.flock(f, kind | fcntl.LOCK_NB)
      return
    except BlockingIOError:
      if time.monotonic() > deadline:
        raise TimeoutError(f"waited {WAIT_S:.0f} s for {what}") from None
      time.sleep(_POLL_S)  # a lock's polling interval


@contextlib.contextmanager
def held(*, exclusive: bool):
  """Holds the machine for one test: alone if ``exclusive``."""
  run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
  if run_id is None:  # one test process: nothing runs beside
    yield
    return
  base = os.path.join(tempfile.gettempdir(), f"tfdist-tests-{run_id}")
  with open(base + ".gate", "a") as gate, open(base + ".main", "a") as main:
    _lock(gate, fcntl.LOCK_EX, "the gate (an exclusive test runs)")
    try:
      if exclusive:
        _lock(main, fcntl.LOCK_EX, "the test running beside to end")
      else:
        _lock(main, fcntl.LOCK_SH, "the machine")
    finally:
      if not exclusive:
        fcntl.flock(gate, fcntl.LOCK_UN)
    try:
      yield
    finally:
      fcntl.flock(main, fcntl.LOCK_UN)
      fcntl.flock(gate, fcntl.LOCK_UN)
