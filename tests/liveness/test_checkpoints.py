"""Checkpoints, resume and the evaluator, proven on real processes.

A mirrored run and its relaunch (module-scoped, asserted several ways), a
saver killed inside a save, corrupt and foreign checkpoints, and the
evaluator task scoring the chief's checkpoints: real TensorFlow processes
on the real MNIST files, killed once files show what they do (never sleeps).
The jobs and checks are tests/fault_jobs.py's.
"""

import glob
import json
import os
import re
import signal
import shutil
import subprocess
import sys
import time

import pytest

from conftest import (SPECS, child_env, error_lines, json_lines, launch, run,
                      trainer, wait_for)
from fault_jobs import DEADLINE, checkpoint_steps, killed_at_exit, tree_digest


# --- checkpoints and resume: one process --------------------------------------

@pytest.fixture(scope="module")
def resumed_mirrored(tmp_path_factory, mnist_dir):
  """A mirrored run of 2 epochs, then a relaunch asking for 3; the learning
  rate warms up over 4 epochs, so it is still rising when the relaunch
  resumes."""
  model_dir = str(tmp_path_factory.mktemp("mirrored") / "model")
  flags = ["--strategy=mirrored", f"--mnist_dir={mnist_dir}",
           "--steps_per_epoch=10", f"--model_dir={model_dir}",
           "--checkpoint_every_steps=3", "--keep_checkpoints=2",
           "--learning_rate=0.5", "--warmup_epochs=4"]
  first = run(trainer("mnist", *flags, "--epochs=2"), timeout=120)
  assert first.returncode == 0, first.stderr[-3000:]
  kept = checkpoint_steps(model_dir)
  second = run(trainer("mnist", *flags, "--epochs=3"), timeout=120)
  assert second.returncode == 0, second.stderr[-3000:]
  return {"dir": model_dir, "kept_after_first": kept,
          "first": json_lines(first.stdout)[-1],
          "second": json_lines(second.stdout)[-1], "stderr": second.stderr}


@pytest.mark.slow
def test_checkpoints_on_schedule_bounded(resumed_mirrored):
  first = resumed_mirrored["first"]
  # Steps 3, 6, 9, 10 (epoch end), 12, 15, 18, 20: 8 saves, newest 2 kept.
  assert first["checkpoints_saved"] == 8
  assert resumed_mirrored["kept_after_first"] == [18, 20]
  assert first["global_step"] == 20


def test_relaunch_resumes_step_counter(resumed_mirrored):
  second = resumed_mirrored["second"]
  assert second["start_step"] == 20
  assert second["global_step"] == 30  # exactly the target, nothing redone
  assert "resumed from" in resumed_mirrored["stderr"]
  print(f"\ncheckpoint overhead (mirrored): {second['checkpoint_seconds']} s "
        f"of {second['train_seconds']} s")


def test_relaunch_continues_learning_rate_schedule(resumed_mirrored):
  # Linear warmup from 0 to 0.5 over 40 steps: lr(step) = 0.5 * step / 40;
  # each epoch reports the rate of its last step (steps 9, 19, 29).
  # Restarted at step 0, the relaunch would report lr(9) = 0.1125.
  assert resumed_mirrored["first"]["learning_rate_history"] == [0.1125,
                                                                0.2375]
  assert resumed_mirrored["second"]["learning_rate_history"] == [0.3625]


