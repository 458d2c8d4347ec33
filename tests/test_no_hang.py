"""No silent hang: deadlines and signals while TensorFlow blocks, and a
preflight that knows a TensorFlow server when it sees one.

Real processes blocked in TensorFlow's C++ (tests/stuck_task.py), a real
tf.distribute.Server, a real HTTP server and a socket that never speaks.
"""

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading

import portpicker
import pytest

from conftest import REPO, child_env, wait_for
from tfdist import cluster as cluster_lib
from tfdist import errors
from tfdist import launch
from tfdist import preflight
from tfdist.errors import ConfigError

STUCK_TASK = os.path.join(REPO, "tests", "stuck_task.py")


def _start(mode: str, ready, deadline: float, arg: str):
  return subprocess.Popen(
      [sys.executable, STUCK_TASK, mode, str(ready), str(deadline), arg],
      cwd=REPO, env=child_env(), stdin=subprocess.DEVNULL,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      start_new_session=True)


def _finish(process, timeout: float):
  """(status as a shell reports it, stderr); kills the group at the end."""
  try:
    _, err = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    _, err = process.communicate()
    pytest.fail(f"still running after {timeout} s:\n{err[-3000:]}")
  finally:
    try:
      os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
  return launch.exit_status(process.returncode), err


def _error_lines(stderr: str) -> list:
  return [l for l in stderr.splitlines() if l.startswith("error:")]


# --- a main thread blocked in an op (C++, GIL released) -----------------------

def test_expired_deadline_in_a_blocked_op_names_phase_and_peer(tmp_path):
  peer = f"127.0.0.1:{portpicker.pick_unused_port()}"
  process = _start("op", tmp_path / "ready", 3, peer)
  status, err = _finish(process, timeout=60)
  assert status == errors.EXIT_PEER_LOST, err[-3000:]
  (line,) = _error_lines(err)
  assert "first step did not finish within 3 s" in line, line
  assert f"not heard from worker-1 at {peer}" in line, line


@pytest.mark.parametrize("signum,status", [
    (signal.SIGINT, errors.EXIT_INTERRUPTED),
    (signal.SIGTERM, errors.EXIT_PREEMPTED)])
def test_signal_ends_a_blocked_op(tmp_path, signum, status):
  """Python's handlers cannot run; the watchdog ends the task."""
  ready = tmp_path / "ready"
  process = _start("op", ready, 120, "127.0.0.1:1")
  wait_for(ready.exists, "the task to block in its op", timeout=60)
  process.send_signal(signum)
  got, err = _finish(process, timeout=5)
  assert got == status, err[-3000:]
  assert (f"{signal.Signals(signum).name} during first step, which "
          "TensorFlow still blocks") in err, err[-3000:]


# --- strategy creation whose peer passed preflight and vanished --------------
# (C++ that holds the GIL: no Python thread runs)

def _start_past_preflight(tmp_path, deadline: float):
  """worker-0, once a stand-in worker-1 answered its preflight and vanished.

  The stand-in dies as a peer killed before its TensorFlow server started.
  Returns worker-0's process and the cluster.
  """
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  stand_in = preflight._Listener(  # pylint: disable=protected-access
      cluster_lib.make_task(cluster, "worker", 1),
      f"tfdist-preflight {cluster_lib.spec_digest(cluster)} worker-1\n"
      .encode())
  ready = tmp_path / "ready"
  try:
    process = _start("strategy", ready, deadline,
                     cluster_lib.make_tf_config(cluster, "worker", 0))
    wait_for(ready.exists, "preflight to pass", timeout=60)
  finally:
    stand_in.close()
  return process, cluster


def test_sigint_ends_strategy_creation_blocked_on_a_vanished_peer(tmp_path):
  process, _ = _start_past_preflight(tmp_path, 120)
  process.send_signal(signal.SIGINT)
  status, err = _finish(process, timeout=5)
  assert status == errors.EXIT_INTERRUPTED, err[-3000:]


def test_strategy_creation_names_the_vanished_peer(tmp_path):
  process, cluster = _start_past_preflight(tmp_path, 6)
  status, err = _finish(process, timeout=6 + 10)
  assert status == errors.EXIT_PEER_LOST, err[-3000:]
  (line,) = _error_lines(err)
  assert "strategy creation" in line, line
  assert f"not heard from worker-1 at {cluster['worker'][1]}" in line, line


# --- preflight knows a TensorFlow server -------------------------------------

def _cluster_with_peer_at(port: int):
  ours = portpicker.pick_unused_port()
  cluster = {"worker": [f"127.0.0.1:{ours}", f"127.0.0.1:{port}"]}
  return cluster_lib.make_task(cluster, "worker", 0)


def test_tensorflow_server_is_recognised():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  port = portpicker.pick_unused_port()
  tf.distribute.Server(tf.train.ClusterSpec({"worker": [f"127.0.0.1:{port}"]}),
                       job_name="worker", task_index=0, protocol="grpc",
                       start=True)
  assert preflight.probe(f"127.0.0.1:{port}")[0] == "server"
  # Under ps a running server counts as found: a task restarts alone into a
  # running job.
  ours = portpicker.pick_unused_port()
  preflight.check_peers(cluster_lib.make_task(
      {"worker": [f"127.0.0.1:{ours}"], "ps": [f"127.0.0.1:{port}"]},
      "worker", 0), timeout=5)
  # Under multiworker every task restarts together: a server that never read
  # this task's handshake is a peer's earlier run, waited for until the
  # deadline, then a lost peer (retried on Kubernetes).
  with pytest.raises(errors.PeerLost, match="server of an earlier run"):
    preflight.check_peers(_cluster_with_peer_at(port), timeout=2)


def test_http_server_at_a_peer_address_refused_in_one_line():
  server = http.server.HTTPServer(("127.0.0.1", 0),
                                  http.server.BaseHTTPRequestHandler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  port = server.server_address[1]
  try:
    with pytest.raises(ConfigError) as raised:
      preflight.check_peers(_cluster_with_peer_at(port), timeout=60)
  finally:
    server.shutdown()
    server.server_close()
  message = str(raised.value)
  assert "\n" not in message
  # At once: the line says what answered, not that a deadline passed.
  assert f"worker-1 at 127.0.0.1:{port} is an HTTP/1.x server" in message


def test_silent_listener_at_a_peer_address_fails_at_the_deadline():
  with socket.socket() as silent:
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel accepts; nothing ever answers
    port = silent.getsockname()[1]
    with pytest.raises(ConfigError) as raised:
      preflight.check_peers(_cluster_with_peer_at(port), timeout=3)
  assert (f"worker-1 at 127.0.0.1:{port} accepted connections but never "
          "answered within 3 s") in str(raised.value)
