"""Variables sharded over 2 ps tasks: the sparse model, and every guarantee.

One real job on loopback (tfdist.bench.jobs): a chief, 2 workers, 2 ps
tasks and an evaluator run trainers.sparse on its generated id lists (every
task but the ps generates them at once, into one directory), its default
table of 100,000 rows split in 2 shards. Right after the first checkpoint
worker-1 is stopped (SIGSTOP) and stays stopped: the stall meets the chief
in its next save, which waits for the stopped worker's step; the chief
goes on without it from its last checkpoint, at the stall deadline it
measured (and says), and the job finishes, clean (the suite's
stalled-worker test). The tests below read that one job: the accuracy
against the data's known best, the shards in the result, the evaluator,
the export; then a relaunch on the same --model_dir with one ps task
resumes bit for bit (a checkpoint of 2 ps tasks' shards restores onto
another number of ps tasks). The bad flags of the partitioner are one line
each, before TensorFlow.
"""

import glob
import json
import os
import re
import signal
import sys
import time

import numpy as np
import pytest

from conftest import run, trainer, wait_for
from tfdist.data import planted as planted_lib
from tfdist.errors import ConfigError
from tfdist.training import sharding
from tfdist.training.config import TrainConfig

# The job's set-up (its fixture) counts toward the first test that uses it.
pytestmark = pytest.mark.timeout(600)
# The trainer's default table (no flag: a first run needs none), 12.8 MB.
VOCAB = 100_000
EVERY_STEPS = 250  # a save each (the first stops worker-1)
FLAGS = ["--epochs=2", f"--checkpoint_every_steps={EVERY_STEPS}",
         "--peer_timeout=60",
         "--verbose=2"]
# The chief acts once no step completed for its stall deadline (50 x the
# time between two signs of progress, at least 10 s: it says which), seen
# by a watch that samples every 0.2 s and says whole seconds; then the probe
# of every peer (3 x 1 s at most). Before, worker-0 steps on until the next
# save waits for worker-1's step: up to EVERY_STEPS steps (their time from
# the result), and a second for the relay.
SAMPLE_S, PROBE_S, RELAY_S = 0.2, 3.0, 1.0


def _job(shape, model_dir, *, evaluator=False, workers=None, environ):
  from tfdist.bench import jobs  # pylint: disable=g-import-not-at-top
  cluster = jobs.free_cluster(shape)
  cluster["worker"] = cluster["worker"][:workers]  # None: all
  if evaluator:
    cluster["evaluator"] = jobs.free_cluster("multiworker")["worker"][:1]
  return jobs.Job(shape, [*FLAGS, f"--model_dir={model_dir}",
                          f"--export_dir={model_dir}-export"],
                  cluster=cluster, environ=environ, trainer="sparse")


@pytest.fixture(scope="module")
def stalled_job(tmp_path_factory):
  """The job (module docstring): its tasks' output, results and times."""
  base = tmp_path_factory.mktemp("sharded")
  environ = dict(os.environ, TMPDIR=str(base))
  model_dir = base / "model"
  job = _job("ps-2ps", model_dir, evaluator=True, environ=environ)
  try:
    job.start()
    wait_for((model_dir / "checkpoints" / "checkpoint").exists,
             "the first checkpoint", timeout=240)
    job.signal("worker-1", signal.SIGSTOP)
    stopped_at = time.monotonic()
    others = [n for n in job.task_names() if n != "worker-1"]
    still = job.wait(others, time.monotonic() + 300)
    assert not still, "\n".join(job.output[still[0]][-30:])
    assert job.alive("worker-1")  # stopped all along
  finally:
    job.kill()
  went_on = [(t, float(found.group(1)), float(found.group(2)))
             for t, line in zip(job.line_times["chief-0"],
                                job.output["chief-0"])
             for found in [re.search(
                 r"completed no step for (\d+) s \(the stall deadline: "
                 r"([\d.]+) s\); chief-0 goes on without it", line)]
             if found]
  return {"job": job, "base": base, "model_dir": model_dir,
          "environ": environ, "stopped_at": stopped_at, "went_on": went_on,
          "chief": json.loads(job.result("chief-0")),
          "evaluator": json.loads(job.result("evaluator-0"))}


