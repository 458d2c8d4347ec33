r"""mini-Inception benchmark: MNIST accuracy, and trainer vs plain Keras.

    python -m tfdist.bench_inception --mnist_dir=../shared/data/mnist

Two figures, from real processes on the real MNIST files:

1. Accuracy: ``trainers.inception`` trains mini-Inception (``--width``) for
   ``--epochs`` full passes; test accuracy (target >= 0.985), wall time of
   the process and of training, examples/s.
2. Overhead: the examples/s of ``trainers.inception`` against a plain
   single-process Keras ``fit`` of the same model, batch, optimizer and
   input pipeline (no strategy, no DatasetCreator; ``--plain`` runs it),
   alternated ``--rounds`` times so both see the same machine load; the
   ratio of the medians (target >= 0.95). Both use one replica: the trainer
   with ``--strategy=mirrored --num_cpu_devices=1``, all cores to it, as
   the plain fit. Examples/s is the median epoch after the first (warm-up),
   as tfdist.monitor measures it for both.

Prints one JSON line per run and a final JSON summary; a benchmark, not a
test: the figures depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time

from tfdist import baseline
from tfdist import data as data_lib
from tfdist import models
from tfdist.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCURACY_TARGET, RATIO_TARGET = 0.985, 0.95


def plain_fit(*, dataset: data_lib.Dataset, width: float, batch_size: int,
              epochs: int, steps_per_epoch: int, learning_rate: float,
              seed: int = 0) -> dict:
  """Fits mini-Inception with plain Keras (tfdist.baseline.fit): the
  trainer's optimizer (momentum SGD) and input pipeline, no strategy."""
  return baseline.fit(
      dataset=dataset, batch_size=batch_size, epochs=epochs,
      steps_per_epoch=steps_per_epoch, learning_rate=learning_rate, seed=seed,
      model_fn=functools.partial(models.mini_inception, width=width),
      model_name=f"mini_inception_w{width:g}", momentum=0.9)


def _run(args: list, *, timeout: float) -> dict:
  """Runs one benchmark process; returns its last JSON line plus wall time."""
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep +
             os.environ.get("PYTHONPATH", ""))
  env.pop("TF_CONFIG", None)  # one local process, whatever the shell has
  start = time.perf_counter()
  done = subprocess.run([sys.executable, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout,
                        check=False)
  wall = time.perf_counter() - start
  lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
  if done.returncode != 0 or not lines:
    raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n"
                       f"{done.stderr[-3000:]}")
  result = json.loads(lines[-1])
  result["wall_seconds"] = round(wall, 1)
  print(json.dumps(result), flush=True)
  return result


def benchmark(args) -> dict:
  """Runs the accuracy run and the alternated throughput runs."""
  common = [f"--mnist_dir={args.mnist_dir}", f"--width={args.width:g}",
            f"--batch_size={args.batch_size}",
            f"--learning_rate={args.learning_rate}"]
  trainer = ["-m", "trainers.inception", "--strategy=mirrored",
             "--num_cpu_devices=1", *common]
  short = [f"--epochs={args.throughput_epochs}",
           f"--steps_per_epoch={args.throughput_steps}"]
  summary = {"width": args.width, "batch_size": args.batch_size,
             "cpu_count": os.cpu_count(),
             "load_average_at_start": os.getloadavg()}
  if args.epochs:
    accuracy = _run([*trainer, f"--epochs={args.epochs}"],
                    timeout=args.timeout)
    summary.update({
        "epochs": args.epochs, "test_accuracy": accuracy["test_accuracy"],
        "accuracy_target_met": accuracy["test_accuracy"] >= ACCURACY_TARGET,
        "num_params": accuracy["num_params"],
        "flops_per_example": accuracy["flops_per_example"],
        "process_wall_seconds": accuracy["wall_seconds"],
        "train_seconds": accuracy["train_seconds"],
        "examples_per_sec": accuracy["examples_per_sec"],
        "steady_examples_per_sec": accuracy["steady_examples_per_sec"]})
  trainer_rates, plain_rates = [], []
  for _ in range(args.rounds):
    # Alternated, so a burst of load on a shared machine hits both sides.
    trainer_rates.append(_run([*trainer, *short], timeout=args.timeout)[
        "steady_examples_per_sec"])
    plain_rates.append(_run([
        "-m", "tfdist.bench_inception", "--plain", *common,
        f"--throughput_epochs={args.throughput_epochs}",
        f"--throughput_steps={args.throughput_steps}"],
                            timeout=args.timeout)["steady_examples_per_sec"])
  ratio = statistics.median(trainer_rates) / statistics.median(plain_rates)
  summary.update({
      "trainer_examples_per_sec": trainer_rates,
      "plain_keras_examples_per_sec": plain_rates,
      "trainer_vs_plain_ratio": round(ratio, 3),
      "ratio_target_met": ratio >= RATIO_TARGET,
      "load_average_at_end": os.getloadavg()})
  return summary


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tfdist.bench_inception",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--mnist_dir", required=True)
  parser.add_argument("--width", type=float, default=0.5)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--learning_rate", type=float, default=0.05)
  parser.add_argument("--epochs", type=int, default=3,
                      help="full passes of the accuracy run; 0 skips it")
  parser.add_argument("--throughput_epochs", type=int, default=4)
  parser.add_argument("--throughput_steps", type=int, default=40)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--timeout", type=float, default=1800,
                      help="seconds before a run is killed")
  parser.add_argument("--out", help="also write the summary JSON here")
  parser.add_argument("--plain", action="store_true",
                      help="run only the plain Keras fit (one JSON line)")
  args = parser.parse_args(argv)
  try:
    for name in ("batch_size", "throughput_epochs", "throughput_steps",
                 "rounds"):
      if getattr(args, name) < 1:
        raise ConfigError(f"--{name}={getattr(args, name)}: must be at least 1")
    if args.throughput_epochs < 2:
      raise ConfigError("--throughput_epochs must be at least 2: the first "
                        "is warm-up")
    data_lib.load_mnist_idx(args.mnist_dir)  # fails early on a bad dir
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.plain:
    # An entry point: Keras 2, as in the trainers (set before TF loads).
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    print(json.dumps(plain_fit(
        dataset=data_lib.load_mnist_idx(args.mnist_dir), width=args.width,
        batch_size=args.batch_size, epochs=args.throughput_epochs,
        steps_per_epoch=args.throughput_steps,
        learning_rate=args.learning_rate)), flush=True)
    return 0
  summary = benchmark(args)
  print(json.dumps(summary), flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(summary, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
