"""A question to the other tasks, asked off the training loop.

Owns :class:`PeerWatch`, which asks ``ask()`` (which task asked to stop) from a
thread of its own; tfdist.training.checkpoint's callback reads its answer at the
step boundaries. Imports nothing from tfdist.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

# How often a ps chief looks for a preemption request from another task: each
# look is a remote call per task, too slow for every step of a small model.
PEER_CHECK_SECONDS = 1.0


class PeerWatch:
  """Asks ``ask()`` (which task asked to stop) at once and then every
  PEER_CHECK_SECONDS from a thread of its own, until it finds one or
  :meth:`stop`.

  The asking costs a probe and a remote op per task, and a stopped peer
  answers nothing until the probe's timeout: asked from the batch hooks,
  it slowed the chief's steps to one per timeout, which read as progress
  to the stall watch (tfdist.liveness.stall_watch), so a stalled worker was gone
  on without only after minutes. Here the training loop only reads
  :meth:`found`; an error of ``ask`` is raised there too.
  """
  _STOP_S = 3.0  # waited at most for a question in flight

  def __init__(self, ask: Callable[[], Optional[str]]):
    self._ask = ask
    self._stopped = threading.Event()
    self._found = None  # a task's name, or the error of ask
    self._thread = threading.Thread(target=self._run, daemon=True,
                                    name="peer preemption")
    self._thread.start()

  def _run(self) -> None:
    while True:  # at once (fit begins), then every PEER_CHECK_SECONDS
      try:
        found = self._ask()
      except Exception as e:  # pylint: disable=broad-except
        found = e  # the training loop raises it
      if found is not None and not self._stopped.is_set():
        self._found = found
        return
      if self._stopped.wait(PEER_CHECK_SECONDS):
        return

  def found(self) -> Optional[str]:
    if isinstance(self._found, Exception):
      raise self._found
    return self._found

  def stop(self) -> None:
    """No question after this one returns (a peer may exit as the job
    ends); waits a little for one in flight (never for a stopped peer)."""
    self._stopped.set()
    if self._thread is not threading.current_thread():
      self._thread.join(self._STOP_S)
