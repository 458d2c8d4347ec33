"""Elastic multiworker training: ``--min_workers=K`` keeps a job going on
fewer workers when some are lost for good.

Owns the membership of an elastic job: which of the N training tasks of
TF_CONFIG's cluster train now, agreed through ``--model_dir`` (the storage
every worker mounts already; nothing else, no Kubernetes API), and the
per-replica batch that keeps the global batch of the full cluster.

Every start of an elastic task is a round (:func:`agree`), before
TensorFlow starts:

1. It reads the newest membership record's generation ``g``, then answers
   preflight's handshake on its own port (tfdist.cluster.preflight) and
   probes its peers' ports until all N answer, or ``--peer_timeout`` has
   passed.
2. The lowest-ranked task that answers (chief first, then the workers by
   index) writes record ``g + 1`` naming the tasks that answered, if there
   are at least K: exclusively (a link that fails when the file exists), so
   that of two tasks that both believe they lead, one record wins.
3. Every task reads record ``g + 1``; one it names closes its port,
   writes ``ready-<g+1>-<name>`` and waits for every member's; then all
   of them build the smaller cluster (the members' addresses, re-indexed
   in rank order; the first is the chief) and resume from the last
   checkpoint. No member still answers the elastic handshake once training
   begins, so the smaller cluster's preflight meets only its own.

A member that meets a lost peer later (tfdist.training.runtime.lost_peers)
re-executes itself with its original TF_CONFIG (:func:`regroup`): a new
round. A task that starts while a smaller cluster trains (its peers answer
as TensorFlow servers) never leads: it writes ``join-<g+1>-<name>`` and
waits as long as they train; the members' check for a preempted peer (every
--preemption_check_steps steps, one all-reduce: tfdist.training.checkpoint)
finds the request, they save and re-execute, and the round takes the joiner
in: the job grows back at that step. Fewer than K tasks, no record within
twice the deadline, or a record that leaves this task out is a lost peer
(status 200, retried: tfdist.errors). Each record carries the history of
membership changes; the result line reports it (``membership``).
docs/reliability.md has the failure cases. Imports tfdist.console, errors,
cluster (specs, preflight) and of tfdist.training: checkpoint (where
checkpoints are) and hosting (the result file's name); no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import tempfile
import time
from typing import Callable, Optional, Sequence

from tfdist import console
from tfdist import errors
from tfdist.cluster import preflight
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError
from tfdist.training import checkpoint as checkpoint_lib
from tfdist.training import hosting

MEMBERSHIP_SUBDIR = "membership"
_RECORD_RE = re.compile(r"^gen-(\d+)\.json$")
_TRAINING_TYPES = ("chief", "worker")
_CHECKPOINT_RE = re.compile(r'^model_checkpoint_path: "(?:.*/)?ckpt-(\d+)"',
                            re.MULTILINE)
_POLL_S = 0.25  # how often files and ports are looked at, not ordering


def check(*, min_workers: int, strategy: str, model_dir: Optional[str]) -> None:
  """The flag alone, checked without TensorFlow or a cluster."""
  if min_workers < 0:
    raise ConfigError(f"--min_workers={min_workers}: must be 0 (off) or at "
                      "least 1")
  if not min_workers:
    return
  if strategy != "multiworker":
    raise ConfigError(f"--min_workers applies to --strategy=multiworker (ps "
                      f"goes on without a lost worker already); drop it, or "
                      f"use --strategy=multiworker instead of {strategy}")
  if not model_dir:
    raise ConfigError("--min_workers: the workers regroup from the last "
                      "checkpoint and agree through --model_dir; add "
                      "--model_dir=DIR (storage every worker mounts)")


def members_of(cluster) -> list:
  """The training tasks of ``cluster`` by rank: the chief, then workers."""
  return [f"{kind}-{index}" for kind in _TRAINING_TYPES
          for index in range(len(cluster.get(kind, ())))]


def _working_batch(batch_size: int, full: int, low: int) -> int:
  """The smallest --batch_size >= ``batch_size`` whose global batch every
  cluster size from ``low`` to ``full`` divides."""
  sizes = math.lcm(*range(low, full + 1))
  step = sizes // math.gcd(sizes, full)
  return -(-batch_size // step) * step


def check_cluster(task: Optional[cluster_lib.Task], *, min_workers: int,
                  batch_size: int) -> None:
  """``--min_workers`` against the cluster: at most its N training tasks,
  and a global batch (--batch_size x N) every size from K to N divides."""
  if task is None:
    raise ConfigError("--min_workers needs a cluster: set TF_CONFIG, or "
                      "start the workers with python -m tfdist.launch "
                      "--workers=N")
  full = len(members_of(task.cluster))
  if min_workers > full:
    raise ConfigError(f"--min_workers={min_workers}: the cluster has "
                      f"{full} training tasks; use at most {full}")
  sizes = [m for m in range(min_workers, full + 1)
           if batch_size * full % m]
  if sizes:
    raise ConfigError(
        f"--min_workers={min_workers}: the global batch {batch_size * full} "
        f"(--batch_size={batch_size} x {full} workers) does not split "
        f"evenly over {sizes[0]} workers; use --batch_size="
        f"{_working_batch(batch_size, full, min_workers)}")


@dataclasses.dataclass(frozen=True)
class Membership:
  """The tasks that train in this round.

  Attributes:
    task: this task in the members' cluster (the original one when every
      task is a member).
    batch_size: the per-replica batch that keeps the full cluster's
      global batch.
    generation: the record's: a task asking to join the next round
      (:func:`join_request`) stops the members at their next agreement.
  """
  task: cluster_lib.Task
  batch_size: int
  generation: int


def _records_dir(model_dir: str) -> str:
  return os.path.join(model_dir, MEMBERSHIP_SUBDIR)


def latest_generation(directory: str) -> int:
  """The newest record's generation in ``directory`` (0: none)."""
  try:
    names = os.listdir(directory)
  except FileNotFoundError:
    return 0
  found = [int(m.group(1)) for m in map(_RECORD_RE.match, names) if m]
  return max(found, default=0)


