"""tfdist.bench.straggler's duty cycle, and the bad input of the commands
that measure the bench's straggler and data figures.

The straggler figure itself runs in the bench's smoke test
(tests/bench/test_bench.py); these need no TensorFlow.
"""

import subprocess
import sys
import time

import pytest

from conftest import child_env, run
from tfdist.bench import straggler

# A process that only burns CPU until it is killed.
_BUSY = "while True: pass"


def _state(pid: int) -> str:
  """The process state letter of proc(5) (T: stopped)."""
  with open(f"/proc/{pid}/stat") as f:
    return f.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_duty_cycle_slows_a_process_and_leaves_it_running():
  busy = subprocess.Popen([sys.executable, "-c", _BUSY], env=child_env(),
                          start_new_session=True)
  try:
    duty = straggler.DutyCycle(busy.pid, running_ms=25, stopped_ms=75)
    duty.start()
    # Measure over 20 completed cycles (2 s at 100 ms a cycle).
    deadline = time.monotonic() + 30
    while duty.cycles < 20 and time.monotonic() < deadline:
      time.sleep(0.05)  # polling interval, not synchronisation
    measured = duty.stop()
    assert _state(busy.pid) != "T"  # stop() leaves it running
    assert measured["cycles"] >= 20
    # It ran for a fraction of the time, and used CPU only then.
    assert 0 < measured["duty_cycle"] < 0.6
    assert 0 < measured["cpu_seconds_per_second"] < 0.7
    assert busy.poll() is None
  finally:
    busy.kill()
    busy.wait(timeout=10)


@pytest.mark.timeout(30)
def test_duty_cycle_of_a_process_that_exits_ends_quietly():
  done = subprocess.Popen([sys.executable, "-c", "pass"], env=child_env())
  done.wait(timeout=20)
  duty = straggler.DutyCycle(done.pid, running_ms=5, stopped_ms=5)
  duty.start()
  measured = duty.stop()
  assert measured["cycles"] == 0 and measured["cpu_seconds_per_second"] is None


def _fails_in_one_line(args: list, out_dir, message: str) -> None:
  """``args`` exits 2 with one ``error:`` line starting with ``message``
  and writes nothing into ``out_dir``."""
  result = run([sys.executable, "-m", *args, f"--out_dir={out_dir}"],
               timeout=60)
  assert result.returncode == 2, result.stderr
  assert result.stderr.startswith(f"error: {message}")
  assert len(result.stderr.strip().splitlines()) == 1
  assert not out_dir.exists()


def test_straggler_bad_mnist_dir_is_one_line(tmp_path):
  _fails_in_one_line(["tfdist.bench.straggler",
                      f"--mnist_dir={tmp_path / 'nope'}"],
                     tmp_path / "out", "--mnist_dir=")


def test_bench_data_memory_outside_full_mode_is_one_line(tmp_path, mnist_dir):
  _fails_in_one_line(["tfdist.bench", "--smoke", "--data_memory",
                      f"--mnist_dir={mnist_dir}"], tmp_path / "out",
                     "--data_memory adds to the data figures of full mode")


def test_data_figures_unknown_part_is_one_line(tmp_path):
  _fails_in_one_line(["tfdist.bench.data_figures", "--parts=decode,speed"],
                     tmp_path / "out",
                     "--parts=decode,speed: use one or more of memory, "
                     "decode, streaming, ps_function_size, comma-separated")
