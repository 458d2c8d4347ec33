"""Cluster specs and TF_CONFIG: every shipped spec is valid, bad ones are not."""

import glob
import json
import os
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, SPECS, child_env
from tfdist.cluster import specs
from tfdist.errors import ConfigError
from tfdist.training import strategy

SHIPPED = sorted(glob.glob(os.path.join(SPECS, "*.json")))


def test_there_are_specs_for_each_topology():
  names = {os.path.basename(p) for p in SHIPPED}
  assert {"two_workers.json", "chief_two_workers_ps.json",
          "chief_two_workers_evaluator.json"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_shipped_spec_is_valid_and_on_loopback(path):
  spec = specs.load_spec(path)
  for addresses in spec.values():
    for address in addresses:
      host, _ = specs.split_address(address, where=path)
      # Servers are unauthenticated: shipped local specs stay on loopback.
      assert host in ("127.0.0.1", "localhost", "[::1]"), address
  # Every task of the spec gets a TF_CONFIG that parses back to itself.
  for task_type, addresses in spec.items():
    for index in range(len(addresses)):
      task = specs.parse_tf_config(
          specs.make_tf_config(spec, task_type, index))
      assert (task.type, task.index) == (task_type, index)
      assert task.address == addresses[index]


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_shipped_spec_fits_a_strategy(path):
  spec = specs.load_spec(path)
  fitting = []
  for name in strategy.STRATEGIES:
    try:
      for task_type in spec:
        strategy.plan_role(name, specs.make_task(spec, task_type, 0))
      fitting.append(name)
    except ConfigError:
      pass
  assert fitting, f"{path} fits no strategy"


def test_chief_is_worker_zero_without_a_chief():
  spec = specs.validate_cluster({"worker": ["a:1", "b:2"]})
  assert specs.make_task(spec, "worker", 0).is_chief
  assert not specs.make_task(spec, "worker", 1).is_chief
  with_chief = specs.validate_cluster({"chief": ["c:3"], "worker": ["a:1"]})
  assert not specs.make_task(with_chief, "worker", 0).is_chief
  assert specs.make_task(with_chief, "chief", 0).is_chief


def test_assign_ports_fills_port_zero_only():
  spec = specs.validate_cluster({"worker": ["127.0.0.1:0", "127.0.0.1:0"],
                                   "ps": ["127.0.0.1:5000"]})
  ports = iter([41001, 41002, 41003])
  assigned = specs.assign_ports(spec, lambda: next(ports))
  assert assigned == {"worker": ("127.0.0.1:41001", "127.0.0.1:41002"),
                      "ps": ("127.0.0.1:5000",)}
  assert not specs.has_unassigned_ports(assigned)


BAD_TF_CONFIGS = [
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', 'no "task"'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "ps", '
     '"index": 0}}', "task type 'ps' is not in the cluster"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", '
     '"index": 1}}', "index 1 is out of range"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", '
     '"index": "0"}}', "is not an integer"),
    ('{"cluster": {"chief": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": '
     '{"type": "chief", "index": 0}}', "at most one chief"),
    ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", '
     '"index": 0}}', "has no port"),
    ('{"cluster": {"worker": ["127.0.0.1:7", "127.0.0.1:7"]}, "task": '
     '{"type": "worker", "index": 0}}', "both use 127.0.0.1:7"),
    ('{"cluster": {"master": ["127.0.0.1:7"]}, "task": {"type": "master", '
     '"index": 0}}', "unknown task type 'master'"),
    ('{"cluster": {"worker": ["127.0.0.1:0"]}, "task": {"type": "worker", '
     '"index": 0}}', "port 0"),
]


@pytest.mark.parametrize("text,message", BAD_TF_CONFIGS)
def test_bad_tf_config_is_one_clear_line(text, message):
  with pytest.raises(ConfigError) as raised:
    specs.parse_tf_config(text)
  assert message in str(raised.value)
  assert "\n" not in str(raised.value)


