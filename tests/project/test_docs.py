"""The README and the guides: the site builds strictly, and every command
block marked runnable runs (tests/runnable.py).

``mkdocs build --strict`` fails on a broken link or anchor, a page left out
of the navigation and a link outside the docs (mkdocs.yml's validation);
the flag reference is generated from the settings' fields by
mkdocs_hooks.py, so a flag that loses its help or a page that loses its
marker shows here too.
"""

import glob
import os
import sys

import pytest

from conftest import REPO, child_env, run
import runnable

GUIDES = [os.path.join(REPO, "README.md"),
          *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]
# What the README's and the guides' blocks may take each (a training run of
# a few seconds, a launcher job of two or three tasks).
BLOCK_TIMEOUT = 240


def test_the_site_builds_strictly(tmp_path):
  done = run([sys.executable, "-m", "mkdocs", "build", "--strict",
              f"--site-dir={tmp_path / 'site'}"], timeout=180)
  assert done.returncode == 0, done.stderr[-3000:]
  flags = (tmp_path / "site" / "flags" / "index.html").read_text()
  # Generated: every field of both settings classes is a row.
  for flag in ("--strategy", "--checkpoint_every_steps", "--train_files",
               "--image_shape"):
    assert flag in flags


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in GUIDES if runnable.blocks(p)],
                         ids=os.path.basename)
def test_the_runnable_blocks_run(path, tmp_path):
  """A guide's blocks, in order, from the repository's root (their /tmp/
  is the test's own)."""
  env = child_env(TFDS_DATA_DIR=tmp_path / "no-tfds")
  for block in runnable.blocks(path):
    done = runnable.run_block(block, cwd=REPO, env=env, tmp=str(tmp_path),
                              timeout=BLOCK_TIMEOUT)
    assert done.returncode == 0, (block.name, done.stdout[-3000:],
                                  done.stderr[-3000:])
    assert "Traceback" not in done.stderr, (block.name, done.stderr[-3000:])
