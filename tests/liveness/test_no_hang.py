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
import time

import portpicker
import pytest

from conftest import REPO, child_env, error_lines, trainer, wait_for
from tfdist import errors
from tfdist.cluster import launch
from tfdist.cluster import preflight
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError

STUCK_TASK = os.path.join(REPO, "tests", "stuck_task.py")


@pytest.fixture(autouse=True)
def _bundled_mnist_only(tmp_path, monkeypatch):
  """The trainers started here without a data flag train on the bundled
  sample: their TFDS data dir is empty, never an MNIST prepared in the
  user's ~/tensorflow_datasets or $TFDS_DATA_DIR."""
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no-tfds"))


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
    _kill(process)
  return launch.exit_status(process.returncode), err


def _kill(process) -> None:
  """Kills the process's group (SIGKILL ends a stopped process too)."""
  try:
    os.killpg(process.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  process.communicate()


# --- a main thread blocked in an op (C++, GIL released) -----------------------

@pytest.mark.slow
def test_expired_deadline_in_a_blocked_op_names_phase_and_peer(tmp_path):
  peer = f"127.0.0.1:{portpicker.pick_unused_port()}"
  process = _start("op", tmp_path / "ready", 3, peer)
  status, err = _finish(process, timeout=60)
  assert status == errors.EXIT_PEER_LOST, err[-3000:]
  (line,) = error_lines(err)
  assert "first step did not finish within 3 s" in line, line
  assert f"not heard from worker-1 at {peer}" in line, line


@pytest.mark.slow
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


# --- C code that holds the GIL (TensorFlow registering a function with a ----
# --- stopped task): no Python thread runs, the sentinel process acts -------

@pytest.mark.slow
def test_sentinel_says_the_line_when_tensorflow_holds_the_gil(tmp_path):
  peer = f"127.0.0.1:{portpicker.pick_unused_port()}"
  process = _start("gil", tmp_path / "ready", 3, peer)
  status, err = _finish(process, timeout=60)
  # SIGALRM, sent by the sentinel at the deadline + the 2 s grace.
  assert status == 142, err[-3000:]
  (line,) = error_lines(err)
  assert ("first step did not finish within 3 s (TensorFlow holds the "
          "task's main thread)") in line, line
  assert f"not heard from ps-0 at {peer}" in line, line


def test_sigterm_ends_a_task_whose_main_thread_tensorflow_holds(tmp_path):
  ready = tmp_path / "ready"
  process = _start("gil", ready, 120, "127.0.0.1:1")
  wait_for(ready.exists, "the task to block holding the GIL", timeout=60)
  process.send_signal(signal.SIGTERM)
  status, err = _finish(process, timeout=6)  # grace 2 s + 1 s, and margin
  assert status == 142, err[-3000:]
  assert ("SIGTERM during first step, which TensorFlow still blocks after "
          "2 s") in err, err[-3000:]
  assert not error_lines(err), err[-3000:]


@pytest.mark.slow
def test_heartbeat_sentinel_ends_a_task_whose_threads_stopped_running(
    tmp_path):
  """The ps chief's stall watch beats a sentinel; when TensorFlow holds
  the GIL outside any phase (a coordinator thread registering a function
  with a stopped worker), no beat comes and the sentinel acts."""
  peer = f"127.0.0.1:{portpicker.pick_unused_port()}"
  ready = tmp_path / "ready"
  process = _start("frozen", ready, 2, peer)
  wait_for(lambda: ready.exists() or process.poll() is not None,
           "4 s of heartbeats", timeout=60)
  status, err = _finish(process, timeout=10)
  assert ready.exists(), err[-3000:]  # it did not act while beaten
  assert status == 142, err[-3000:]
  (line,) = error_lines(err)
  assert ("training: no thread of the task ran for 2 s (TensorFlow holds "
          f"its GIL); not heard from worker-1 at {peer}") in line, line


# --- strategy creation whose peer passed preflight and vanished --------------
# (C++ that holds the GIL: no Python thread runs)

def _start_past_preflight(tmp_path, deadline: float, index: int = 0):
  """worker-``index``, once a stand-in for the other worker answered its
  preflight and vanished, as a peer killed before its TensorFlow server
  started. Returns the process and the cluster.
  """
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  stand_in = preflight._Listener(  # pylint: disable=protected-access
      cluster_lib.make_task(cluster, "worker", 1 - index),
      f"tfdist-preflight {cluster_lib.spec_digest(cluster)} "
      f"worker-{1 - index}\n".encode())
  ready = tmp_path / "ready"
  try:
    process = _start("strategy", ready, deadline,
                     cluster_lib.make_tf_config(cluster, "worker", index))
    wait_for(ready.exists, "preflight to pass", timeout=60)
  finally:
    stand_in.close()
  return process, cluster


def test_sigint_ends_strategy_creation_blocked_on_a_vanished_peer(tmp_path):
  process, _ = _start_past_preflight(tmp_path, 120)
  process.send_signal(signal.SIGINT)
  status, err = _finish(process, timeout=5)
  assert status == errors.EXIT_INTERRUPTED, err[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1], ids=["leader", "not-leader"])