def test_unset_tf_config_means_no_task():
  assert specs.parse_tf_config(None) is None
  assert specs.parse_tf_config("  ") is None


@pytest.mark.parametrize("cluster_dict,message", [
    ({"worker": ["127.0.0.1:1"]}, "needs a chief, at least one worker and at "
     "least one ps task; the cluster has no chief and no ps"),
    ({"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}, "has no ps"),
    ({"ps": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}, "has no chief"),
])
def test_ps_strategy_needs_chief_and_ps(cluster_dict, message):
  spec = specs.validate_cluster(cluster_dict)
  with pytest.raises(ConfigError, match=message):
    strategy.plan_role("ps", specs.make_task(spec, "worker", 0))


def test_roles():
  spec = specs.validate_cluster({
      "chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"],
      "ps": ["127.0.0.1:3"], "evaluator": ["127.0.0.1:4"]})
  roles = {t: strategy.plan_role("ps", specs.make_task(spec, t, 0))
           for t in spec}
  assert roles == {"chief": "train", "worker": "host", "ps": "host",
                   "evaluator": "evaluate"}
  with pytest.raises(ConfigError, match="has ps tasks"):
    strategy.plan_role("multiworker", specs.make_task(spec, "chief", 0))
  with pytest.raises(ConfigError, match="trains on one machine"):
    strategy.plan_role("mirrored", specs.make_task(spec, "chief", 0))
  assert strategy.plan_role("multiworker", None) == "train"


def _tfconfig(*args):
  return subprocess.run([sys.executable, "-m", "tfdist.tfconfig", *args],
                        cwd=REPO, env=child_env(), capture_output=True,
                        text=True, timeout=60)


def test_tfconfig_command_prints_each_task():
  spec = os.path.join(SPECS, "chief_two_workers_ps.json")
  done = _tfconfig(spec, "worker", "1")
  assert done.returncode == 0, done.stderr
  config = json.loads(done.stdout)
  assert config["task"] == {"type": "worker", "index": 1}
  assert config["cluster"] == json.load(open(spec))
  exported = _tfconfig(spec, "ps", "0", "--export")
  assert exported.returncode == 0, exported.stderr
  # The line works when pasted into a shell.
  shell = subprocess.run(
      ["bash", "-c", exported.stdout + 'printf %s "$TF_CONFIG"'],
      capture_output=True, text=True, timeout=30)
  assert json.loads(shell.stdout)["task"] == {"type": "ps", "index": 0}
  assert exported.stdout.startswith("export TF_CONFIG=")
  assert shlex.split(exported.stdout)[1].startswith("TF_CONFIG={")


@pytest.mark.parametrize("args,message", [
    (["two_workers.json", "worker", "2"], "index 2 is out of range"),
    (["two_workers.json", "chief", "0"], "not in the cluster"),
    (["two_workers.json", "worker", "x"], "not an integer"),
    (["missing.json", "worker", "0"], "cannot read it"),
])
def test_tfconfig_command_bad_input(args, message):
  done = _tfconfig(os.path.join(SPECS, args[0]), *args[1:])
  assert done.returncode == 2
  assert done.stdout == ""
  assert done.stderr.startswith("error: ") and message in done.stderr
  assert len(done.stderr.strip().splitlines()) == 1


def test_bad_spec_files(tmp_path):
  cases = {
      "not_json.json": ("{", "not valid JSON"),
      "list.json": ('["127.0.0.1:1"]', "must be a JSON object"),
      "no_port.json": ('{"worker": ["localhost"]}', "has no port"),
      "empty.json": ("{}", "is empty"),
      "ps_only.json": ('{"ps": ["127.0.0.1:1"]}', "no chief and no worker"),
      "big_port.json": ('{"worker": ["127.0.0.1:70000"]}', "above 65535"),
  }
  for name, (text, message) in cases.items():
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
      specs.load_spec(str(path))