def _record_path(directory: str, generation: int) -> str:
  return os.path.join(directory, f"gen-{generation:06d}.json")


def read_record(directory: str, generation: int) -> Optional[dict]:
  """Record ``generation``, or None while there is none."""
  try:
    with open(_record_path(directory, generation)) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def _write_exclusive(path: str, content: str) -> bool:
  """Writes ``path`` whole, unless it exists; False when it did."""
  directory = os.path.dirname(path)
  with tempfile.NamedTemporaryFile("w", dir=directory, delete=False,
                                   prefix=".tmp-") as f:
    f.write(content)
    temp = f.name
  try:
    os.link(temp, path)  # atomic, and fails if another task wrote first
    return True
  except FileExistsError:
    return False
  finally:
    os.unlink(temp)


def checkpoint_step(model_dir: str) -> int:
  """The step of the last checkpoint in ``model_dir`` (0: none), from
  TensorFlow's state file, without TensorFlow."""
  try:
    with open(os.path.join(checkpoint_lib.checkpoint_dir(model_dir),
                           "checkpoint")) as f:
      found = _CHECKPOINT_RE.search(f.read())
  except FileNotFoundError:
    return 0
  return int(found.group(1)) if found else 0


def _new_record(directory: str, generation: int, members: list, *,
                step: int) -> dict:
  previous = read_record(directory, generation - 1) or {}
  history = list(previous.get("history", []))
  if not history or history[-1]["members"] != members:
    history.append({"step": step, "workers": len(members),
                    "members": members})
  return {"generation": generation, "members": members, "step": step,
          "history": history}


def result_fields(model_dir: str) -> dict:
  """What an elastic job's result adds: ``membership``, every change of
  the newest record's history as ``{"step", "workers", "members"}``."""
  directory = _records_dir(model_dir)
  record = read_record(directory, latest_generation(directory)) or {}
  return {"membership": record.get("history", [])}


