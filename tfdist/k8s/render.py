r"""``python -m tfdist.k8s render``: the manifests of a cluster spec, written.

    python -m tfdist.k8s render --cluster_spec=cluster_specs/two_workers.json \
        --job_name=mnist --image=REGISTRY/tfdist:0.1 --gpus_per_worker=1 \
        --out_dir=k8s [--data_pvc=CLAIM -- --mnist_dir=/data/mnist]

The spec gives the topology (how many tasks of each type); each task's
address becomes the stable DNS name of its pod (tfdist.k8s.manifests).
Rendering is deterministic and all-or-nothing: every file is built and
checked in memory before the first one is written, and each file starts with
the command that re-renders it.

Owns the render flags (one per RenderOptions field) and that command line.
Imports tfdist.cli, tfdist.cluster.specs and the render modules of tfdist.k8s.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from typing import Sequence

from tfdist import cli
from tfdist.cluster import specs as cluster_lib
from tfdist.errors import ConfigError
from tfdist.k8s import files as files_lib
from tfdist.k8s import manifests
from tfdist.k8s.options import RenderOptions

PROG = "python -m tfdist.k8s render"
# The flags that are no RenderOptions field, or that it takes otherwise.
_PATH_FLAGS = ("cluster_spec", "out_dir")
# Fields the command names only when set (an override of another field).
_UNLESS_SET = ("ps_memory", "queue", "topology", "prefer_topology",
               "priority_class", "workload_priority_class")
# Help of the fields without a default (see RenderOptions for all).
_REQUIRED_HELP = {"job_name": "prefix of every object's name (DNS-1035 label)",
                  "image": "container image"}


def render_command(options: RenderOptions, spec_path: str) -> str:
  """The canonical ``render`` command line of ``options`` (no --out_dir)."""
  words = [*PROG.split(), f"--cluster_spec={spec_path}"]
  own_program = options.program()[0][2] != f"trainers.{options.trainer}"
  for field in dataclasses.fields(RenderOptions):
    if field.name in ("cluster", "trainer_args") or (
        field.name == "trainer" and own_program) or (
            field.name in _UNLESS_SET and not getattr(options, field.name)):
      continue
    words.append(f"--{field.name}={getattr(options, field.name)}")
  if options.trainer_args:
    words += ["--", *options.trainer_args]
  return shlex.join(words)


def _add_flags(parser: argparse.ArgumentParser) -> None:
  """A flag per RenderOptions field, its type and default the field's."""
  parser.add_argument("--cluster_spec", required=True,
                      help="cluster spec JSON: the topology")
  parser.add_argument("--out_dir", required=True, help="where to write")
  for field in dataclasses.fields(RenderOptions):
    if field.name in ("cluster", "trainer_args"):
      continue
    if field.default is dataclasses.MISSING:
      parser.add_argument(f"--{field.name}", required=True,
                          help=_REQUIRED_HELP[field.name])
    else:
      kind = int if field.type == "int" else str
      parser.add_argument(f"--{field.name}", type=kind, default=field.default,
                          help=f"default {field.default!r}")


def main(argv: Sequence[str]) -> int:
  """Renders and writes the manifests; returns the exit status."""
  own, trainer_args = cli.split_command(argv)
  parser = cli.OneLineParser(
      prog=PROG, description="Render Kubernetes manifests from a cluster "
                             "spec; arguments after -- go to the trainer.")
  _add_flags(parser)
  args = parser.parse_args(own)
  try:
    spec = cluster_lib.load_spec(args.cluster_spec)
    values = {k: v for k, v in vars(args).items() if k not in _PATH_FLAGS}
    options = RenderOptions(cluster=spec, trainer_args=tuple(trainer_args),
                            **values)
    files = manifests.render(
        options, command=render_command(options, args.cluster_spec))
    files_lib.write(files, args.out_dir)
  except ConfigError as e:
    return cli.report(e)
  print(f"wrote {', '.join(sorted(files))} to {args.out_dir}")
  return 0
