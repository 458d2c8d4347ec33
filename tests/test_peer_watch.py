"""The ps chief asks its peers for preemption requests off the training loop.

A stopped worker answers a probe only at its timeout. Asked from the batch
hooks, every question cost the chief's loop that timeout: it dispatched one step
per probe, which the stall watch read as progress, so a stalled worker was gone
on without after minutes instead of its deadline (2 of 5 runs of
tests/test_sharding.py's stalled job, and one CI run). The question now runs in
tfdist.liveness.peer_watch's thread; the loop (tfdist.training.checkpoint's
batch hook) only reads the answer: the last test drives that hook in a real
process.
"""

import os
import sys
import threading
import time

import pytest

from conftest import REPO, run
from tfdist.liveness import peer_watch


def test_found_answers_at_once_while_a_question_hangs():
  asked, release = threading.Event(), threading.Event()

  def ask():  # a stopped peer: no answer until released
    asked.set()
    release.wait(30)
    return None

  watch = peer_watch.PeerWatch(ask)
  try:
    assert asked.wait(10), "the watch never asked"
    started = time.monotonic()
    assert watch.found() is None
    assert time.monotonic() - started < 0.1
  finally:
    release.set()
    watch.stop()


def test_a_request_is_found_and_an_error_reaches_the_loop():
  # The watch's thread ends once it found something: then the loop reads it.
  watch = peer_watch.PeerWatch(lambda: "worker-1")
  watch._thread.join(10)  # pylint: disable=protected-access
  assert watch.found() == "worker-1"
  watch.stop()

  def fail():
    raise RuntimeError("remote op failed")

  failing = peer_watch.PeerWatch(fail)
  failing._thread.join(10)  # pylint: disable=protected-access
  with pytest.raises(RuntimeError, match="remote op failed"):
    failing.found()
  failing.stop()


def test_stop_discards_an_answer_in_flight_and_returns():
  asked, release = threading.Event(), threading.Event()

  def ask():
    asked.set()
    release.wait(30)
    return "ps-0"  # arrives after the job ended: not acted on

  watch = peer_watch.PeerWatch(ask)
  assert asked.wait(10)
  started = time.monotonic()
  watch.stop()  # the question hangs: stop waits a bounded time
  assert time.monotonic() - started < peer_watch.PeerWatch._STOP_S + 1  # pylint: disable=protected-access
  release.set()
  watch._thread.join(10)  # pylint: disable=protected-access
  assert not watch._thread.is_alive()  # pylint: disable=protected-access
  assert watch.found() is None


@pytest.mark.slow
def test_the_training_loop_never_waits_for_a_question_in_flight(tmp_path):
  """tfdist.training.checkpoint's batch hook, with a question that hangs (a
  stopped peer): 50 step boundaries take no longer than without one; once the
  question is answered (worker-1 asked to stop), the next boundary saves and
  stops the job (was: the hook asked, and waited, itself)."""
  done = run([sys.executable, os.path.join(REPO, "tests", "liveness_task.py"),
              "peer_watch", str(tmp_path)], timeout=120)
  assert done.returncode == 143, done.stdout + done.stderr[-3000:]
  hooks = [float(word) for word in done.stdout.split()]
  assert len(hooks) == 50, done.stdout
  assert max(hooks) < 0.5, hooks  # the question hangs for 30 s
  assert "preempted (SIGTERM to worker-1)" in done.stderr, done.stderr[-3000:]