def test_sharded_job_survives_a_stalled_worker_in_place(stalled_job):
  job = stalled_job["job"]
  for name in job.task_names():
    if name != "worker-1":
      assert job.status(name) == 0, "\n".join(job.output[name][-20:])
  timeline = "\n".join(f"{t - stalled_job['stopped_at']:+.1f} s {line}"
                       for t, line in zip(job.line_times["chief-0"],
                                          job.output["chief-0"]))
  assert stalled_job["went_on"], timeline
  ((went_on_at, no_step_s, deadline_s),) = stalled_job["went_on"]
  seconds = went_on_at - stalled_job["stopped_at"]
  print(f"\n2 ps: the chief went on without worker-1 {seconds:.1f} s after "
        f"it was stopped (no step for {no_step_s:.0f} s; its stall deadline "
        f"{deadline_s:.1f} s)")
  assert deadline_s >= 10, timeline
  # At its own deadline: not before, and within a sample (whole seconds).
  assert deadline_s - 0.5 <= no_step_s <= deadline_s + SAMPLE_S + 1, timeline
  chief = stalled_job["chief"]
  step_s = max(chief["epoch_seconds"]) / (chief["steps"] // 2)  # 2 epochs
  assert seconds <= (no_step_s + PROBE_S + EVERY_STEPS * step_s
                     + RELAY_S), timeline
  # No save froze the chief: it never needed the sentinel or a deadline.
  assert not job.error_lines("chief-0"), job.error_lines("chief-0")
  # The others waited for the chief's restart, not just its usual grace.
  for name in ("worker-0", "ps-0", "ps-1"):
    assert any("chief-0 restarts" in line for line in job.output[name]), name
  assert job.noise_after_training() == [], timeline  # ended clean
  assert chief["start_step"] > 0 and chief["num_replicas"] == 1, chief


def test_the_generated_data_is_one_directory_written_whole(stalled_job):
  base = os.path.join(stalled_job["base"], "tfdist-planted")
  assert os.listdir(base) == [planted_lib.Planted(vocab_size=VOCAB).name]
  job = stalled_job["job"]
  generated = [n for n in job.task_names()
               if any("best possible accuracy" in l for l in job.output[n])]
  # Every task that reads data generated it (at once); the ps tasks none.
  assert sorted(generated) == ["chief-0", "evaluator-0", "worker-0",
                               "worker-1"]


def test_sparse_model_reaches_its_best_accuracy_and_reports_shards(
    stalled_job):
  chief = stalled_job["chief"]
  (directory,) = glob.glob(os.path.join(stalled_job["base"],
                                        "tfdist-planted", "*"))
  with open(os.path.join(directory, planted_lib.INFO_FILE)) as f:
    best = json.load(f)["best_accuracy"]
  print(f"\ntest accuracy {chief['test_accuracy']} (best possible {best})")
  assert chief["test_accuracy"] >= best - 0.01, chief
  assert chief["sharded_variables"] == {"tokens_embedding/embeddings": 2}
  # Each ps holds half the table and its Adagrad accumulator (the dense
  # layer's few variables go whole to one of them).
  half = VOCAB * 32 * 4 // 2 * 2
  held = chief["bytes_per_ps"]
  assert sorted(held) == ["ps-0", "ps-1"], held
  assert all(half <= held[ps] < half + 10_000 for ps in held), held


def test_the_evaluator_reads_the_sharded_checkpoints(stalled_job):
  evaluator, chief = stalled_job["evaluator"], stalled_job["chief"]
  assert evaluator["checkpoints_evaluated"] >= 2, evaluator
  assert evaluator["step"] == chief["global_step"]
  assert evaluator["test_accuracy"] == chief["test_accuracy"]


_EXPORT_CHECK = r"""
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
from tfdist.data import sources
from tfdist.model import contract
from trainers import sparse
export, final, data = sys.argv[1:4]
source = sources.open_files(os.path.join(data, "train-*"),
                            os.path.join(data, "test-*"),
                            report=lambda line: None)
serve = tf.saved_model.load(export).signatures["serving_default"]
model = contract.build(sparse.embedding_bag, source.features,
                       source.num_classes)
tf.train.Checkpoint(model=model).read(final).expect_partial()
same = total = correct = 0
for inputs, labels in source.test_batches(1000):
  served = serve(tokens=inputs["tokens"].to_tensor(default_value=-1))[
      "classes"].numpy()
  trained = np.argmax(model(inputs, training=False).numpy(), axis=-1)
  same += int(np.sum(served == trained))
  correct += int(np.sum(served == labels.numpy()))
  total += len(trained)
print(json.dumps({"same": same, "total": total, "accuracy": correct / total}))
"""


def test_export_holds_whole_variables_and_predicts_as_trained(stalled_job):
  chief = stalled_job["chief"]
  export = chief["export"]
  assert export["weights_digest"] == chief["weights_digest"]
  (directory,) = glob.glob(os.path.join(stalled_job["base"],
                                        "tfdist-planted", "*"))
  done = run([sys.executable, "-c", _EXPORT_CHECK, export["saved_model"],
              str(stalled_job["model_dir"] / "final" / "ckpt"), directory],
             timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  checked = json.loads(done.stdout.strip().splitlines()[-1])
  assert checked["same"] == checked["total"] == 10_000, checked
  assert round(checked["accuracy"], 5) == chief["test_accuracy"]


def test_relaunch_onto_one_ps_resumes_bit_for_bit_with_sharded_slots(
    stalled_job):
  """The relaunch, with one ps task instead of two, finds the training
  done at its last checkpoint: it restores the weights, every Adagrad
  accumulator (saved in 2 slices, restored whole) and the step, and trains
  nothing more; both digests equal the first run's final state."""
  first = stalled_job["chief"]
  # One worker: the chief trains nothing more (a TensorFlow process fewer).
  job = _job("ps", stalled_job["model_dir"], workers=1,
             environ=stalled_job["environ"])
  try:
    job.start()
    still = job.wait(job.task_names(), time.monotonic() + 240)
    assert not still, "\n".join(job.output[still[0]][-30:])
  finally:
    job.kill()
  assert job.status("chief-0") == 0, "\n".join(job.output["chief-0"][-30:])
  again = json.loads(job.result("chief-0"))
  assert sorted(again["bytes_per_ps"]) == ["ps-0"], again
  assert again["sharded_variables"] == {}, again  # one ps: one shard
  assert again["start_step"] == again["global_step"] == first["global_step"]
  assert again["weights_digest"] == first["weights_digest"]
  assert again["optimizer_digest"] == first["optimizer_digest"]


# --- the partitioner's flags: checked before TensorFlow ----------------------

@pytest.mark.parametrize("settings, message", [
    ({"variable_partitioner": "range"},
     "--variable_partitioner='range': use one of min_size, fixed, none"),
    ({"strategy": "mirrored", "variable_partitioner": "fixed"},
     "--variable_partitioner=fixed splits variables over ps tasks, and "
     "--strategy=mirrored has none"),
    ({"strategy": "ps", "variable_shards": 2},
     "--variable_shards=2 is the shard count of "
     "--variable_partitioner=fixed"),
    ({"strategy": "ps", "variable_partitioner": "none",
      "min_shard_bytes": 1024}, "--min_shard_bytes=1024 sizes the shards of "
                                "--variable_partitioner=min_size, not none"),
    ({"strategy": "ps", "min_shard_bytes": 0},
     "--min_shard_bytes=0: must be at least 1"),
])
def test_bad_partitioner_flags_are_one_line(settings, message):
  with pytest.raises(ConfigError) as raised:
    TrainConfig(**settings)
  assert message in str(raised.value)


def test_more_fixed_shards_than_ps_tasks_is_one_line():
  sharding.check_cluster(variable_partitioner="fixed", variable_shards=2,
                         ps_tasks=2)
  with pytest.raises(ConfigError, match=r"--variable_shards=3: at most one "
                     r"shard per ps task, and the cluster has 2 ps tasks"):
    sharding.check_cluster(variable_partitioner="fixed", variable_shards=3,
                           ps_tasks=2)


def test_a_bad_flag_of_the_sparse_trainer_is_one_line_before_tensorflow():
  done = run(trainer("sparse", "--strategy=mirrored",
                     "--variable_partitioner=fixed"), timeout=60)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [done.stderr.strip()]
  assert done.stderr.startswith("error: --variable_partitioner=fixed")


# --- the generated data's best accuracy ---------------------------------------

def test_the_known_best_accuracy_is_the_bayes_rule():
  """The closed form (the sum of each owned id's evidence) against the
  posterior computed in full from every id's likelihood under each
  class."""
  planted = planted_lib.Planted(vocab_size=3000, train_examples=10,
                                test_examples=4000, min_length=3,
                                max_length=12)
  labels, lengths, ids = planted.split("test")
  best = planted_lib.bayes_accuracy(planted, labels, lengths, ids)
  likelihood = np.tile(((1 - planted.signal) * planted.background())[:, None],
                       (1, planted.num_classes))
  for c, owned in enumerate(planted.topics()):
    likelihood[owned, c] += planted.signal / planted.topic_ids
  example = np.repeat(np.arange(labels.size), lengths)
  posterior = np.zeros((labels.size, planted.num_classes))
  np.add.at(posterior, example, np.log(likelihood[ids]))
  top = np.isclose(posterior, posterior.max(axis=1, keepdims=True),
                   rtol=1e-12, atol=0)
  full = np.mean(top[np.arange(labels.size), labels] / top.sum(axis=1))
  assert best == pytest.approx(full, abs=1e-9)