@pytest.mark.slow
def test_corrupt_checkpoint_one_line_nothing_overwritten(resumed_mirrored,
                                                         mnist_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  shutil.copytree(resumed_mirrored["dir"], model_dir)
  latest = max(glob.glob(os.path.join(model_dir, "checkpoints", "*.data-*")))
  with open(latest, "r+b") as f:
    f.truncate(16)
  before = tree_digest(model_dir)
  done = run(trainer("mnist", "--strategy=mirrored", f"--mnist_dir={mnist_dir}",
                     "--steps_per_epoch=10", "--epochs=4",
                     f"--model_dir={model_dir}"), timeout=120)
  assert done.returncode == 2, done.stderr[-3000:]
  assert "Traceback" not in done.stderr
  (line,) = error_lines(done.stderr)
  assert "cannot restore" in line and "corrupt" in line, line
  assert tree_digest(model_dir) == before


@pytest.mark.slow
def test_checkpoint_of_another_model_is_refused(resumed_mirrored, tmp_path):
  model_dir = str(tmp_path / "model")
  shutil.copytree(resumed_mirrored["dir"], model_dir)
  before = tree_digest(model_dir)
  flags = ["--data=synthetic", "--steps_per_epoch=2", "--epochs=1",
           "--batch_size=8", f"--model_dir={model_dir}"]
  # The saved model description differs: refused before TensorFlow loads.
  done = run(trainer("inception", *flags), timeout=120)
  assert done.returncode == 2, done.stderr[-3000:]
  (line,) = error_lines(done.stderr)
  assert "holds checkpoints of a different model" in line, line
  # Without that description, TensorFlow's own restore check refuses it.
  os.remove(os.path.join(model_dir, "checkpoints", "tfdist_model.json"))
  before = tree_digest(model_dir)
  done = run(trainer("inception", *flags), timeout=180)
  assert done.returncode == 2, done.stderr[-3000:]
  (line,) = error_lines(done.stderr)
  assert "cannot restore" in line, line
  assert tree_digest(model_dir) == before


# tfdist's saver (checkpoint.Checkpointing, as training builds it) on a
# model of 4 million weights (checkpoints of 32 MB): a save takes a while.
# "save" sets every weight and the global step to 1, 2, 3, ... and saves
# each; "restore" restores as a relaunch does and prints the step and the
# values.
_CHECKPOINTING = r"""
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow as tf
from tfdist.training import checkpoint
model = tf.keras.Sequential([tf.keras.Input((2000,)),
                             tf.keras.layers.Dense(2000)])
model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
saver = checkpoint.Checkpointing(
    model=model, strategy=tf.distribute.get_strategy(),
    model_dir=sys.argv[2], write_dir=sys.argv[2],
    options=checkpoint.CheckpointOptions(keep=3), steps_per_epoch=1,
    signature={"model": "big"}, workers_agree=False)
start = saver.restore()
if sys.argv[1] == "save":
  for step in range(start + 1, 10_000):
    for weight in model.weights:
      weight.assign(tf.fill(weight.shape, float(step)))
    model.optimizer.iterations.assign(step)
    saver.save()
else:
  values = set()
  for weight in model.weights:
    values |= set(weight.numpy().ravel().tolist())
  print(json.dumps({"start": start, "path": checkpoint.latest(sys.argv[2]),
                    "values": sorted(values)}))
"""


def _save_in_progress(directory: str):
  """The step of the save in progress in ``directory``, or None.

  TensorFlow writes a checkpoint ``ckpt-N`` into a directory
  ``ckpt-N_temp``, merges it into ``ckpt-N.index`` and ``.data`` files and
  removes that directory; only then is it named in the ``checkpoint`` file.
  """
  try:
    names = os.listdir(directory)
  except FileNotFoundError:
    return None
  steps = [int(m.group(1)) for m in map(re.compile(r"ckpt-(\d+)_temp$").match,
                                        names) if m]
  return max(steps, default=None)


def _stopped(process) -> None:
  """SIGSTOPs ``process`` and returns once the kernel has stopped it."""
  os.kill(process.pid, signal.SIGSTOP)
  _, status = os.waitpid(process.pid, os.WUNTRACED)
  assert os.WIFSTOPPED(status), f"the saver exited ({status})"


def _kill_inside_a_save(process, directory: str, *, after: int) -> int:
  """SIGKILLs ``process`` inside a save of a step above ``after``: stopped
  while that save's temporary directory exists; returns its step."""
  def saving() -> bool:
    assert process.poll() is None, f"the saver exited ({process.returncode})"
    return (_save_in_progress(directory) or 0) > after

  deadline = time.monotonic() + 120
  while time.monotonic() < deadline:
    wait_for(saving, f"a save of a step above {after}", timeout=120)
    _stopped(process)
    step = _save_in_progress(directory)
    if step is not None:  # the save is still in progress, and frozen
      os.kill(process.pid, signal.SIGKILL)
      return step
    os.kill(process.pid, signal.SIGCONT)  # it ended meanwhile: the next
  pytest.fail("no save caught in progress in 120 s")


@pytest.mark.slow
def test_killed_while_saving_never_leaves_a_half_checkpoint(tmp_path):
  """SIGKILL inside tfdist's save (its temporary files present, the
  process frozen by SIGSTOP before the kill): the restore a relaunch does
  picks the last complete checkpoint, every weight as saved."""
  model_dir = tmp_path / "model"
  directory = os.path.join(model_dir, "checkpoints")
  process = subprocess.Popen(
      [sys.executable, "-c", _CHECKPOINTING, "save", str(model_dir)],
      env=child_env(), start_new_session=True, stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  with killed_at_exit(process):
    # Past the first saves: complete checkpoints to fall back on.
    killed_in = _kill_inside_a_save(process, directory, after=3)
  complete = checkpoint_steps(str(model_dir))
  assert complete and max(complete) == killed_in - 1, (complete, killed_in)
  assert os.path.isdir(os.path.join(directory, f"ckpt-{killed_in}_temp"))
  done = run([sys.executable, "-c", _CHECKPOINTING, "restore",
              str(model_dir)], timeout=120)
  assert done.returncode == 0, done.stdout + done.stderr[-3000:]
  (restored,) = json_lines(done.stdout)
  assert restored["start"] == killed_in - 1, restored
  assert restored["path"].endswith(f"ckpt-{killed_in - 1}"), restored
  assert restored["values"] == [float(killed_in - 1)], restored
  print(f"\nkilled inside the save of step {killed_in}; restored step "
        f"{restored['start']}")


# --- evaluator ----------------------------------------------------------------

@pytest.mark.slow
def test_evaluator_scores_each_checkpoint_and_exits(mnist_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  # One worker beside the chief: the claim is the evaluator's.
  with open(os.path.join(SPECS, "chief_two_workers_evaluator.json")) as f:
    spec = json.load(f)
  spec["worker"] = spec["worker"][:1]  # its ports are replaced by free ones
  (tmp_path / "spec.json").write_text(json.dumps(spec))
  done = run(launch(str(tmp_path / "spec.json"),
                    trainer("mnist", "--strategy=multiworker",
                            f"--mnist_dir={mnist_dir}", "--epochs=2",
                            "--steps_per_epoch=30", f"--model_dir={model_dir}",
                            "--peer_timeout=60")),
             timeout=DEADLINE)
  assert done.returncode == 0, done.stdout[-4000:]
  (chief,) = json_lines(done.stdout, "[chief-0] ")
  (evaluation,) = json_lines(done.stdout, "[evaluator-0] ")
  assert evaluation["checkpoints_evaluated"] >= 1
  assert evaluation["step"] == chief["global_step"] == 60
  # The same weights, the same test split, the same code: the same number.
  assert evaluation["test_accuracy"] == chief["test_accuracy"]
  assert glob.glob(os.path.join(model_dir, "eval", "events.out.tfevents.*"))


@pytest.mark.slow
def test_evaluator_skips_a_checkpoint_it_cannot_read(resumed_mirrored,
                                                     mnist_dir, tmp_path):
  """The newest checkpoint garbled (a half-copied file), then the chief's
  result: one line says it was skipped, and the evaluator ends as after
  training (was: DataLossError, exit 1)."""
  model_dir = tmp_path / "model"
  shutil.copytree(resumed_mirrored["dir"], model_dir)
  latest = max(glob.glob(str(model_dir / "checkpoints" / "*.data-*")))
  with open(latest, "r+b") as f:
    f.seek(40)
    f.write(b"\xff" * 20)
  (model_dir / "result.json").write_text("{}")  # newer than the checkpoint
  cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"],
             "evaluator": ["127.0.0.1:3"]}
  done = run(trainer("mnist", "--strategy=multiworker",
                     f"--mnist_dir={mnist_dir}", f"--model_dir={model_dir}"),
             env=child_env(TF_CONFIG=json.dumps(
                 {"cluster": cluster,
                  "task": {"type": "evaluator", "index": 0}})),
             timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  step = latest.rsplit("ckpt-", 1)[1].split(".")[0]
  assert re.search(rf"evaluator-0: skipped \S+ckpt-{step}, which it cannot "
                   r"read \(DataLossError: ", done.stderr), done.stderr[-3000:]
  assert json_lines(done.stdout)[-1]["checkpoints_evaluated"] == 0


@pytest.mark.slow
def test_evaluator_without_checkpoints_gives_up_in_one_line(mnist_dir,
                                                            tmp_path):
  cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"],
             "evaluator": ["127.0.0.1:3"]}
  done = run(trainer("mnist", "--strategy=multiworker",
                     f"--mnist_dir={mnist_dir}", "--eval_timeout=2",
                     f"--model_dir={tmp_path / 'empty'}"),
             env=child_env(TF_CONFIG=json.dumps(
                 {"cluster": cluster,
                  "task": {"type": "evaluator", "index": 0}})),
             timeout=60)
  assert done.returncode == 1, done.stderr[-3000:]
  (line,) = error_lines(done.stderr)
  assert "no new checkpoint" in line and "for 2 s" in line, line
