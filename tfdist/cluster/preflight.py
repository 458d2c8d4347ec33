"""Preflight: before building a strategy, find every peer or fail in one line.

TensorFlow, left alone, waits forever for a peer that never starts, and
tasks started from different cluster specs fail late with "group size
mismatch" or hang. :func:`check_peers` runs before TensorFlow opens its
server and fails with a deadline, a line naming the missing peer, or a line
saying the specs differ.

How it avoids a deadlock: the MultiWorkerMirroredStrategy server starts
inside the strategy's constructor, so "wait for the peers' servers before
starting mine" would have every task waiting for the others. Instead each
task first answers on *its own* port with a one-line handshake (``tfdist
<digest> <task>``, the digest of the cluster spec it was started from), and
waits until every peer answers, either with its handshake (then the digests
are compared) or as a TensorFlow server (that peer finished its preflight,
having checked our handshake). A TensorFlow server is recognised by its
protocol: it answers the HTTP/2 handshake every gRPC client opens with.
Anything else at a peer's address (an HTTP server, a leftover process) is
refused at once, naming what answered. It then closes its listener and TensorFlow
binds the same port, so no extra port is needed, on a laptop or in a pod.

A peer that read our handshake answers with its own line on the same
connection, so each task knows which peers have seen it in this run. Under
multiworker (a cluster without ps tasks) every task restarts together after
a loss (a gang restart): a TensorFlow server at a peer's address that never
read our handshake is that peer's previous run, still up until it notices
the loss and exits (status 200). The task keeps waiting, within its
deadline, until that peer is back in preflight; building the strategy with
the stale server would block. Under ps a worker or ps task restarts alone
into a running job, whose servers count as found.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from typing import Callable, Mapping, Optional

from tfdist import console
from tfdist import errors
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError

_MAGIC = "tfdist-preflight"
# How often a line "waiting for worker-1 at ..., 12/60 s" is printed.
REPORT_EVERY = 5.0


def peers_of(task: cluster_lib.Task) -> dict:
  """Task name -> address of every training task but this one."""
  return {f"{t}-{i}": address
          for t, addresses in task.cluster.items() if t != "evaluator"
          for i, address in enumerate(addresses)
          if (t, i) != (task.type, task.index)}


class _Listener:
  """Answers the handshake on this task's port until closed."""

  def __init__(self, task: cluster_lib.Task, handshake: bytes, *,
               timeout: float = 0.0,
               clock: Callable[[], float] = time.monotonic):
    self._socket = _bind(task, timeout=timeout, clock=clock)
    self._digest = handshake.split()[1].decode()
    # Peers that read our handshake and said who they are (this run).
    self.heard_from: set = set()
    # accept() with a timeout, so close() can stop the thread: closing a
    # socket another thread is blocked on does not release the port.
    self._socket.settimeout(0.1)
    self._handshake = handshake
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._answer, daemon=True)
    self._thread.start()

  def _answer(self):
    while not self._stop.is_set():
      try:
        connection, _ = self._socket.accept()
      except (socket.timeout, OSError):
        continue
      with connection:
        try:
          connection.sendall(self._handshake)
          connection.settimeout(1.0)
          words = connection.recv(256).decode(errors="replace").split()
        except OSError:
          continue
        if words[:2] == [_MAGIC, self._digest] and len(words) == 3:
          self.heard_from.add(words[2])

  def close(self):
    self._stop.set()
    self._thread.join()
    self._socket.close()  # now TensorFlow can bind the port


