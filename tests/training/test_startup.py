"""What an entry point does before TensorFlow starts (tfdist.tf_startup),
seen in a real process: the import of TensorFlow and tf-keras runs with the
garbage collector paused, and what it made is frozen."""

import sys
import textwrap

import pytest

from conftest import json_lines, run

PROBE = textwrap.dedent("""
    import gc, json, os, sys
    from tfdist import app
    app.prepare_environment()  # what tfdist.main does first
    collections = []
    gc.callbacks.append(lambda phase, info: phase == "start"
                        and collections.append(info["generation"]))
    import tensorflow as tf
    print(json.dumps({
        "collections": len(collections), "frozen": gc.get_freeze_count(),
        "enabled": gc.isenabled(), "tf_keras": "tf_keras" in sys.modules,
        "loader": type(tf.__loader__).__name__}))
""")


@pytest.mark.slow  # imports TensorFlow
@pytest.mark.timeout(120)
def test_tensorflow_imports_with_the_collector_paused_then_frozen():
  done = run([sys.executable, "-c", PROBE], timeout=100)
  assert done.returncode == 0, done.stderr[-3000:]
  [probe] = json_lines(done.stdout)
  # One collection, after the import, before the freeze (658 without the
  # pause, 2026-12-07); about 300,000 objects frozen, the collector back on.
  assert probe["collections"] == 1, probe
  assert probe["frozen"] > 100_000, probe
  assert probe["enabled"] and probe["tf_keras"], probe
  assert probe["loader"] == "SourceFileLoader", probe  # its own, restored
