"""The launcher: prefixes, exit statuses, and no process left behind.

The tasks here are small Python programs (the launcher is what is under
test, not TensorFlow): each records its pid in a file, then either exits
with a given status or blocks until it is stopped. Ordering uses those files,
with deadlines; nothing sleeps to synchronise.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, SPECS, child_env, run, wait_for

TASK = textwrap.dedent("""
    import json, os, sys, threading, time
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    name = f"{task['type']}-{task['index']}"
    out = sys.argv[1]
    with open(os.path.join(out, name + ".pid.tmp"), "w") as f:
      f.write(str(os.getpid()))
    os.rename(os.path.join(out, name + ".pid.tmp"),
              os.path.join(out, name + ".pid"))
    print(f"hello from {name}", flush=True)
    exits = json.loads(sys.argv[2])
    if name in exits:
      # Wait (with a deadline) until every task is up, then exit.
      deadline = time.monotonic() + 60
      while len([n for n in os.listdir(out) if n.endswith(".pid")]) < int(
          sys.argv[3]) and time.monotonic() < deadline:
        time.sleep(0.05)
      sys.exit(exits[name])
    threading.Event().wait(120)  # blocks until the launcher stops us
    sys.exit(9)
""")


def _command(tmp_path, exits, num_tasks):
  script = tmp_path / "task.py"
  script.write_text(TASK)
  out = tmp_path / "out"
  out.mkdir()
  return [sys.executable, str(script), str(out), json.dumps(exits),
          str(num_tasks)], out


def _launcher(spec, command, *flags):
  return [sys.executable, "-m", "tfdist.launch", f"--cluster_spec={spec}",
          "--free_ports", *flags, "--", *command]


def _pids(out):
  return {n[:-4]: int((out / n).read_text())
          for n in os.listdir(out) if n.endswith(".pid")}


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  # A zombie is dead too: it has exited and only waits to be reaped.
  with open(f"/proc/{pid}/stat") as f:
    return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.timeout(120)
def test_failing_task_stops_all_and_is_named(tmp_path):
  spec = os.path.join(SPECS, "chief_two_workers_ps.json")
  command, out = _command(tmp_path, {"worker-1": 3}, 4)
  done = run(_launcher(spec, command), timeout=100)
  assert done.returncode == 3, done.stdout
  assert "[launch] job failed: worker-1 exited with status 3" in done.stdout
  for name in ("chief-0", "worker-0", "worker-1", "ps-0"):
    assert f"[{name}] hello from {name}" in done.stdout
  pids = _pids(out)
  assert len(pids) == 4
  assert not [n for n, pid in pids.items() if _alive(pid)]


@pytest.mark.timeout(120)
def test_exit_status_is_the_chiefs_and_the_rest_are_stopped(tmp_path):
  spec = os.path.join(SPECS, "chief_two_workers_ps.json")
  command, out = _command(tmp_path, {"chief-0": 0}, 4)
  done = run(_launcher(spec, command, "--grace=1"), timeout=100)
  assert done.returncode == 0, done.stdout
  assert "[launch] chief-0 is done; stopping" in done.stdout
  assert not [n for n, pid in _pids(out).items() if _alive(pid)]


@pytest.mark.timeout(120)
def test_worker_zero_is_primary_without_chief(tmp_path):
  spec = os.path.join(SPECS, "two_workers.json")
  command, out = _command(tmp_path, {"worker-0": 0, "worker-1": 0}, 2)
  done = run(_launcher(spec, command), timeout=100)
  assert done.returncode == 0, done.stdout
  assert len(_pids(out)) == 2


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_launcher_leaves_no_process(tmp_path, how):
  spec = os.path.join(SPECS, "chief_two_workers_ps.json")
  command, out = _command(tmp_path, {}, 4)
  launcher = subprocess.Popen(_launcher(spec, command), cwd=REPO,
                              env=child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
  try:
    wait_for(lambda: len(_pids(out)) == 4, "every task's pid file")
    launcher.send_signal(how)
    output, _ = launcher.communicate(timeout=60)
    pids = _pids(out)
    # SIGKILL gives the launcher no chance to clean up: the kernel's
    # parent-death signal must take the tasks down.
    wait_for(lambda: not [p for p in pids.values() if _alive(p)],
             "every task to end", timeout=30)
  finally:
    launcher.kill()
    for pid in _pids(out).values():
      if _alive(pid):
        os.kill(pid, signal.SIGKILL)
  if how == signal.SIGINT:
    assert launcher.returncode == 130, output
    assert "[launch] interrupted; stopping every task" in output


def test_bad_spec_and_missing_command(tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text('{"worker": ["127.0.0.1"]}')
  done = run(_launcher(str(bad), ["true"]), timeout=60)
  assert done.returncode == 2
  assert done.stderr.startswith("error: ") and "has no port" in done.stderr
  done = run([sys.executable, "-m", "tfdist.launch",
              f"--cluster_spec={os.path.join(SPECS, 'two_workers.json')}"],
             timeout=60)
  assert done.returncode == 2
  assert "no command to launch" in done.stderr