def _try_bind(task: cluster_lib.Task) -> Optional[socket.socket]:
  """A listening socket on this task's port, or None while another
  process holds it."""
  host, port = cluster_lib.split_address(task.address, where=task.name)
  family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
  listener = socket.socket(family, socket.SOCK_STREAM)
  # SO_REUSEADDR: TensorFlow rebinds this port right after we close it (and
  # a port in TIME_WAIT is free for gRPC too: only a live listener counts).
  listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  bare = host.strip("[]")
  # A loopback spec stays on loopback. Otherwise all interfaces, like
  # TensorFlow's server on this port: a peer must reach us at the spec's
  # address whichever interface it routes to (the handshake says only the
  # spec digest and the task's name).
  if bare in ("localhost", "::1") or bare.startswith("127."):
    bind_host = bare
  else:
    bind_host = "" if family == socket.AF_INET else "::"
  try:
    listener.bind((bind_host, port))
  except OSError as e:
    listener.close()
    if e.errno == errno.EADDRINUSE:
      return None
    raise ConfigError(f"{task.name}: cannot listen on port {port} "
                      f"({task.address}): {e.strerror}; fix its address in "
                      "the cluster spec") from None
  listener.listen(16)
  return listener


def _bind(task: cluster_lib.Task, *, timeout: float,
          clock: Callable[[], float]) -> socket.socket:
  """This task's port, once no other process holds it (a previous run of
  the task still exiting, another program): waited for up to ``timeout``
  seconds, then PeerLost (retried, as the holder may be gone by then)."""
  start = last_report = clock()
  while True:
    listener = _try_bind(task)
    if listener is not None:
      return listener
    elapsed = clock() - start
    port = cluster_lib.split_address(task.address, where=task.name)[1]
    if elapsed >= timeout:
      raise errors.PeerLost(
          f"preflight: {task.name}'s port {port} ({task.address}) was held "
          f"by another process for {timeout:.0f} s",
          what_next="the job is retried; if it fails again, stop what holds "
          "the port, pick another port in the cluster spec, or run "
          "python -m tfdist.launch with --free_ports")
    if clock() - last_report >= REPORT_EVERY:
      console.info(f"waiting for port {port} ({task.address}), held by "
                   f"another process, {elapsed:.0f}/{timeout:.0f} s")
      last_report = clock()
    time.sleep(0.25)  # a polling interval, not synchronisation


# What a gRPC client says first (RFC 7540 section 3.5): the connection
# preface and an empty SETTINGS frame. A gRPC server, TensorFlow's included,
# answers with a SETTINGS frame of its own.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HTTP2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS_TYPE = 4


def _recv(s: socket.socket) -> bytes:
  try:
    return s.recv(256)
  except socket.timeout:
    return b""
  except OSError:
    return b""  # reset by a server that did not like what we said


def _speaks_http2(data: bytes) -> bool:
  # A frame header: 3 bytes length, 1 byte type, 1 byte flags, 4 bytes stream.
  return len(data) >= 9 and data[3] == _SETTINGS_TYPE and data[5:9] == bytes(4)


def _describe(data: bytes) -> str:
  if data.startswith(b"HTTP/1"):
    status_line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    return f"an HTTP/1.x server ({status_line})"
  if data.lstrip().lower().startswith((b"<!doctype html", b"<html")):
    # An HTTP/1.x server answers a request line it cannot parse with a bare
    # error page, in the HTTP/0.9 style.
    return "an HTTP/1.x server (it answered with an HTML page)"
  if data.startswith(b"SSH-"):
    return "an SSH server"
  return f"an unknown server (it said {data[:24]!r})"


