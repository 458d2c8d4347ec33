"""The launcher: prefixes, exit statuses, and no process left behind.

The tasks here are small Python programs (the launcher is what is under
test, not TensorFlow): each records its pid in a file, then either exits
with a given status or blocks until it is stopped. Ordering uses those files,
with deadlines; nothing sleeps to synchronise.
"""

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import REPO, SPECS, child_env, json_lines, run, wait_for
from tfdist.cluster import launch

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
    def stopped(signum, frame):  # the launcher's stop: SIGTERM, recorded
      open(os.path.join(out, name + ".term"), "w").close()
      os._exit(143)
    import signal
    signal.signal(signal.SIGTERM, stopped)
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


@pytest.mark.timeout(60)
def test_failing_task_stops_all_and_is_named(tmp_path):
  """The others are stopped by the launcher (SIGTERM, which each records),
  at once: not killed with it, not left to their own end."""
  spec = os.path.join(SPECS, "chief_two_workers_ps.json")
  command, out = _command(tmp_path, {"worker-1": 3}, 4)
  done = run(_launcher(spec, command), timeout=30)
  assert done.returncode == 3, done.stdout
  assert ("[launch] worker-1 failed with exit status 3; stopping the other "
          "tasks") in done.stdout
  assert "[launch] job failed: worker-1 exited with status 3" in done.stdout
  for name in ("chief-0", "worker-0", "worker-1", "ps-0"):
    assert f"[{name}] hello from {name}" in done.stdout
  pids = _pids(out)
  assert len(pids) == 4
  assert not [n for n, pid in pids.items() if _alive(pid)]
  assert sorted(n[:-5] for n in os.listdir(out) if n.endswith(".term")) == [
      "chief-0", "ps-0", "worker-0"]


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
  """Only worker 0 exits (0); worker 1 would wait to be stopped: the job
  ends because worker 0 is its primary, with worker 0's status, although
  worker 1 is then ended by SIGTERM (143)."""
  spec = os.path.join(SPECS, "two_workers.json")
  command, out = _command(tmp_path, {"worker-0": 0}, 2)
  done = run(_launcher(spec, command, "--grace=1"), timeout=30)
  assert done.returncode == 0, done.stdout
  assert "[launch] worker-0 is done; stopping worker-1" in done.stdout
  pids = _pids(out)
  assert len(pids) == 2 and not [n for n, p in pids.items() if _alive(p)]


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
    assert "[launch] interrupted (SIGINT); stopping every task" in output


# A result line written while the task's stderr holds a partial line (as a
# traceback another thread is writing; ordered by Events): merged into one
# pipe, the result would land inside that line. Meanwhile another thread
# writes whole lines to stdout as fast as it can: a result printed in two
# writes (text, then newline) could be cut by one of those.
TORN_TASK = textwrap.dedent("""
    import os, sys, threading
    from tfdist import console
    mid_line, result_written = threading.Event(), threading.Event()
    chatting, done = threading.Event(), threading.Event()
    def traceback_lines(count):
      for _ in range(count):
        os.write(2, b"    ^^^^^^^^")  # no newline yet
        mid_line.set()
        result_written.wait(60)
        result_written.clear()
        os.write(2, b"^^^^\\n")
    def chatter():
      while not done.is_set():
        os.write(1, b"chatter\\n")
        chatting.set()
    count = int(sys.argv[1])
    writers = [threading.Thread(target=traceback_lines, args=(count,)),
               threading.Thread(target=chatter)]
    for writer in writers:
      writer.start()
    for i in range(count):
      if not (mid_line.wait(60) and chatting.wait(60)):
        sys.exit(7)
      mid_line.clear()
      chatting.clear()
      console.result({"line": i, "text": "x" * 100})
      result_written.set()
    done.set()
    for writer in writers:
      writer.join(60)
    os.write(2, b"last words, unterminated")
""")