def test_strategy_creation_names_the_vanished_peer(tmp_path, index):
  """worker-0 leads TensorFlow's coordination service: it names the task
  that never registered; worker-1 names the leader it could not reach."""
  process, cluster = _start_past_preflight(tmp_path, 6, index)
  status, err = _finish(process, timeout=6 + 10)
  assert status == errors.EXIT_PEER_LOST, err[-3000:]
  (line,) = error_lines(err)
  assert "strategy creation" in line, line
  peer = 1 - index
  assert (f"not heard from worker-{peer} at {cluster['worker'][peer]}"
          in line), line


# --- preflight knows a TensorFlow server -------------------------------------

def _cluster_with_peer_at(port: int):
  ours = portpicker.pick_unused_port()
  cluster = {"worker": [f"127.0.0.1:{ours}", f"127.0.0.1:{port}"]}
  return cluster_lib.make_task(cluster, "worker", 0)


@pytest.mark.slow
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


@pytest.mark.slow
def test_silent_listener_at_a_peer_address_fails_at_the_deadline():
  with socket.socket() as silent:
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel accepts; nothing ever answers
    port = silent.getsockname()[1]
    # A stopped peer may wake, a preempted one come back: retried (200).
    with pytest.raises(errors.PeerLost) as raised:
      preflight.check_peers(_cluster_with_peer_at(port), timeout=3)
  assert (f"worker-1 at 127.0.0.1:{port} accepted connections but never "
          "answered within 3 s") in str(raised.value)


# --- a multiworker peer stopped (SIGSTOP) mid-training ------------------------

@pytest.mark.slow
def test_stalled_multiworker_peer_named_by_the_heartbeat(tmp_path):
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  ready = [tmp_path / f"ready-{i}" for i in range(2)]
  processes = [_start("allreduce", ready[i], 5,
                      cluster_lib.make_tf_config(cluster, "worker", i))
               for i in range(2)]
  try:
    for i in range(2):
      wait_for(ready[i].exists, f"worker-{i} to train", timeout=90)
    processes[1].send_signal(signal.SIGSTOP)
    status, err = _finish(processes[0], timeout=5 + 10)
  finally:
    for process in processes:
      _kill(process)  # worker-1 stays stopped until then
  assert status == errors.EXIT_PEER_LOST, err[-3000:]
  (line,) = error_lines(err)
  assert line.startswith("error: training"), line
  assert f"not heard from worker-1 at {cluster['worker'][1]}" in line, line


# --- the trainers: peers that passed preflight and vanished -------------------

def _task(cluster: dict, name: str) -> cluster_lib.Task:
  job, index = name.rsplit("-", 1)
  return cluster_lib.make_task(cluster, job, int(index))


class _StandIn:
  """Answers ``name``'s preflight handshake in ``cluster`` (as a peer that
  passed preflight), until closed: a task killed before its TensorFlow
  server started."""

  def __init__(self, cluster: dict, name: str):
    self._listener = preflight._Listener(  # pylint: disable=protected-access
        _task(cluster, name),
        f"tfdist-preflight {cluster_lib.spec_digest(cluster)} "
        f"{name}\n".encode())

  def close(self):
    self._listener.close()


def _start_trainer(cluster: dict, name: str, strategy: str,
                   peer_timeout: float):
  task = _task(cluster, name)
  return subprocess.Popen(
      trainer("mnist", f"--strategy={strategy}", "--epochs=1",
              "--steps_per_epoch=5", f"--peer_timeout={peer_timeout}"),
      cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, start_new_session=True,
      env=child_env(TF_CONFIG=cluster_lib.make_tf_config(cluster, task.type,
                                                          task.index)))


def _past_preflight(cluster: dict, name: str, strategy: str,
                    peer_timeout: float):
  """The trainer ``name``, once its TensorFlow server runs (it is past
  preflight, in strategy creation) and every peer's stand-in is gone."""
  own = _task(cluster, name).address
  stand_ins = [_StandIn(cluster, peer)
               for peer in preflight.peers_of(_task(cluster, name))]
  process = _start_trainer(cluster, name, strategy, peer_timeout)
  try:
    # Its server answers gRPC: preflight passed, strategy creation began.
    wait_for(lambda: (preflight.probe(own) or ("",))[0] == "server"
             or process.poll() is not None,
             f"{name} to start its TensorFlow server", timeout=90)
  finally:
    for stand_in in stand_ins:
      stand_in.close()
  return process