def probe(address: str, *, timeout: float = 1.0, introduce: bytes = b""):
  """Asks ``address`` who it is.

  Args:
    address: host:port of a peer.
    timeout: seconds for the connection and each answer.
    introduce: sent back to a task in preflight once it answered (our own
      handshake line), so it knows we saw it.

  Returns:
    None when nothing listens there; ``("tfdist", digest, name)`` when a
    task in preflight answers; ``("server", "", "")`` when a gRPC server (a
    TensorFlow server past its preflight) answers the HTTP/2 handshake;
    ``("silent", "", "")`` when something accepts the connection but says
    nothing; ``("other", what, "")`` when something else answers, ``what``
    saying what it seems to be.
  """
  host, port = cluster_lib.split_address(address, where="peer")
  try:
    with socket.create_connection((host.strip("[]"), port),
                                  timeout=timeout) as s:
      data = _recv(s)  # a task in preflight speaks first
      if data.startswith(_MAGIC.encode()) and introduce:
        s.sendall(introduce)
      elif not data:  # a gRPC server waits for the client to speak first
        s.sendall(_HTTP2_PREFACE + _HTTP2_SETTINGS)
        data = _recv(s)
  except OSError:
    return None
  words = data.decode(errors="replace").split()
  if len(words) == 3 and words[0] == _MAGIC:
    return ("tfdist", words[1], words[2])
  if _speaks_http2(data):
    return ("server", "", "")
  if not data:
    return ("silent", "", "")
  return ("other", _describe(data), "")


def probe_all(peers: Mapping[str, str], *, timeout: float = 1.0) -> dict:
  """:func:`probe` of every peer (name -> address) at once: name -> its
  answer (None for a peer that did not answer in time)."""
  answers = {}

  def ask(name: str, address: str) -> None:
    answers[name] = probe(address, timeout=timeout)

  askers = [threading.Thread(target=ask, args=item, daemon=True)
            for item in peers.items()]
  for asker in askers:
    asker.start()
  for asker in askers:
    asker.join(3 * timeout)  # connect, then one answer (two for a server)
  return {name: answers.get(name) for name in peers}


def not_answering(peers: Mapping[str, str], *,
                  timeout: float = 1.0) -> dict:
  """The peers (name -> address) that answer neither in preflight nor as a
  TensorFlow server within ``timeout`` seconds (all probed at once): gone,
  stopped (the kernel still accepts, nobody speaks) or something else."""
  answers = probe_all(peers, timeout=timeout)
  return {name: address for name, address in peers.items()
          if (answers[name] or ("",))[0] not in ("tfdist", "server")}


def not_heard_from(peers: Mapping[str, str]) -> list:
  """``name at address`` of the peers that do not answer now
  (:func:`not_answering`), or of every peer if each one answers: what a
  deadline's line names."""
  silent = not_answering(peers) or peers
  return [f"{name} at {address}" for name, address in silent.items()]


def _answered(name: str, address: str, answer, *, task, digest: str,
              listener, restarts_together: bool, stale: set,
              silent: set) -> Optional[str]:
  """What a peer's ``answer`` (see :func:`probe`) means for the wait: its
  kind ("tfdist" or "server") once the peer counts as found, else None.

  Raises:
    ConfigError: something else answers at the address, or the peer was
      started from a different cluster spec.
  """
  stale.discard(name)
  if answer is None:
    return None
  kind, their_digest, their_name = answer
  if kind == "silent":
    silent.add(name)
    return None
  if kind == "other":
    raise ConfigError(
        f"{name} at {address} is {their_digest}, not a tfdist task or a "
        "TensorFlow server; fix the address in the cluster spec or stop what "
        "listens there")
  if (kind == "server" and restarts_together
      and name not in listener.heard_from):
    # See the module docstring: under multiworker a server that did not see
    # us is a previous run's.
    stale.add(name)
    return None
  if kind == "tfdist" and (their_digest != digest or their_name != name):
    raise ConfigError(
        f"{name} at {address} was started from a different cluster spec (it "
        f"is {their_name}, spec digest {their_digest}; {task.name} has "
        f"{digest}); start every task from the same spec (python -m "
        "tfdist.tfconfig SPEC TYPE INDEX)")
  return kind


