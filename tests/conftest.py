"""Shared test helpers: run real processes with deadlines, read their JSON.

The tests are grouped by the concern they test, as tfdist's packages are
(tests/cluster, liveness, training, records, serving, k8s, bench and
project: the docs, the examples and the layering); the helpers they share
and the programs their jobs run are here, in tests/.

Every child process runs with a hard timeout and is killed (its whole
process group) when the test ends, passed or not.

The fast tier (``python -m pytest tests -m "not slow"``) leaves out every
test marked ``slow``: those that start TensorFlow jobs or train, marked
where they are defined, and every test that uses a fixture of
SLOW_FIXTURES (a job shared by several tests).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import machine_share

# A test module may use another's helpers by its name, as when they shared
# one folder (test_export: test_tables' table), wherever each concern keeps
# it.
sys.path.extend(sorted(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), d.name)
    for d in os.scandir(os.path.dirname(os.path.abspath(__file__)))
    if d.is_dir() and d.name not in ("data", "__pycache__")))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Test modules import TensorFlow as the suite's processes collect them:
# with the collector paused, as tfdist's entry points do (tfdist.tf_startup).
from tfdist import tf_startup  # pylint: disable=g-import-not-at-top,wrong-import-position
tf_startup.collect_after_tensorflow_import(os.environ)

# The real MNIST sample bundled in the package: the suite needs nothing
# outside the repository.
MNIST_DIR = os.path.join(REPO, "tfdist", "datasets", "mnist")
SPECS = os.path.join(REPO, "cluster_specs")
# Fixtures that start TensorFlow jobs or train, shared by the tests of a
# module: a test that uses one is slow.
SLOW_FIXTURES = frozenset({
    "mnist_records", "mirrored_run", "multiworker_launched", "ps_launched",
    # test_bench, test_data_window, test_examples, test_export
    "smoke", "raw_shards", "example", "diabetes_example", "ps_job",
    "multiworker_job",
    # test_checkpoints, test_fused_step, test_inception
    "resumed_mirrored", "mirrored_runs", "mirrored", "multiworker", "ps",
    "model_checks",
    # test_launch, test_sharding, test_your_model
    "cpu_load", "stalled_job", "cancer",
    # test_export (a table's), test_serving
    "table_job", "table_exports", "digit_folder"})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  """Setup, call and teardown of a test, on a machine shared with the other
  test process (tests/machine_share.py)."""
  del nextitem
  exclusive = item.get_closest_marker("exclusive") is not None
  with machine_share.held(exclusive=exclusive):
    yield


# The jobs below made once per test process (session fixtures) and asserted
# by several modules, by the test group of the modules that use them.
SHARED_JOBS = {"mnist_records": "mnist_records",
               "mirrored_run": "launched_jobs",
               "multiworker_launched": "launched_jobs",
               "ps_launched": "launched_jobs"}


def _groups(items) -> dict:
  """{module name: its test group}: the module's own name, or the group of
  the shared jobs it uses (each module uses those of one group at most)."""
  uses = {}
  for item in items:
    uses.setdefault(item.module.__name__, set()).update(
        SHARED_JOBS.keys() & set(item.fixturenames))
  groups = {}
  for module, fixtures in uses.items():
    shared = {SHARED_JOBS[name] for name in fixtures}
    if len(shared) > 1:
      raise pytest.UsageError(f"{module} uses the shared jobs of groups "
                              f"{sorted(shared)}: merge them in SHARED_JOBS")
    groups[module] = shared.pop() if shared else module.rsplit(".", 1)[-1]
  return groups


# The test groups, longest first: xdist hands out groups in collection
# order (setup.cfg: --no-loadscope-reorder), so the long ones start at once
# and the short ones fill the ends. By their worker-seconds in two runs
# from a fresh clone (2026-12-07), from test_fault_tolerance's 266 to 317
# down to test_peer_watch's 10; the groups left out take a few seconds. An
# order gone stale makes the suite slower, never wrong.
LONGEST_FIRST = (
    "test_fault_tolerance", "launched_jobs", "test_bench", "test_inception",
    "test_docs", "test_no_hang", "test_k8s", "mnist_records",
    "test_your_model", "test_examples", "test_checkpoints", "test_elastic",
    "test_liveness", "test_sharding", "test_launch", "test_bad_input",
    "test_preflight", "test_data_window", "test_serving", "test_data_folders",
    "test_data_errors", "test_tables", "test_peer_watch")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
  groups = _groups(items)
  rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(groups[item.module.__name__],
                                       len(rank)))  # stable: within, as found
  for item in items:
    if SLOW_FIXTURES & set(item.fixturenames):
      item.add_marker(pytest.mark.slow)
    # -n 3 --dist loadgroup (setup.cfg): a module's tests stay together, so
    # its shared jobs are made once, and so do the modules sharing a job of
    # SHARED_JOBS. Three tests run at once whatever their modules, so a test
    # that times deadlines or signals derives its bounds from what it
    # measured, never from an idle machine.
    item.add_marker(pytest.mark.xdist_group(groups[item.module.__name__]))


def pytest_xdist_node_collection_finished(node, ids):
  """The groups above keep a module's shared jobs made once; every test
  has one, so a test process
  whose test ids carry none lost them (pytest 9.2 with pytest-xdist 3.8,
  pytest-xdist#1386): the run stops at once instead of running ungrouped."""
  if node.config.getvalue("dist") == "loadgroup" and ids and not any(
      "@" in test_id for test_id in ids):
    node.config.pluginmanager.get_plugin("terminalreporter").write_line(
        f"error: pytest {pytest.__version__} drops pytest-xdist's --dist "
        f"loadgroup groups (pytest-xdist#1386): install the test extras' "
        "pytest (pip install -e '.[test]'), or run with -n 0")
    pytest.exit("the tests' groups were lost", returncode=3)


def child_env(**extra) -> dict:
  """The environment of a child: ours, minus TF_CONFIG, plus ``extra``.

  The interpreter running the suite comes first on PATH, so ``python`` and
  the tools installed beside it (kubernetes-validate) are its own, also
  from a virtual environment that was never activated.
  """
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable),
                                 env.get("PATH", "")])
  env["PYTHONUNBUFFERED"] = "1"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  env.update({k: str(v) for k, v in extra.items()})
  return env


