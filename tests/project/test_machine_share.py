"""tests/machine_share.py: an exclusive test waits for the one running beside
it, and no test starts beside it until it ended (the suite's processes
are threads here: every open of a lock file is a lock holder of its own)."""

import threading

import machine_share


def _holder(exclusive: bool, entered: threading.Event,
            leave: threading.Event) -> threading.Thread:
  def hold():
    with machine_share.held(exclusive=exclusive):
      entered.set()
      leave.wait(30)
  thread = threading.Thread(target=hold, daemon=True)
  thread.start()
  return thread


def test_an_exclusive_test_runs_alone(monkeypatch, tmp_path):
  monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "machine-share-test")
  monkeypatch.setenv("TMPDIR", str(tmp_path))
  monkeypatch.setattr(machine_share.tempfile, "tempdir", str(tmp_path))
  events = {name: (threading.Event(), threading.Event())
            for name in ("beside", "exclusive", "next")}
  threads = [_holder(False, *events["beside"])]
  assert events["beside"][0].wait(10)
  threads.append(_holder(True, *events["exclusive"]))
  # Not while the test beside runs.
  assert not events["exclusive"][0].wait(1.0)
  threads.append(_holder(False, *events["next"]))
  events["beside"][1].set()  # the test beside ends
  assert events["exclusive"][0].wait(10)
  # No test starts beside the exclusive one.
  assert not events["next"][0].wait(1.0)
  events["exclusive"][1].set()
  assert events["next"][0].wait(10)
  events["next"][1].set()
  for thread in threads:
    thread.join(10)
    assert not thread.is_alive()
