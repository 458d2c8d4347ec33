"""The ps chief asks its peers for preemption requests off the training loop.

A stopped worker answers a probe only at its timeout. Asked from the batch
hooks, every question cost the chief's loop that timeout: it dispatched one
step per probe, which the stall watch read as progress, so a stalled worker
was gone on without after minutes instead of its deadline (2 of 5 runs of
tests/test_sharding.py's stalled job, and one CI run). The question now runs
in tfdist.checkpoint's peer watch thread; the loop only reads the answer.
"""

import threading
import time

import pytest

from tfdist import checkpoint


def test_the_loop_never_waits_for_a_question_in_flight():
  asked, release = threading.Event(), threading.Event()

  def ask():  # a stopped peer: no answer until released
    asked.set()
    release.wait(30)
    return None

  watch = checkpoint._PeerWatch(ask)  # pylint: disable=protected-access
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
  watch = checkpoint._PeerWatch(lambda: "worker-1")  # pylint: disable=protected-access
  watch._thread.join(10)  # pylint: disable=protected-access
  assert watch.found() == "worker-1"
  watch.stop()

  def fail():
    raise RuntimeError("remote op failed")

  failing = checkpoint._PeerWatch(fail)  # pylint: disable=protected-access
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

  watch = checkpoint._PeerWatch(ask)  # pylint: disable=protected-access
  assert asked.wait(10)
  started = time.monotonic()
  watch.stop()  # the question hangs: stop waits a bounded time
  assert time.monotonic() - started < checkpoint._PeerWatch._STOP_S + 1  # pylint: disable=protected-access
  release.set()
  watch._thread.join(10)  # pylint: disable=protected-access
  assert not watch._thread.is_alive()  # pylint: disable=protected-access
  assert watch.found() is None