def _present(task: cluster_lib.Task) -> tuple:
  """(this task and the peers in an elastic round of the same cluster, by
  rank; the peers that answer as TensorFlow servers: a cluster training)."""
  digest = cluster_lib.spec_digest(task.cluster)
  hello = preflight.handshake(task)
  answers = {name: preflight.probe(address, introduce=hello)
             for name, address in preflight.peers_of(task).items()}
  here = [name for name in members_of(task.cluster)
          if name == task.name or answers.get(name) == ("tfdist", digest,
                                                        name)]
  return here, [n for n, a in answers.items() if a and a[0] == "server"]


def _join_path(directory: str, generation: int, name: str) -> str:
  return os.path.join(directory, f"join-{generation:06d}-{name}")


def join_request(model_dir: str, generation: int = 0) -> Optional[str]:
  """A task that asks to join round ``generation`` (default: the next
  one), as ``"worker-2 asks to join"``, or None."""
  directory = _records_dir(model_dir)
  generation = generation or latest_generation(directory) + 1
  prefix = f"join-{generation:06d}-"
  try:
    names = sorted(n[len(prefix):] for n in os.listdir(directory)
                   if n.startswith(prefix))
  except FileNotFoundError:
    return None
  return f"{', '.join(names)} asks to join" if names else None


def _decide(task: cluster_lib.Task, directory: str, generation: int,
            present: list, *, min_workers: int, step: Callable,
            timeout: float) -> None:
  """At the deadline (or with every task here): fewer than K is a lost
  peer; the leader writes the record (exclusively: one of two wins)."""
  full = members_of(task.cluster)
  if len(present) < min_workers:
    raise errors.PeerLost(
        f"--min_workers={min_workers}: only {len(present)} of {len(full)} "
        f"workers answered within {timeout:.0f} s",
        [n for n in full if n not in present])
  if present[0] == task.name:
    _write_exclusive(_record_path(directory, generation), json.dumps(
        _new_record(directory, generation, present, step=step())))


def _mtime(path: str) -> float:
  try:
    return os.path.getmtime(path)
  except FileNotFoundError:
    return 0.0


def _wait_for_record(task: cluster_lib.Task, directory: str,
                     generation: int, heard_from: set, *, min_workers: int,
                     step: Callable, result_path: str, timeout: float,
                     clock: Callable[[], float]) -> Optional[dict]:
  """Record ``generation``: waited for while this task answers on its port,
  written by this task if it leads (see the module docstring). None: this
  task asked to join, and the job finished (``result_path`` written)
  instead. ``heard_from``: the peers that probed this task's port (a
  leader that saw this task may close its port before this task probes
  it: it was here all the same)."""
  full = members_of(task.cluster)
  start = last_report = clock()
  seen = set()  # every task that answered, or probed us, in this round
  asked_at = None  # when this task asked to join (time.time())
  while True:
    record = read_record(directory, generation)
    if record is not None:
      return record
    present, running = _present(task)
    if running:
      # A smaller cluster trains: ask to join (its members stop at their
      # next agreement and start this round); wait as long as it runs,
      # never leading (the deadline starts again).
      if _write_exclusive(_join_path(directory, generation, task.name), ""):
        asked_at = time.time()
      start = clock()
    seen.update(present)
    seen.update(heard_from)
    elapsed = clock() - start
    if asked_at and _mtime(result_path) >= asked_at:
      return None  # the members finished without taking it in
    # A leader closes its port only once its record exists: read again
    # before deciding on what the probes saw. A task ranked first that
    # answered and went silent led (or died): its record is waited for.
    if ((len(present) == len(full) or elapsed >= timeout)
        and read_record(directory, generation) is None
        and not [n for n in full[:full.index(task.name)]
                 if n in seen and n not in present]):
      _decide(task, directory, generation, present, min_workers=min_workers,
              step=step, timeout=timeout)
      continue
    if elapsed >= 2 * timeout:
      raise errors.PeerLost(
          f"{task.name}: no membership record {generation} in {directory} "
          f"within {2 * timeout:.0f} s (its leader lost, or --model_dir not "
          "storage every worker shares)", [n for n in full if n != task.name])
    if clock() - last_report >= preflight.REPORT_EVERY:
      console.info(
          f"--min_workers={min_workers}: asked to join {', '.join(running)}"
          if running else f"--min_workers={min_workers}: {len(present)} of "
          f"{len(full)} workers here ({', '.join(present)}), "
          f"{elapsed:.0f}/{timeout:.0f} s")
      last_report = clock()
    time.sleep(_POLL_S)