def _two_workers() -> dict:
  return {"worker": [f"127.0.0.1:{portpicker.pick_unused_port()}"
                     for _ in range(2)]}


def _ps_cluster() -> dict:
  ports = [portpicker.pick_unused_port() for _ in range(3)]
  return {"chief": [f"127.0.0.1:{ports[0]}"],
          "worker": [f"127.0.0.1:{ports[1]}"],
          "ps": [f"127.0.0.1:{ports[2]}"]}


@pytest.mark.slow
def test_trainer_names_the_peer_that_vanished_after_preflight():
  """The issue's first repro: worker-0 exits within --peer_timeout + 10 s
  with one line naming worker-1, status 200."""
  cluster = _two_workers()
  process = _past_preflight(cluster, "worker-0", "multiworker", 4)
  status, err = _finish(process, timeout=4 + 10)
  assert status == errors.EXIT_PEER_LOST, err[-3000:]
  (line,) = error_lines(err)
  assert "strategy creation" in line, line
  assert f"not heard from worker-1 at {cluster['worker'][1]}" in line, line


def test_sigint_ends_a_trainer_blocked_in_strategy_creation():
  process = _past_preflight(_two_workers(), "worker-0", "multiworker", 120)
  process.send_signal(signal.SIGINT)
  status, err = _finish(process, timeout=5)
  assert status == errors.EXIT_INTERRUPTED, err[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("signum,status", [
    (signal.SIGINT, errors.EXIT_INTERRUPTED),
    (signal.SIGTERM, errors.EXIT_PREEMPTED)])
def test_signal_ends_a_ps_chief_whose_ps_vanished(signum, status):
  process = _past_preflight(_ps_cluster(), "chief-0", "ps", 120)
  process.send_signal(signum)
  got, err = _finish(process, timeout=5)
  assert got == status, err[-3000:]
  assert not error_lines(err), err[-3000:]


def _answer_once(cluster: dict, name: str) -> threading.Thread:
  """Answers one preflight handshake as ``name``, then closes its port: a
  task that passed its peer's preflight and died at once."""
  host, port = cluster_lib.split_address(_task(cluster, name).address,
                                         where=name)
  listener = socket.create_server((host, port))
  handshake = (f"tfdist-preflight {cluster_lib.spec_digest(cluster)} "
               f"{name}\n").encode()

  def answer():
    with listener:
      listener.settimeout(60)
      connection, _ = listener.accept()
      with connection:
        connection.sendall(handshake)
        connection.settimeout(5)
        connection.recv(256)  # the peer's own handshake: it saw us
  thread = threading.Thread(target=answer, daemon=True)
  thread.start()
  return thread


@pytest.mark.slow
def test_ps_worker_whose_chief_vanished_after_preflight_exits():
  """The chief answered worker-0's preflight and died before its server
  started (SIGTERM in start-up, in the chaos sweep): worker-0 exits 200
  after --peer_timeout, not after a longer wait for a chief to come up."""
  cluster = _ps_cluster()
  chief = _answer_once(cluster, "chief-0")
  ps = _StandIn(cluster, "ps-0")
  try:
    process = _start_trainer(cluster, "worker-0", "ps", 4)
    chief.join(60)
    assert not chief.is_alive(), "worker-0 never asked for chief-0"
    status, err = _finish(process, timeout=4 + 10)
  finally:
    ps.close()
  assert status == errors.EXIT_PEER_LOST, err[-3000:]
  (line,) = [l for l in err.splitlines() if l.startswith("error:")]
  assert line.startswith(
      "error: hosting: chief-0 did not answer for 4 s without finishing; "
      f"not heard from chief-0 at {cluster['chief'][0]}"), err[-3000:]


@pytest.mark.slow
def test_ps_chief_names_its_vanished_peers_at_the_deadline():
  cluster = _ps_cluster()
  process = _past_preflight(cluster, "chief-0", "ps", 4)
  status, err = _finish(process, timeout=4 + 10)
  assert status == errors.EXIT_PEER_LOST, err[-3000:]
  (line,) = error_lines(err)
  assert "cluster creation did not finish within 4 s" in line, line
  for job in ("worker", "ps"):
    assert f"{job}-0 at {cluster[job][0]}" in line, line


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ps_chief_names_the_ps_stopped_as_training_begins(tmp_path):
  """ps-0 stopped (SIGSTOP) once the chief announced its model: set-up or
  the first step waits for it (TensorFlow may hold the GIL there, while it
  registers the step's function with ps-0). The chief ends within the
  phase's deadline with one line naming ps-0 alone (the workers answer);
  the workers follow within their wait for a silent chief."""
  from tfdist.bench import jobs  # pylint: disable=g-import-not-at-top
  job = jobs.Job("ps", ["--epochs=2", "--steps_per_epoch=200",
                        f"--model_dir={tmp_path / 'model'}",
                        "--checkpoint_every_steps=5", "--peer_timeout=8",
                        "--verbose=0"])
  try:
    job.start()
    wait_for(lambda: any("softmax_regression:" in line
                         for line in job.output["chief-0"]),
             "the chief's model line", timeout=180)
    job.signal("ps-0", signal.SIGSTOP)
    # Set-up or first step (16 s), or a save's write (16 s, and a little
    # for its bytes), + grace and the sentinel; then the workers' 8 s.
    still = job.wait(["chief-0", "worker-0", "worker-1"],
                     time.monotonic() + 90)
    assert not still, "\n".join(job.output["chief-0"][-20:])
  finally:
    job.kill()
  chief = job.output["chief-0"]
  assert job.status("chief-0") in (errors.EXIT_PEER_LOST, 142), chief[-20:]
  (line,) = [l for l in chief if l.startswith("error:")]
  assert f"not heard from ps-0 at {job.address('ps-0')}; " in line, line
  for name in ("worker-0", "worker-1"):
    assert job.status(name) == errors.EXIT_PEER_LOST, job.output[name][-20:]


# --- the quick chaos sweep -----------------------------------------------------

@pytest.mark.slow
@pytest.mark.exclusive  # random moments: alone, as users run it
@pytest.mark.timeout(900)
def test_quick_chaos_sweep_has_no_hang_and_explains_every_status():
  """4 seeded trials of tfdist.bench.chaos (its full sweep: 50 in
  docs/reliability.md): a task of a real multiworker or ps job killed,
  stopped or signalled at a random moment; every other task exits within
  its deadline with an explained status, every checkpoint left reads back,
  and every job that finished ended clean."""
  from tfdist.bench import chaos, windows  # pylint: disable=g-import-not-at-top
  settings = chaos.Settings(peer_timeout=8, heartbeat_timeout=5, epochs=2,
                            steps_per_epoch=20, checkpoint_every_steps=5,
                            startup_s=6)
  # The seed draws a ps worker stopped during training (its save waits for
  # the stalled worker's step), a ps worker killed during training, SIGTERM
  # to a worker during multiworker start-up and during its shutdown (of
  # the phases without a slow write: the full sweep has those too).
  phases = windows.CLASSIC
  assert {("ps", "training", "SIGSTOP"), ("ps", "training", "SIGKILL"),
          ("multiworker", "start-up", "SIGTERM")} <= set(
              chaos.plan(4, 43, phases=phases))
  records = chaos.sweep(4, seed=43, settings=settings, relaunch=False,
                        phases=phases)
  print(chaos.summary(records))
  assert len(records) == 4
  for record in records:
    assert not record["hangs"], record
    assert not record["unexplained"], record
    assert not chaos.permanent(record), record
    assert record["checkpoints_readable"], record
    # A job that finished ended clean: no E-level line, no traceback.
    assert not record.get("noise"), record


# --- a stalled ps worker -------------------------------------------------------

# --- SIGTERM while a collective waits for a stopped peer -----------------------

def _blocked(pid: int):
  """A predicate: the main thread of ``pid`` sleeps in C++ (state S) and
  used no CPU since the last look (a collective waiting for a peer)."""
  seen = []

  def predicate() -> bool:
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    state, cpu = fields[0], int(fields[11]) + int(fields[12])
    unchanged = seen[-1:] == [cpu]
    seen.append(cpu)
    return state == "S" and unchanged
  return predicate


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_ends_a_worker_whose_collective_waits_for_a_stopped_peer(
    tmp_path):
  """Within seconds, not at the heartbeat deadline (2 minutes here): 143
  and one line, no checkpoint (a save would wait for the same peer)."""
  from tfdist.bench import jobs  # pylint: disable=g-import-not-at-top
  model_dir = tmp_path / "model"
  job = jobs.Job("multiworker", [
      "--epochs=200", "--steps_per_epoch=20", f"--model_dir={model_dir}",
      "--checkpoint_every_steps=5", "--heartbeat_timeout=120", "--verbose=0"])
  try:
    job.start()
    wait_for((model_dir / "checkpoints" / "checkpoint").exists,
             "the first checkpoint", timeout=180)
    job.signal("worker-1", signal.SIGSTOP)
    wait_for(_blocked(job.processes["worker-0"].pid),
             "worker-0 to wait in a collective", timeout=60)
    job.signal("worker-0", signal.SIGTERM)
    still = job.wait(["worker-0"], time.monotonic() + 10)
    assert not still, "\n".join(job.output["worker-0"][-20:])
  finally:
    job.kill()
  output = "\n".join(job.output["worker-0"])
  assert job.status("worker-0") == errors.EXIT_PREEMPTED, output[-3000:]
  assert ("SIGTERM during training, which TensorFlow still blocks"
          in output), output[-3000:]