def run(args, *, timeout: float, env=None, cwd=REPO) -> subprocess.CompletedProcess:
  """Runs ``args`` to completion (stdout and stderr captured, as text).

  On timeout the whole process group is killed and the test fails with the
  output so far.
  """
  process = subprocess.Popen(
      args, cwd=cwd, env=env or child_env(), stdin=subprocess.DEVNULL,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      start_new_session=True)
  try:
    out, err = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    out, err = process.communicate()
    pytest.fail(f"{args} did not finish in {timeout} s\nstdout:\n{out[-3000:]}"
                f"\nstderr:\n{err[-3000:]}")
  finally:
    try:
      os.killpg(process.pid, signal.SIGKILL)  # anything it left behind
    except ProcessLookupError:
      pass
  return subprocess.CompletedProcess(args, process.returncode, out, err)


def kill_groups(processes) -> None:
  """SIGKILLs each process's group (it and anything it left behind)."""
  for process in processes:
    try:
      os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass


def wait_for(predicate, what: str, timeout: float = 60) -> None:
  """Polls ``predicate`` until it holds; fails the test after ``timeout`` s.

  For ordering on files or process state (a checkpoint written, a pid
  file present): the condition orders the test, the interval is only how
  often it is looked at.
  """
  deadline = time.monotonic() + timeout
  while not predicate():
    if time.monotonic() > deadline:
      pytest.fail(f"waited {timeout} s for {what}")
    time.sleep(0.05)  # polling interval, not synchronisation


def error_lines(text: str) -> list:
  """The ``error: ...`` lines of a task's output (a failure says it in
  one)."""
  return [line for line in text.splitlines() if line.startswith("error: ")]


def json_lines(text: str, prefix: str = "") -> list:
  """The JSON objects printed on lines of ``text`` (after ``prefix``)."""
  found = []
  for line in text.splitlines():
    if prefix:
      if not line.startswith(prefix):
        continue
      line = line[len(prefix):]
    line = line.strip()
    if line.startswith("{") and line.endswith("}"):
      try:
        found.append(json.loads(line))
      except json.JSONDecodeError:
        pass
  return found


def trainer(module: str, *flags) -> list:
  """The command line of ``python -m trainers.<module> flags...``."""
  return [sys.executable, "-m", f"trainers.{module}", *flags]


