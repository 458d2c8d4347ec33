"""The command blocks of the guides that are marked runnable, run as tests.

A guide marks a block runnable with the line ``<!-- runnable -->`` (invisible
once rendered) right before a fenced ``sh`` block; the block then runs in a
test, in bash with ``set -euo pipefail``, so a guide's command that stops
working fails the suite. A marker may name replacements that keep a long
command small in the test: ``<!-- runnable: --epochs=5 => --epochs=1;
multiworker => multiworker --steps_per_epoch=50 -->`` (``OLD => NEW`` pairs
separated by ``;``; the guide shows OLD). An empty NEW (``OLD =>``) leaves
a command out of the test where an earlier block's replacement already ran
it. Every ``/tmp/`` of a block is the test's own temporary directory. The
blocks of one file run in order, in one working directory, so a later
block may use what an earlier one wrote.

A block that launches a shipped cluster spec (``tfdist.cluster.launch
--cluster_spec=...``) runs with ``--free_ports`` added: the specs' fixed
ports are the reader's, and several test processes run at once.
"""

import dataclasses
import os
import re
import subprocess
from typing import List

MARKER = re.compile(r"^<!-- runnable(: (?P<replacements>.*))? -->$")
FENCE = re.compile(r"^```(\w*)\s*$")
LAUNCH = re.compile(r"(tfdist\.launch\s+--cluster_spec=\S+)")


@dataclasses.dataclass(frozen=True)
class Block:
  """One runnable block: where it is, and the script the test runs."""
  path: str
  line: int
  script: str

  @property
  def name(self) -> str:
    return f"{os.path.basename(self.path)}:{self.line}"


def blocks(path: str) -> List[Block]:
  """The runnable blocks of the Markdown file ``path``, in order."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  found = []
  for index, line in enumerate(lines):
    marker = MARKER.match(line.strip())
    if not marker:
      continue
    fence = FENCE.match(lines[index + 1]) if index + 1 < len(lines) else None
    if not fence or fence.group(1) not in ("sh", "bash"):
      raise ValueError(f"{path}:{index + 1}: a runnable marker must stand "
                       "right before a ```sh block")
    end = next(i for i in range(index + 2, len(lines))
               if lines[i].strip() == "```")
    script = "\n".join(lines[index + 2:end])
    for replacement in (marker.group("replacements") or "").split(";"):
      if not replacement.strip():
        continue
      old, arrow, new = (part.strip() for part in
                         replacement.partition(" =>"))
      if not arrow:
        raise ValueError(f"{path}:{index + 1}: a replacement is OLD => NEW, "
                         f"not {replacement.strip()!r}")
      if old not in script:
        raise ValueError(f"{path}:{index + 1}: the marker replaces {old!r}, "
                         "which the block does not have")
      script = script.replace(old, new)
    found.append(Block(path, index + 3, script))
  return found


def run_block(block: Block, *, cwd: str, env: dict, timeout: float,
              tmp: str = "/tmp") -> subprocess.CompletedProcess:
  """Runs one block in bash, its ``/tmp/`` in ``tmp``; the whole process
  group is killed at the timeout (the test then fails with the output so
  far)."""
  from conftest import run  # pylint: disable=g-import-not-at-top
  script = LAUNCH.sub(r"\1 --free_ports",
                      block.script.replace("/tmp/", tmp.rstrip("/") + "/"))
  return run(["bash", "-c", "set -euo pipefail\n" + script],
             cwd=cwd, env=env, timeout=timeout)
