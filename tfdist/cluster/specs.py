"""Cluster specs and TF_CONFIG: load, validate, build, read.

A cluster spec is a JSON file in the shape of TF_CONFIG's ``cluster`` object::

    {"chief": ["127.0.0.1:20000"], "worker": ["127.0.0.1:20001"], "ps": [...]}

This module imports no TensorFlow: every check here runs in milliseconds, so a
bad spec or TF_CONFIG is reported before the 4 s TensorFlow import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Mapping, Optional

from tfdist.errors import ConfigError

# The task types TensorFlow's distribution strategies know. "evaluator" is a
# side task: it reads checkpoints and never joins the training cluster.
TASK_TYPES = ("chief", "worker", "ps", "evaluator")
# Task types that may appear at most once.
_SINGLETONS = ("chief", "evaluator")
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$|^\[[0-9A-Fa-f:]+\]$")


@dataclasses.dataclass(frozen=True)
class Task:
  """One task of a cluster: its type, index and the cluster it belongs to."""
  type: str
  index: int
  cluster: Mapping[str, tuple]

  @property
  def name(self) -> str:
    """``worker-1``: how logs and messages name this task."""
    return f"{self.type}-{self.index}"

  @property
  def address(self) -> str:
    return self.cluster[self.type][self.index]

  @property
  def is_chief(self) -> bool:
    """The task that writes checkpoints, summaries and exports.

    TensorFlow's rule: the chief if the cluster has one, else worker 0.
    """
    if "chief" in self.cluster:
      return self.type == "chief"
    return self.type == "worker" and self.index == 0


def split_address(address: str, *, where: str) -> tuple[str, int]:
  """Splits ``host:port`` into its parts; raises ConfigError naming ``where``."""
  if not isinstance(address, str):
    raise ConfigError(f"{where}: address {address!r} is not a string; "
                      "write it as \"host:port\", e.g. \"127.0.0.1:20000\"")
  host, sep, port = address.rpartition(":")
  if not sep or not host or not port.isdigit():
    raise ConfigError(f"{where}: address {address!r} has no port; "
                      "write it as \"host:port\", e.g. \"127.0.0.1:20000\"")
  if not _HOST_RE.match(host):
    raise ConfigError(f"{where}: address {address!r} has an invalid host "
                      f"{host!r}; use a hostname, an IPv4 address or [IPv6]")
  port_number = int(port)
  if port_number > 65535:
    raise ConfigError(f"{where}: address {address!r} has port {port_number}, "
                      "above 65535; pick a port from 1 to 65535")
  return host, port_number


def validate_cluster(cluster: object, *, where: str = "cluster") -> dict:
  """Checks a cluster dict and returns it normalised (lists become tuples).

  Args:
    cluster: the parsed JSON, e.g. ``{"worker": ["127.0.0.1:20001"]}``.
    where: names the source in error messages (a file path, "TF_CONFIG").

  Raises:
    ConfigError: with one line naming the problem and the fix.
  """
  if not isinstance(cluster, dict):
    raise ConfigError(f"{where}: the cluster must be a JSON object like "
                      "{\"worker\": [\"127.0.0.1:20001\"]}, got "
                      f"{type(cluster).__name__}")
  if not cluster:
    raise ConfigError(f"{where}: the cluster is empty; list at least one "
                      "worker, e.g. {\"worker\": [\"127.0.0.1:20001\"]}")
  normalised = {}
  seen = {}
  for task_type, addresses in cluster.items():
    if task_type not in TASK_TYPES:
      raise ConfigError(f"{where}: unknown task type {task_type!r}; "
                        f"use {', '.join(TASK_TYPES)}")
    if not isinstance(addresses, list) or not addresses:
      raise ConfigError(f"{where}: {task_type!r} must be a non-empty list of "
                        "\"host:port\" strings")
    if task_type in _SINGLETONS and len(addresses) > 1:
      raise ConfigError(f"{where}: {len(addresses)} {task_type} tasks; a "
                        f"cluster has at most one {task_type} (make the others "
                        "workers)")
    for index, address in enumerate(addresses):
      task_name = f"{task_type}-{index}"
      host, port = split_address(address, where=f"{where}: {task_name}")
      # Port 0 means "pick a free port at launch"; many tasks may ask for it.
      if port != 0:
        if address in seen:
          raise ConfigError(f"{where}: {task_name} and {seen[address]} both "
                            f"use {address}; give each task its own port")
        seen[address] = task_name
    normalised[task_type] = tuple(addresses)
  if "chief" not in normalised and "worker" not in normalised:
    raise ConfigError(f"{where}: no chief and no worker; a cluster needs at "
                      "least one task that trains")
  return normalised


def load_spec(path: str) -> dict:
  """Reads and validates a cluster spec JSON file."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError as e:
    raise ConfigError(f"cluster spec {path}: cannot read it ({e.strerror}); "
                      "check the path, e.g. cluster_specs/two_workers.json")
  try:
    cluster = json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(f"cluster spec {path}: not valid JSON ({e.msg} at line "
                      f"{e.lineno} column {e.colno})")
  return validate_cluster(cluster, where=f"cluster spec {path}")


