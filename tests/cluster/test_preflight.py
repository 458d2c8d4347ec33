"""Preflight and the launcher's restart rule.

Preflight: every task waits for its peers (named with the deadline when
one never answers), refuses a peer started from another cluster spec, and
waits for its own port while another process holds it (in-process, with a
clock that counts its looks instead of time). The launcher restarts what
the rendered podFailurePolicy retries and stops on a program's verdict
(stand-in tasks, without TensorFlow).
"""

import os
import socket
import subprocess
import sys
import threading
import time

import portpicker
import pytest

from conftest import (REPO, SPECS, child_env, error_lines, kill_groups, launch,
                      run, trainer, wait_for)
from tfdist import errors as errors_lib
from tfdist.cluster import preflight
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError, retried


# --- preflight ----------------------------------------------------------------

@pytest.mark.slow
def test_unreachable_peer_named_with_deadline(mnist_dir):
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  started = time.monotonic()
  done = run(trainer("mnist", "--strategy=multiworker",
                     f"--mnist_dir={mnist_dir}", "--peer_timeout=6"),
             env=child_env(TF_CONFIG=cluster_lib.make_tf_config(
                 cluster, "worker", 0)), timeout=60)
  # Retried (a pod may wait for a node, or be preempted while starting).
  assert done.returncode == 200, done.stderr[-3000:]
  assert time.monotonic() - started < 40
  assert f"waiting for worker-1 at 127.0.0.1:{ports[1]}, 5/6 s" in done.stderr
  (line,) = error_lines(done.stderr)
  assert f"worker-1 at 127.0.0.1:{ports[1]} did not answer within 6 s" in line


@pytest.mark.slow
def test_tasks_from_different_specs_refused(mnist_dir):
  ports = [portpicker.pick_unused_port() for _ in range(3)]
  addresses = [f"127.0.0.1:{p}" for p in ports]
  # worker-1 was started from a spec with a third worker.
  specs = [{"worker": addresses[:2]}, {"worker": addresses}]
  processes = [subprocess.Popen(
      trainer("mnist", "--strategy=multiworker", f"--mnist_dir={mnist_dir}",
              "--peer_timeout=8"), cwd=REPO,
      env=child_env(TF_CONFIG=cluster_lib.make_tf_config(spec, "worker", i)),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      start_new_session=True) for i, spec in enumerate(specs)]
  try:
    outputs = [p.communicate(timeout=90) for p in processes]
  finally:
    kill_groups(processes)
  # The one that met the other's spec: 2 (bad input); the other may time
  # out first on the third worker it waits for: 200 (retried).
  statuses = sorted(p.returncode for p in processes)
  assert statuses in ([2, 2], [2, 200]), outputs
  lines = [error_lines(err) for _, err in outputs]
  assert any("was started from a different cluster spec" in l[0]
             for l in lines), lines