def _missing(name: str, address: str, *, timeout: float, stale: set,
             silent: set) -> errors.PeerLost:
  """The one-line error for a peer not found within ``timeout``: retried
  (a pod still scheduled, or preempted while it started; see
  tfdist.errors)."""
  if name in stale:
    return errors.PeerLost(
        f"preflight: {name} at {address} still ran a TensorFlow server of an "
        f"earlier run after {timeout:.0f} s", [name])
  if name in silent:
    return errors.PeerLost(
        f"preflight: {name} at {address} accepted connections but never "
        f"answered within {timeout:.0f} s (a stopped process, or the wrong "
        "address?)", what_next="the job is retried; if it fails again, fix "
        "the address in the cluster spec")
  return errors.PeerLost(
      f"preflight: {name} at {address} did not answer within {timeout:.0f} "
      "s", what_next="the job is retried; if it fails again, start it (same "
      "cluster spec), fix its address or raise --peer_timeout")


def handshake(task: cluster_lib.Task) -> bytes:
  """What ``task`` says on its port in preflight: the magic word, the
  digest of its cluster spec and its name."""
  digest = cluster_lib.spec_digest(task.cluster)
  return f"{_MAGIC} {digest} {task.name}\n".encode()


@contextlib.contextmanager
def answering(task: cluster_lib.Task, *, timeout: float):
  """This task's port answers :func:`handshake` while the block runs (its
  port waited for within ``timeout``, as in :func:`check_peers`). Yields
  the set of peers (names) that read our handshake and said who they are:
  they saw this task, even if they left before it probed them."""
  listener = _Listener(task, handshake(task), timeout=timeout)
  try:
    yield listener.heard_from
  finally:
    listener.close()


def check_peers(task: cluster_lib.Task, *, timeout: float,
                peers: Mapping[str, str] = None,
                found_if_running: tuple = (),
                clock: Callable[[], float] = time.monotonic) -> None:
  """Waits until every peer is up and started from the same cluster spec.

  Args:
    task: this task (its port answers the handshake meanwhile; a port
      another process holds is waited for within the same deadline).
    timeout: seconds before failing with a line naming a missing peer.
    peers: name -> address to wait for; default every training task.
    found_if_running: peers that count as found once another peer answers
      as a running TensorFlow server: a ps-strategy task restarted into a
      running job joins whatever is left of it (the chief checked every
      peer before training began; some may have finished since).

  Raises:
    ConfigError: a peer was started from a different cluster spec, or
      something else answers at its address.
    PeerLost: a peer did not answer within ``timeout`` (or, under
      multiworker, still ran its earlier run's TensorFlow server: a gang
      restart that did not meet), or this task's port stayed held by
      another process.
  """
  digest = cluster_lib.spec_digest(task.cluster)
  pending = dict(peers_of(task) if peers is None else peers)
  hello = handshake(task)
  start = clock()
  # This task's own port first, within the same deadline.
  listener = _Listener(task, hello, timeout=timeout, clock=clock)
  # See the module docstring: under multiworker a server that did not see
  # us is a previous run's.
  restarts_together = "ps" not in task.cluster
  stale = set()
  try:
    last_report = start
    job_running = False
    silent = set()  # accepted a connection and never answered
    while True:
      for name, address in list(pending.items()):
        found = _answered(name, address, probe(address, introduce=hello),
                          task=task, digest=digest, listener=listener,
                          restarts_together=restarts_together,
                          stale=stale, silent=silent)
        if found:
          job_running = job_running or found == "server"
          del pending[name]
      if job_running:
        for name in found_if_running:
          pending.pop(name, None)
      if not pending:
        return
      elapsed = clock() - start
      name, address = next(iter(pending.items()))
      if elapsed >= timeout:
        raise _missing(name, address, timeout=timeout, stale=stale,
                       silent=silent)
      if clock() - last_report >= REPORT_EVERY:
        earlier = (" (its TensorFlow server of an earlier run is still up; "
                   "waiting for it to restart)" if name in stale else "")
        console.info(f"waiting for {name} at {address}{earlier}, "
                     f"{elapsed:.0f}/{timeout:.0f} s")
        last_report = clock()
      time.sleep(0.25)  # a polling interval, not synchronisation
  finally:
    listener.close()
