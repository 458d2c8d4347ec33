"""The worked example, examples/breast_cancer: its README's commands run.

A project outside the package, as a user's would be: a CSV of real data,
a model function and a train.py calling tfdist.main. Its README's runnable
blocks run in order, in a copy of the project (convert, train with no
cluster, two workers and a ps cluster through the launcher, render
Kubernetes manifests for its own image, export and predict); then what
they printed and wrote is checked.
"""

import os
import shutil

import pytest

from conftest import REPO, child_env, json_lines
import runnable

EXAMPLE = os.path.join(REPO, "examples", "breast_cancer")
# Always answering "benign" scores 0.63 on this table.
ACCURACY = 0.9


@pytest.fixture(scope="module")
def example(tmp_path_factory):
  """The README's blocks run in a copy of the project: (directory, output
  of each block in order)."""
  work = tmp_path_factory.mktemp("example") / "breast_cancer"
  shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(
      "records", "model", "export", "k8s", "__pycache__", "*.egg-info"))
  env = child_env(PYTHONPATH=os.pathsep.join([str(work), REPO]))
  outputs = []
  for block in runnable.blocks(os.path.join(work, "README.md")):
    done = runnable.run_block(block, cwd=str(work), env=env, timeout=300)
    assert done.returncode == 0, (block.name, done.stdout[-3000:],
                                  done.stderr[-3000:])
    outputs.append(done)
  return work, outputs


def _results(done, prefix=""):
  return [r for r in json_lines(done.stdout, prefix) if "test_accuracy" in r]


def test_the_table_converts(example):
  work, (convert, *_) = example
  [summary] = json_lines(convert.stdout)
  assert summary["counts"] == {"train": 427, "test": 142}
  assert summary["num_classes"] == 2 and len(summary["features"]) == 30
  assert (work / "records" / "manifest.json").exists()


def test_it_trains_with_no_cluster_and_writes_checkpoints(example):
  work, (_, single, *_) = example
  [result] = _results(single)
  assert result["strategy"] == "mirrored" and result["num_replicas"] == 2
  assert result["model"] == "build"
  assert result["test_accuracy"] >= ACCURACY, result
  assert (work / "model" / "checkpoints").is_dir()


def test_it_trains_on_two_workers_and_on_a_ps_cluster(example):
  _, (_, _, launched, *_) = example
  [multiworker] = _results(launched, "[worker-0] ")
  [ps] = _results(launched, "[chief-0] ")
  assert (multiworker["strategy"], multiworker["num_replicas"]) == (
      "multiworker", 2)
  assert ps["strategy"] == "ps" and ps["variable_devices"] == [
      "/job:ps/replica:0/task:0/device:CPU:0"]
  for result in (multiworker, ps):
    assert result["test_accuracy"] >= ACCURACY, result


def test_the_manifests_run_its_own_module_in_its_own_image(example):
  work, _ = example
  worker = (work / "k8s" / "10-worker.yaml").read_text()
  assert "image: REGISTRY/breast-cancer:0.1" in worker
  command = worker[worker.index("- --\n"):]
  assert command.startswith("- --\n        - python\n        - -m\n"
                            "        - breast_cancer.train\n")
  assert "- --strategy=multiworker" in command


def test_the_export_predicts_what_training_measured(example):
  _, (*_, exported) = example
  trained, summary = _results(exported)[-1], json_lines(exported.stdout)[-1]
  assert summary["format"] == "saved_model" and summary["examples"] == 142
  assert summary["accuracy"] == trained["test_accuracy"] >= ACCURACY
