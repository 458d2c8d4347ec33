"""One command, ``tfdist``: every subcommand is its ``python -m`` form.

Runs the console script that ``pip install`` put beside the suite's
interpreter (the ``python -m tfdist`` form where it is not installed) and
each ``python -m`` command: every one answers ``--help`` with status 0.
"""

import os
import sys

import pytest

from conftest import SPECS, run
from tfdist import __main__ as command

SCRIPT = os.path.join(os.path.dirname(sys.executable), "tfdist")


def _tfdist(*args):
  program = ([SCRIPT] if os.path.exists(SCRIPT)
             else [sys.executable, "-m", "tfdist"])
  return run([*program, *args], timeout=60)


def test_help_lists_every_subcommand_with_one_line():
  done = _tfdist("--help")
  assert done.returncode == 0, done.stderr
  listed = [line.split()[0] for line in done.stdout.splitlines()
            if line.startswith("  ")]
  assert listed == list(command.COMMANDS)


@pytest.mark.parametrize("name", list(command.COMMANDS))
def test_every_subcommand_and_its_module_answer_help(name):
  module, _ = command.COMMANDS[name]
  for args in ([name, "--help"], None):
    done = (_tfdist(*args) if args
            else run([sys.executable, "-m", module, "--help"], timeout=60))
    assert done.returncode == 0, (args or module, done.stderr[-2000:])
    assert "usage" in (done.stdout + done.stderr).lower(), done.stdout[:500]


def test_a_subcommand_runs_as_its_module_does(tmp_path):
  spec = os.path.join(SPECS, "two_workers.json")
  via_command = _tfdist("tfconfig", spec, "worker", "1")
  via_module = run([sys.executable, "-m", "tfdist.tfconfig", spec, "worker",
                    "1"], timeout=60)
  assert via_command.returncode == via_module.returncode == 0
  assert via_command.stdout == via_module.stdout


def test_an_unknown_subcommand_is_one_error_line():
  done = _tfdist("nope")
  assert done.returncode == 2
  assert done.stderr.splitlines() == [
      "error: no command 'nope': use one of " + ", ".join(command.COMMANDS)
      + " (tfdist --help)"]