def _wait_until_ready(task_name: str, directory: str, generation: int,
                      members: Sequence[str], *, timeout: float,
                      clock: Callable[[], float]) -> None:
  """A barrier through files: every member closed its elastic port."""
  def path(name):
    return os.path.join(directory, f"ready-{generation:06d}-{name}")
  with open(path(task_name), "w"):
    pass
  deadline = clock() + timeout
  while True:
    missing = [m for m in members if not os.path.exists(path(m))]
    if not missing:
      return
    if clock() >= deadline:
      raise errors.PeerLost(f"--min_workers: members of round {generation} "
                            f"not ready within {timeout:.0f} s", missing)
    time.sleep(_POLL_S)


def _members_task(task: cluster_lib.Task, members: list) -> cluster_lib.Task:
  """This task in the cluster of ``members``: the original cluster when it
  is whole, else the members as workers in rank order (the first is the
  chief)."""
  if members == members_of(task.cluster):
    return task
  addresses = []
  for name in members:
    kind, index = name.rsplit("-", 1)
    addresses.append(task.cluster[kind][int(index)])
  return cluster_lib.make_task({"worker": tuple(addresses)}, "worker",
                               members.index(task.name))


def agree(task: cluster_lib.Task, *, min_workers: int, model_dir: str,
          batch_size: int, timeout: float,
          clock: Callable[[], float] = time.monotonic) -> Optional[Membership]:
  """One round (the module docstring): the members this task trains with;
  None when it asked to join and the job finished meanwhile.

  Raises:
    PeerLost: fewer than ``min_workers`` answered, no record came, a
      member never got ready, or the record leaves this task out.
  """
  directory = _records_dir(model_dir)
  os.makedirs(directory, exist_ok=True)
  generation = latest_generation(directory) + 1  # read before answering
  with preflight.answering(task, timeout=timeout) as heard_from:
    record = _wait_for_record(
        task, directory, generation, heard_from, min_workers=min_workers,
        step=lambda: checkpoint_step(model_dir),
        result_path=os.path.join(model_dir, hosting.RESULT_FILE),
        timeout=timeout, clock=clock)
  if record is None:
    console.info(f"{task.name}: the job finished before it could take this "
                 "task in; exiting")
    return None
  members = list(record["members"])
  if task.name not in members:
    raise errors.PeerLost(
        f"{task.name}: the job regrouped without this task (round "
        f"{generation}: {', '.join(members)})",
        what_next="it is taken in again at the next round (a restart)")
  _wait_until_ready(task.name, directory, generation, members,
                    timeout=timeout, clock=clock)
  full = len(members_of(task.cluster))
  if len(members) < full:
    console.info(f"--min_workers={min_workers}: training on {len(members)} "
                 f"of {full} workers ({', '.join(members)}) from step "
                 f"{record['step']}; per-replica batch "
                 f"{batch_size * full // len(members)}, global batch "
                 "unchanged")
  return Membership(task=_members_task(task, members),
                    batch_size=batch_size * full // len(members),
                    generation=generation)


def regroup(reason: str, *, executable: str, argv: Sequence[str],
            environ) -> None:
  """Re-executes this task with its original command and environment (the
  full TF_CONFIG): a new round. Does not return."""
  console.info(f"{reason}; --min_workers: regrouping (this task starts "
               "again and waits for the others)")
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(executable, list(argv), dict(environ))
