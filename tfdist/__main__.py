"""``tfdist``: one command for every tool of tfdist (``python -m tfdist``).

    tfdist train --model=my_project.model:build --strategy=multiworker
    tfdist launch --cluster_spec=cluster_specs/two_workers.json -- \\
        tfdist train --model=my_project.model:build --strategy=multiworker
    tfdist --help

Each subcommand runs exactly as its ``python -m`` form (the module is run
as ``__main__``, its own environment set-up included), which keeps
working. Imports nothing from tfdist until a subcommand is chosen, so
``tfdist --help`` answers at once.
"""

from __future__ import annotations

import runpy
import sys
from typing import Optional, Sequence

# Subcommand -> (the module that ``python -m`` runs, its one line of help).
COMMANDS = {
    "train": ("tfdist.train", "train a model function under any strategy "
              "(--model=PACKAGE.MODULE:FUNCTION)"),
    "launch": ("tfdist.cluster.launch", "run every task of a cluster spec as a "
               "local process"),
    "tfconfig": ("tfdist.cluster.tfconfig", "print the TF_CONFIG of one "
                 "task of a cluster spec"),
    "data": ("tfdist.data", "convert CSV tables, image folders, MNIST or "
             "TFDS to TFRecord shards; verify shards"),
    "predict": ("tfdist.serving.predict", "predict with an export: CSV rows, "
                "images, records"),
    "k8s": ("tfdist.k8s", "render Kubernetes manifests from a cluster "
            "spec; run them on a local controller"),
    "bench": ("tfdist.bench", "benchmark the trainers on this machine"),
}


def usage() -> str:
  width = max(len(name) for name in COMMANDS)
  lines = ["usage: tfdist COMMAND [ARGS...]   (tfdist COMMAND --help: its "
           "flags)", "", "commands:"]
  lines += [f"  {name:<{width}}  {help_text}"
            for name, (_, help_text) in COMMANDS.items()]
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs ``tfdist COMMAND ARGS...``; returns (or exits with) its status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] in (["-h"], ["--help"], ["help"]):
    print(usage())
    return 0
  if argv[:1] == ["--version"]:
    import tfdist  # pylint: disable=g-import-not-at-top
    print(f"tfdist {tfdist.__version__}")
    return 0
  if not argv or argv[0] not in COMMANDS:
    what = f"no command {argv[0]!r}" if argv else "say which command"
    print(f"error: {what}: use one of {', '.join(COMMANDS)} (tfdist --help)",
          file=sys.stderr)
    return 2
  name, args = argv[0], argv[1:]
  module, _ = COMMANDS[name]
  sys.argv = [f"tfdist {name}", *args]
  # As python -m runs it: the module's own __main__ block sets up its
  # environment (before TensorFlow starts) and exits with its status.
  runpy.run_module(module, run_name="__main__", alter_sys=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