def launch(spec: str, command, *launch_flags) -> list:
  """The command line of the launcher running ``command`` on ``spec``,
  with every port replaced by a free one (tests never use fixed ports)."""
  return [sys.executable, "-m", "tfdist.launch", f"--cluster_spec={spec}",
          "--free_ports", *launch_flags, "--", *command]


@pytest.fixture(scope="session")
def mnist_dir():
  if not os.path.isdir(MNIST_DIR):
    pytest.fail(f"real MNIST expected at {MNIST_DIR} (bundled with tfdist)")
  return MNIST_DIR


@pytest.fixture(scope="session")
def mnist_records(mnist_dir, tmp_path_factory):
  """The bundled MNIST converted once to 4 PNG shards per split (shared by
  every test that reads files): (directory, the converter's JSON line, its
  log)."""
  out = str(tmp_path_factory.mktemp("records") / "mnist")
  result = run([sys.executable, "-m", "tfdist.data", "write",
                f"--source={mnist_dir}", f"--out_dir={out}", "--shards=4",
                "--progress_every=5000"], timeout=180)
  assert result.returncode == 0, result.stderr
  return out, json_lines(result.stdout)[-1], result.stderr


# The mirrored trainer's settings shared by the strategy and fused-step
# tests: 2 logical CPU replicas of 100 (a global batch of 200), 2 full epochs
# of the bundled sample (0.910 test accuracy, deterministic from the seed).
MIRRORED_EPOCHS = 2


def train_mirrored(*flags) -> dict:
  """Runs the mirrored trainer on the bundled MNIST; returns its result."""
  done = run(trainer("mnist", "--strategy=mirrored", "--num_cpu_devices=2",
                     f"--mnist_dir={MNIST_DIR}", f"--epochs={MIRRORED_EPOCHS}",
                     "--verbose=0", *flags), timeout=200)
  assert done.returncode == 0, done.stderr[-3000:]
  return json_lines(done.stdout)[-1]


@pytest.fixture(scope="session")
def mirrored_run(mnist_dir, tmp_path_factory):
  """One mirrored run with the default (fused) step, writing a model_dir:
  (result, model_dir). The strategy tests assert what it trained and wrote,
  the fused-step tests compare Keras' step and accumulation with it."""
  del mnist_dir  # checked to exist
  model_dir = tmp_path_factory.mktemp("mirrored_run") / "model"
  return train_mirrored(f"--model_dir={model_dir}"), model_dir


def _launched_and_exported(spec: str, strategy: str, base, *flags) -> dict:
  """The launcher running the trainer under ``strategy`` on ``spec`` for 3
  full epochs, the chief exporting (SavedModel and both TFLite models);
  every task's TMPDIR is ``base``/tmp. Returns its stdout and directories."""
  export_dir, tmp = base / "export", base / "tmp"
  tmp.mkdir()
  done = run(launch(os.path.join(SPECS, spec),
                    trainer("mnist", f"--strategy={strategy}", "--epochs=3",
                            f"--mnist_dir={MNIST_DIR}",
                            f"--export_dir={export_dir}", "--tflite",
                            "--tflite_quantize", *flags)),
             env=child_env(TMPDIR=tmp), timeout=280)
  assert done.returncode == 0, done.stdout[-4000:]
  return {"stdout": done.stdout, "export_dir": export_dir, "tmp": tmp}


# The launched jobs below are each started once and asserted by the strategy
# tests (what they trained, who wrote what, how they ended) and the export
# tests (what the chief exported).

@pytest.fixture(scope="session")
def multiworker_launched(mnist_dir, tmp_path_factory):
  """Two workers (chief: worker 0) with a model_dir and an export."""
  del mnist_dir  # checked to exist
  base = tmp_path_factory.mktemp("multiworker")
  job = _launched_and_exported("two_workers.json", "multiworker", base,
                               f"--model_dir={base / 'model'}")
  return dict(job, model_dir=base / "model")


@pytest.fixture(scope="session")
def ps_launched(mnist_dir, tmp_path_factory):
  """Chief, 2 workers and a ps, the chief exporting the ps's variables."""
  del mnist_dir  # checked to exist
  return _launched_and_exported("chief_two_workers_ps.json", "ps",
                                tmp_path_factory.mktemp("ps"))