def test_preflight_handshake_compares_spec_digests():
  """In-process: a peer answering with another digest is named."""
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  cluster = {"worker": (f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}")}
  other = dict(cluster, chief=(f"127.0.0.1:{portpicker.pick_unused_port()}",))
  peer = preflight._Listener(  # pylint: disable=protected-access
      cluster_lib.make_task(other, "worker", 1),
      f"tfdist-preflight {cluster_lib.spec_digest(other)} worker-1\n".encode())
  try:
    with pytest.raises(ConfigError, match="different cluster spec"):
      preflight.check_peers(cluster_lib.make_task(cluster, "worker", 0),
                            timeout=5)
  finally:
    peer.close()
  # Once closed, the port is free again for TensorFlow.
  with socket.socket() as again:
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    again.bind(("127.0.0.1", ports[1]))


class _Calls:
  """A clock for preflight that also says how often it was read: once a
  wait has looked more than ``after`` times, ``looked`` is set."""

  def __init__(self, after: int, step: float = 0.0):
    self.calls, self.after, self.step = 0, after, step
    self.looked = threading.Event()

  def __call__(self) -> float:
    self.calls += 1
    if self.calls > self.after:
      self.looked.set()
    return time.monotonic() + self.calls * self.step


def _preflight_in_a_thread(task, *, timeout: float, clock) -> tuple:
  """check_peers of ``task`` in a thread; returns (thread, its outcome)."""
  outcome = []

  def check():
    try:
      preflight.check_peers(task, timeout=timeout, clock=clock)
      outcome.append(None)
    except Exception as e:  # pylint: disable=broad-except
      outcome.append(e)

  thread = threading.Thread(target=check, daemon=True)
  thread.start()
  return thread, outcome


def test_preflight_waits_for_a_missing_peer_until_it_answers():
  """worker-1 not up: preflight keeps waiting (it looked several times),
  and returns once worker-1 answers its handshake, which saw ours."""
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  clock = _Calls(after=8)  # a look at the peer is two reads, and more
  thread, outcome = _preflight_in_a_thread(
      cluster_lib.make_task(cluster, "worker", 0), timeout=60, clock=clock)
  wait_for(lambda: clock.looked.is_set() or not thread.is_alive(),
            "preflight to look at worker-1", timeout=30)
  assert thread.is_alive() and not outcome, outcome  # still waiting
  peer = preflight._Listener(  # pylint: disable=protected-access
      cluster_lib.make_task(cluster, "worker", 1),
      f"tfdist-preflight {cluster_lib.spec_digest(cluster)} "
      "worker-1\n".encode())
  try:
    thread.join(10)
    assert outcome == [None], outcome
    assert peer.heard_from == {"worker-0"}
  finally:
    peer.close()


def test_preflight_waits_for_its_own_port_then_a_retried_status():
  """Another process holds worker-0's port: preflight waits (it looked
  more than once), takes the port once it is free and goes on; held past
  the deadline, it is a lost peer's status (200, retried), in one line."""
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  task = cluster_lib.make_task(cluster, "worker", 0)
  stand_in = preflight._Listener(  # pylint: disable=protected-access
      cluster_lib.make_task(cluster, "worker", 1),
      f"tfdist-preflight {cluster_lib.spec_digest(cluster)} "
      "worker-1\n".encode())
  try:
    holder = socket.create_server(("127.0.0.1", ports[0]))
    clock = _Calls(after=3)
    thread, outcome = _preflight_in_a_thread(task, timeout=60, clock=clock)
    wait_for(lambda: clock.looked.is_set() or not thread.is_alive(),
              "preflight to try its port", timeout=30)
    assert thread.is_alive() and not outcome, outcome
    holder.close()
    thread.join(10)
    assert outcome == [None], outcome
    with socket.create_server(("127.0.0.1", ports[0])) as holder:
      # Each read of this clock is 10 s later: past the deadline at once.
      with pytest.raises(errors_lib.PeerLost) as raised:
        preflight.check_peers(task, timeout=30, clock=_Calls(0, step=10))
  finally:
    stand_in.close()
  assert (f"preflight: worker-0's port {ports[0]} (127.0.0.1:{ports[0]}) was "
          "held by another process for 30 s; the job is retried"
          in str(raised.value)), raised.value
  assert "\n" not in str(raised.value)


# --- launcher restarts, without TensorFlow ------------------------------------

# A stand-in task: worker-1 fails on its first run (with the status given,
# 200 by default: a lost peer); the others end once worker-1's second run
# has begun (a file), within 20 s.
_FAIL_ONCE = r"""
import json, os, sys, time
task = json.loads(os.environ["TF_CONFIG"])["task"]
name = f"{task['type']}-{task['index']}"
first, second = (os.path.join(sys.argv[1], f) for f in ("first", "second"))
if name == "worker-1":
  if not os.path.exists(first):
    open(first, "w").close()
    sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 200)
  open(second, "w").close()
deadline = time.monotonic() + 20
while not os.path.exists(second) and time.monotonic() < deadline:
  time.sleep(0.05)  # polling a file, not synchronising by time
sys.exit(0 if os.path.exists(second) else 5)
"""


@pytest.mark.parametrize("spec,message,starts", [
    ("two_workers.json", "restarting every task (restart 1/1)", 2),
    ("chief_two_workers_ps.json", "worker-1 failed with exit status 200; "
     "restarting it (restart 1/1)", 1),
])
def test_launcher_restart_policy(spec, message, starts, tmp_path):
  done = run(launch(os.path.join(SPECS, spec),
                    [sys.executable, "-c", _FAIL_ONCE, str(tmp_path)],
                    "--max_restarts=1", "--grace=5"), timeout=60)
  assert done.returncode == 0, done.stdout
  assert message in done.stdout
  assert done.stdout.count("starting worker-0 at") == starts


def test_launcher_fails_at_once_on_a_programs_verdict(tmp_path):
  """Status 3 (1-127: the program's own verdict) is never restarted, as
  the rendered podFailurePolicy fails the Job on it (was: restarted)."""
  done = run(launch(os.path.join(SPECS, "chief_two_workers_ps.json"),
                    [sys.executable, "-c", _FAIL_ONCE, str(tmp_path), "3"],
                    "--max_restarts=1"), timeout=60)
  assert done.returncode == 3, done.stdout
  assert ("worker-1 failed with exit status 3 (the program's verdict: not "
          "restarted, as Kubernetes would not); stopping the other tasks"
          in done.stdout), done.stdout
  assert "restart 1/1" not in done.stdout
  assert done.stdout.count("starting worker-1 at") == 1


def test_launcher_restarts_what_the_rendered_pod_failure_policy_retries():
  """A local run previews the cluster: for every status, the launcher
  restarts a task exactly when the rendered Job's podFailurePolicy does
  not fail the Job (tfdist.k8s.controller applies it)."""
  from tfdist.k8s import controller, local_cluster  # pylint: disable=g-import-not-at-top
  (job,) = [o for o in local_cluster.load_manifests(
      os.path.join(REPO, "k8s", "ps")) if o["kind"] == "Job"
            and o["metadata"]["name"].endswith("-worker")]
  container = job["spec"]["template"]["spec"]["containers"][0]["name"]
  for status in range(1, 256):
    fails_job = controller.pod_failure_action(
        job["spec"], container, status) == controller.FAIL_JOB
    assert retried(status) == (not fails_job), status


def test_launcher_gives_up_after_max_restarts(tmp_path):
  done = run(launch(os.path.join(SPECS, "two_workers.json"),
                    [sys.executable, "-c", "import sys; sys.exit(200)"],
                    "--max_restarts=2"), timeout=60)
  assert done.returncode == 200
  assert "restart 2/2" in done.stdout
  assert "job failed: worker-" in done.stdout
