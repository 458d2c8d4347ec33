"""The house's layering (docs/architecture.md): import-linter's contracts in
setup.cfg pass, they name every module at tfdist's top level, the top level
stays small, and so do modules and functions. Runs without TensorFlow in
~2 s.

A broken contract fails here: an import from tfdist.model into
tfdist.training (or any import a contract forbids, function-level and
type-only ones included) is reported with its chain of imports.
"""

import ast
import configparser
import os
import subprocess
import sys

from conftest import REPO

SETUP_CFG = os.path.join(REPO, "setup.cfg")
# __init__, __main__, the entry points and the base.
MAX_TOP_LEVEL_MODULES = 12
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 79  # under 80


def _top_level() -> set:
  """tfdist's top-level modules and packages (those holding Python)."""
  names = set()
  for name in os.listdir(os.path.join(REPO, "tfdist")):
    path = os.path.join(REPO, "tfdist", name)
    if name.endswith(".py") and name != "__init__.py":
      names.add(name[:-3])
    elif os.path.isfile(os.path.join(path, "__init__.py")):
      names.add(name)
  return names


def test_import_contracts_are_kept():
  lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
  done = subprocess.run([lint, "--no-cache", "--no-logo", SETUP_CFG],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stdout + done.stderr
  assert "0 broken" in done.stdout, done.stdout


def test_layers_name_every_top_level_module():
  """A module the layers do not name would escape every rule."""
  config = configparser.ConfigParser()
  config.read(SETUP_CFG)
  assert config.getboolean("importlinter", "exclude_type_checking_imports") \
      is False
  layers = config["importlinter:contract:layers"]["layers"]
  named = {part.strip() for line in layers.split("\n")
           for part in line.replace(":", "|").split("|") if part.strip()}
  assert _top_level() - {"datasets"} == named


def test_top_level_stays_small():
  files = [n for n in os.listdir(os.path.join(REPO, "tfdist"))
           if n.endswith(".py")]
  assert len(files) <= MAX_TOP_LEVEL_MODULES, sorted(files)


def test_modules_and_functions_stay_small():
  too_long = []
  for directory in ("tfdist", "trainers"):
    for root, _, names in os.walk(os.path.join(REPO, directory)):
      for name in (n for n in names if n.endswith(".py")):
        path = os.path.join(root, name)
        with open(path) as f:
          text = f.read()
        where = os.path.relpath(path, REPO)
        if text.count("\n") > MAX_MODULE_LINES:
          too_long.append(f"{where}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
              too_long.append(f"{where}:{node.lineno} {node.name}: {lines}")
  assert not too_long, too_long
