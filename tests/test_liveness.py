"""The liveness layer's latent defects, each driven in a real process.

tests/liveness_task.py runs one piece of a ps chief (a save's phase, the
stall watch, the re-execution without a stalled worker) at the moment a
defect needs; each test failed before its fix.
"""

import os
import sys

from conftest import REPO, run
from tfdist import launch

LIVENESS_TASK = os.path.join(REPO, "tests", "liveness_task.py")


def _run(mode: str, workdir, timeout: float):
  done = run([sys.executable, LIVENESS_TASK, mode, str(workdir)],
             timeout=timeout)
  return launch.exit_status(done.returncode), done.stdout, done.stderr


def test_reexecuted_chief_inherits_no_alarm(tmp_path):
  """A save's phase arms SIGALRM; re-executing from the stall watch's
  thread inside it must not hand the timer to the new program."""
  status, out, err = _run("reexec", tmp_path, timeout=120)
  assert status == 0, err[-3000:]
  assert out.strip() == "timer 0.0", out + err[-3000:]


def test_sigterm_in_a_save_nested_in_training_keeps_the_checkpoint(
    tmp_path):
  """The task's SIGTERM handler ran: every guard (the save's too) learns
  it; the save ends and the next step boundary saves and stops (143)."""
  status, _, err = _run("save", tmp_path, timeout=120)
  assert status == 143, err[-3000:]
  assert "still blocks" not in err, err[-3000:]
  assert "preempted (SIGTERM): saved step 0" in err, err[-3000:]
  assert (tmp_path / "checkpoints" / "checkpoint").exists()


def test_unreadable_coordinator_turns_the_stall_watch_off(tmp_path):
  """Another TensorFlow's coordinator: one line, the watch and its
  heartbeat sentinel end, the healthy task goes on (was: 142 after 60 s)."""
  status, out, err = _run("unreadable", tmp_path, timeout=150)
  assert status == 0, err[-3000:]
  assert out.strip() == "no child left", out
  lines = [l for l in err.splitlines() if "stall watch is off" in l]
  assert len(lines) == 1, err[-3000:]
  assert "Traceback" not in err, err[-3000:]


def test_worker_stopped_after_fit_does_not_restart_the_chief(tmp_path):
  """After fit the chief needs no worker: a stopped one is left alone
  (was: the finished chief re-executed itself, and failed)."""
  status, out, err = _run("after_fit", tmp_path, timeout=120)
  assert status == 0, out + err[-3000:]
  assert "goes on without" not in out, out