def loopback_cluster(workers: int, ps: int = 0) -> dict:
  """A cluster of ``workers`` workers on this machine (and, with ``ps``
  parameter servers, a chief to coordinate them), every port 0: free ports
  picked at launch. What the launcher's ``--workers``/``--ps`` start, with
  no spec file."""
  for name, value, least in (("--workers", workers, 1), ("--ps", ps, 0)):
    if value < least:
      raise ConfigError(f"{name}={value}: must be at least {least}")
  cluster = {"worker": ["127.0.0.1:0"] * workers}
  if ps:
    cluster = {"chief": ["127.0.0.1:0"], **cluster,
               "ps": ["127.0.0.1:0"] * ps}
  return validate_cluster(cluster, where="--workers/--ps")


def has_unassigned_ports(cluster: Mapping[str, tuple]) -> bool:
  """True when some address asks for a port to be picked at launch (port 0)."""
  return any(split_address(a, where="cluster")[1] == 0
             for addresses in cluster.values() for a in addresses)


def assign_ports(cluster: Mapping[str, tuple], pick_port, *,
                 all_ports: bool = False) -> dict:
  """Returns a copy of ``cluster`` with port 0 (or every port) replaced.

  Args:
    cluster: a validated cluster.
    pick_port: a callable returning a free port, e.g. portpicker's.
    all_ports: replace every port, not only 0 (``--free_ports``: run a
      shipped spec when its fixed ports are taken).
  """
  assigned = {}
  for task_type, addresses in cluster.items():
    new = []
    for address in addresses:
      host, port = split_address(address, where=task_type)
      if port == 0 or all_ports:
        port = pick_port()
      new.append(f"{host}:{port}")
    assigned[task_type] = tuple(new)
  return assigned


def spec_digest(cluster: Mapping[str, tuple]) -> str:
  """A short hash of the cluster: tasks compare it to detect mixed specs."""
  canonical = json.dumps({k: list(v) for k, v in sorted(cluster.items())},
                         sort_keys=True)
  return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def make_task(cluster: Mapping[str, tuple], task_type: str, index: object, *,
              where: str = "task") -> Task:
  """Validates a (type, index) against a cluster and returns the Task."""
  if task_type not in cluster:
    raise ConfigError(f"{where}: task type {task_type!r} is not in the cluster "
                      f"(it has {', '.join(cluster)}); pick one of those")
  if isinstance(index, bool) or not isinstance(index, int):
    raise ConfigError(f"{where}: task index {index!r} is not an integer; "
                      "write it as a number, e.g. \"index\": 0")
  count = len(cluster[task_type])
  if not 0 <= index < count:
    raise ConfigError(f"{where}: {task_type} index {index} is out of range: "
                      f"the cluster has {count} {task_type} task(s), indices "
                      f"0 to {count - 1}")
  return Task(type=task_type, index=index, cluster=cluster)


def make_tf_config(cluster: Mapping[str, tuple], task_type: str,
                   index: int) -> str:
  """The TF_CONFIG JSON string of one task of a validated cluster."""
  make_task(cluster, task_type, index)
  return json.dumps({"cluster": {k: list(v) for k, v in cluster.items()},
                     "task": {"type": task_type, "index": index}})


def parse_tf_config(text: Optional[str]) -> Optional[Task]:
  """Parses and validates a TF_CONFIG string; None when it is unset or empty.

  Raises:
    ConfigError: TF_CONFIG is not JSON, lacks ``cluster`` or ``task``, or
      names a task the cluster does not have.
  """
  if text is None or not text.strip():
    return None
  try:
    config = json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(f"TF_CONFIG is not valid JSON ({e.msg} at column "
                      f"{e.colno}); print one with: python -m tfdist.tfconfig "
                      "SPEC TYPE INDEX")
  if not isinstance(config, dict):
    raise ConfigError("TF_CONFIG must be a JSON object with \"cluster\" and "
                      "\"task\"; print one with: python -m tfdist.tfconfig "
                      "SPEC TYPE INDEX")
  for key in ("cluster", "task"):
    if key not in config:
      raise ConfigError(f"TF_CONFIG has no \"{key}\"; it needs both "
                        "\"cluster\" and \"task\" (python -m tfdist.tfconfig "
                        "SPEC TYPE INDEX prints a complete one)")
  cluster = validate_cluster(config["cluster"], where="TF_CONFIG")
  if has_unassigned_ports(cluster):
    raise ConfigError("TF_CONFIG: an address has port 0; every task needs its "
                      "real port (python -m tfdist.launch fills in port 0 for "
                      "you)")
  task = config["task"]
  if not isinstance(task, dict) or "type" not in task or "index" not in task:
    raise ConfigError("TF_CONFIG: \"task\" must look like {\"type\": "
                      "\"worker\", \"index\": 0}")
  return make_task(cluster, task["type"], task["index"], where="TF_CONFIG")


def task_from_environ(environ: Mapping[str, str]) -> Optional[Task]:
  """The Task described by ``environ["TF_CONFIG"]``, or None when unset."""
  return parse_tf_config(environ.get("TF_CONFIG"))


def training_cluster(task: Task) -> dict:
  """The cluster TensorFlow sees: without the evaluator, which never trains."""
  return {k: list(v) for k, v in task.cluster.items() if k != "evaluator"}