@pytest.mark.timeout(120)
def test_result_lines_are_whole_among_other_output(tmp_path):
  spec = tmp_path / "spec.json"
  spec.write_text(json.dumps({"chief": ["127.0.0.1:0"],
                              "worker": ["127.0.0.1:0"]}))
  script = tmp_path / "torn.py"
  script.write_text(TORN_TASK)
  count = 200
  done = run(_launcher(str(spec), [sys.executable, str(script), str(count)]),
             timeout=100)
  assert done.returncode == 0, done.stdout[-3000:]
  lines = done.stdout.splitlines()
  for task in ("chief-0", "worker-0"):
    results = json_lines(done.stdout, f"[{task}] ")
    assert [r["line"] for r in results] == list(range(count)), (
        "\n".join(l for l in lines if "line" in l)[-3000:])
    assert lines.count(f"[{task}]     ^^^^^^^^^^^^") == count
    assert lines.count(f"[{task}] last words, unterminated") == 1


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



def test_workers_shorthand_needs_no_spec_file():
  """``--workers=2 --ps=1``: a chief, two workers and a ps on this machine,
  each on a free port of its own, each told its own task: what the README's
  launcher commands run after ``pip install``, outside a clone."""
  show = "import os; print(os.environ['TF_CONFIG'], flush=True)"
  done = run([sys.executable, "-m", "tfdist.launch", "--workers=2", "--ps=1",
              "--", sys.executable, "-c", show], timeout=60)
  assert done.returncode == 0, done.stdout + done.stderr
  configs = {name: json_lines(done.stdout, f"[{name}] ")
             for name in ("chief-0", "worker-0", "worker-1", "ps-0")}
  clusters = {json.dumps(c["cluster"]) for [c] in configs.values()}
  [cluster] = [json.loads(c) for c in clusters]  # one cluster for all
  assert {job: len(a) for job, a in cluster.items()} == {
      "chief": 1, "worker": 2, "ps": 1}
  addresses = [a for job in cluster.values() for a in job]
  assert len(set(addresses)) == 4 and all(
      a.startswith("127.0.0.1:") and not a.endswith(":0") for a in addresses)
  for name, [config] in configs.items():
    assert f"{config['task']['type']}-{config['task']['index']}" == name
  for flags, says in ((["--workers=0"], "--workers=0: must be at least 1"),
                      (["--workers=1", "--ps=-1"], "--ps=-1: must be at least"),
                      ([f"--cluster_spec={SPECS}/two_workers.json", "--ps=1"],
                       "--ps=1: only with --workers"),
                      (["--workers=1", f"--cluster_spec={SPECS}/x.json"],
                       "not allowed with")):
    done = run([sys.executable, "-m", "tfdist.launch", *flags, "--", "true"],
               timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: "), flags
    assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr

# --- Signals at random moments --------------------------------------------
#
# The launcher's signal handler only records the signal; its main loop stops
# the tasks. Each trial sends SIGINT or SIGTERM at a random moment of one
# phase of a job (the random delay is the input under test, not a
# synchronisation: the phase's start is found from the launcher's output) and
# checks the launcher exits 128 + the signal within its stop timeout and that
# no process is left in any task's process group. A CPU-burning process runs
# beside the trials of small tasks, so that races which need a busy machine
# can show (real trainers keep the machine busy themselves).

STOP_TIMEOUT = 10  # tfdist.cluster.launch.Launcher's default stop_timeout
# A task of the stress trials: "block" waits to be stopped; "exit:N" exits N
# once every task is up; "linger" also waits, and answers SIGTERM only after
# a second, so that the launcher's stop takes a while.
STRESS_TASK = textwrap.dedent("""
    import json, os, signal, sys, threading, time
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    name = f"{task['type']}-{task['index']}"
    out, roles = sys.argv[1], json.loads(sys.argv[2])
    role = roles.get(name, roles.get("*", "block"))
    if role == "linger":
      signal.signal(signal.SIGTERM, lambda *_: threading.Timer(
          1.0, os._exit, (143,)).start())
    open(os.path.join(out, name), "w").close()
    print(f"up {name}", flush=True)
    if role.startswith("exit:"):
      deadline = time.monotonic() + 60
      while len(os.listdir(out)) < int(sys.argv[3]) and (
          time.monotonic() < deadline):
        time.sleep(0.02)
      print(f"done {name}", flush=True)
      sys.exit(int(role[5:]))
    threading.Event().wait(120)
""")


@pytest.fixture
def cpu_load():
  """A core kept busy for one test's trials (not between tests: it costs a
  core's CPU-seconds while it runs)."""
  burner = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            start_new_session=True)
  yield
  os.killpg(burner.pid, signal.SIGKILL)
  burner.wait()


class _Launched:
  """A launcher process whose output lines are collected by a thread."""

  def __init__(self, command):
    self.lines = []
    self._changed = threading.Condition()
    self.process = subprocess.Popen(
        command, cwd=REPO, env=child_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self):
    for line in self.process.stdout:
      with self._changed:
        self.lines.append(line.rstrip("\n"))
        self._changed.notify_all()

  def wait_for_line(self, text, timeout=120):
    with self._changed:
      if not self._changed.wait_for(
          lambda: any(text in l for l in self.lines), timeout=timeout):
        pytest.fail(f"no line with {text!r} in {timeout} s:\n"
                    + "\n".join(self.lines[-30:]))

  def task_groups(self):
    return {int(m.group(1)) for l in list(self.lines)
            for m in [re.search(r"^\[launch\] starting .* \(pid (\d+)\)$", l)]
            if m}

  def kill(self):
    try:
      os.killpg(self.process.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    for group in self.task_groups():
      try:
        os.killpg(group, signal.SIGKILL)
      except ProcessLookupError:
        pass


def _members(groups):
  """Live processes (zombies excluded) in any of the process ``groups``."""
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/stat") as f:
        state, _, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
    except OSError:
      continue
    if int(pgrp) in groups and state != "Z":
      found.append(int(pid))
  return found


def _trial(command, signum, after, delay):
  """Sends ``signum`` ``delay`` s after the line ``after``; checks the end."""
  launched = _Launched(command)
  try:
    launched.wait_for_line(after)
    time.sleep(delay)  # the random moment under test
    launched.process.send_signal(signum)
    try:
      launched.process.wait(timeout=STOP_TIMEOUT + 5)
    except subprocess.TimeoutExpired:
      pytest.fail(f"{signum.name} {delay:.3f} s after {after!r}: the "
                  f"launcher did not exit within its stop timeout:\n"
                  + "\n".join(launched.lines[-30:]))
    groups = launched.task_groups()
    status = 128 - launched.process.returncode if (
        launched.process.returncode < 0) else launched.process.returncode
    assert status == 128 + signum, (
        f"{signum.name} {delay:.3f} s after {after!r}: status {status}\n"
        + "\n".join(launched.lines[-30:]))
    wait_for(lambda: not _members(groups), "no task process left",
             timeout=10)
  finally:
    launched.kill()
    launched.process.wait()


STRESS_PHASES = {
    # name: (roles, launcher flags, the line the phase starts at, max delay)
    "start-up": ({}, (), "[launch] starting", 0.05),
    "running": ({}, (), "up chief-0", 0.3),
    "grace-and-stop": ({"chief-0": "exit:0", "*": "linger"}, ("--grace=0.5",),
                       "done chief-0", 1.2),
    "stop-after-failure": ({"worker-1": "exit:3", "*": "linger"}, (),
                           "worker-1 failed with exit status 3", 0.8),
}


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("phase", sorted(STRESS_PHASES))
def test_signal_at_a_random_moment_stops_everything(tmp_path, cpu_load,
                                                    phase):
  roles, flags, after, max_delay = STRESS_PHASES[phase]
  script = tmp_path / "task.py"
  script.write_text(STRESS_TASK)
  spec = os.path.join(SPECS, "chief_two_workers_ps.json")
  rng = random.Random(phase)  # reproducible moments, different per phase
  for trial in range(8):
    out = tmp_path / f"out{trial}"
    out.mkdir()
    command = [sys.executable, str(script), str(out), json.dumps(roles), "4"]
    _trial(_launcher(spec, command, *flags),
           (signal.SIGINT, signal.SIGTERM)[trial % 2], after,
           rng.uniform(0, max_delay))


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("after,max_delay", [
    ("[launch] starting worker-1", 4.0),  # TensorFlow starting, connecting
    ("[worker-0] Epoch 2/", 1.0),  # training
])
def test_signal_stops_real_trainers(after, max_delay):
  spec = os.path.join(SPECS, "two_workers.json")
  command = [sys.executable, "-m", "trainers.mnist", "--strategy=multiworker",
             "--data=synthetic", "--epochs=1000", "--steps_per_epoch=20"]
  rng = random.Random(after)
  for signum in (signal.SIGINT, signal.SIGTERM):
    _trial(_launcher(spec, command), signum, after, rng.uniform(0, max_delay))


@pytest.mark.slow  # trains two workers
@pytest.mark.timeout(180)
def test_successful_two_worker_run_prints_no_error(tmp_path):
  """The README's two-worker command, with no flags: the bundled data, no
  error-level line from any task (the coordination-service leader waits for
  the other task before it exits), TensorFlow's start-up block once."""
  spec = os.path.join(SPECS, "two_workers.json")
  done = run(_launcher(spec, [sys.executable, "-m", "trainers.mnist",
                              "--strategy=multiworker"]),
             env=child_env(TFDS_DATA_DIR=tmp_path), timeout=170)
  assert done.returncode == 0, done.stdout[-3000:]
  output = done.stdout + done.stderr
  assert "Traceback" not in output, output[-3000:]
  errors = [l for l in output.splitlines()
            if re.match(r"\[[a-z]+-\d+\] E\d{4} ", l)]
  assert not errors, "\n".join(errors)
  for task in ("worker-0", "worker-1"):
    assert output.count(f"[{task}] WARNING: All log messages before "
                        "absl::InitializeLog()") <= 1, output[-3000:]
  results = [r for prefix in ("[worker-0] ", "[worker-1] ")
             for r in json_lines(done.stdout, prefix)]
  assert len(results) == 2, done.stdout[-3000:]
  assert results[0]["weights_digest"] == results[1]["weights_digest"]
  assert results[0]["test_accuracy"] >= 0.91


def test_spec_of_other_machines_refused_at_once(tmp_path):
  """Read from the spec alone: no task starts, no address but loopback is
  ever contacted (names are not resolved, addresses only bound)."""
  spec = tmp_path / "two_machines.json"
  spec.write_text(json.dumps({
      "chief": ["127.0.0.1:0"],
      # TEST-NET-1 (RFC 5737) and a reserved name: never this machine.
      "worker": ["192.0.2.10:2222", "trainer-b.example:2222"]}))
  done = run(_launcher(str(spec), [sys.executable, "-c", "pass"]),
             timeout=60)
  assert done.returncode == 2, done.stderr
  (line,) = done.stderr.splitlines()
  assert line.startswith("error: the spec puts worker-0 at 192.0.2.10:2222, "
                         "worker-1 at trainer-b.example:2222 on other "
                         "machines"), line
  assert "[launch] starting" not in done.stdout


def test_this_machine_is_loopback_its_name_or_its_interfaces():
  assert launch.is_this_machine("127.0.0.1")
  assert launch.is_this_machine("[::1]")
  assert launch.is_this_machine("localhost")
  assert launch.is_this_machine(socket.gethostname())
  assert not launch.is_this_machine("192.0.2.10")
  assert not launch.is_this_machine("trainer-b.example")
