"""Prints the TF_CONFIG of one task of a cluster spec.

    python -m tfdist.tfconfig cluster_specs/two_workers.json worker 1
    python -m tfdist.tfconfig cluster_specs/two_workers.json worker 1 --export

With ``--export`` the output is a shell line to paste into the terminal that
will run that task: ``export TF_CONFIG='...'``.
"""

import shlex
import sys

from tfdist import cli
from tfdist import errors
from tfdist.cluster import specs
from tfdist.errors import ConfigError


def render(spec_path: str, task_type: str, index: str, *,
           export: bool = False) -> str:
  """Returns the TF_CONFIG (or the ``export`` line) of one task of a spec."""
  spec = specs.load_spec(spec_path)
  if specs.has_unassigned_ports(spec):
    raise ConfigError(f"cluster spec {spec_path} has port 0, which is picked "
                      "at launch; write fixed ports to paste TF_CONFIG by hand, "
                      "or run the spec with python -m tfdist.launch")
  try:
    task_index = int(index)
  except ValueError:
    raise ConfigError(f"task index {index!r} is not an integer; e.g. 0")
  tf_config = specs.make_tf_config(spec, task_type, task_index)
  return f"export TF_CONFIG={shlex.quote(tf_config)}" if export else tf_config


def main(argv=None) -> int:
  parser = cli.OneLineParser(
      prog="python -m tfdist.tfconfig",
      description="Print the TF_CONFIG of one task of a cluster spec.")
  parser.add_argument("spec", help="cluster spec JSON, e.g. "
                      "cluster_specs/two_workers.json")
  parser.add_argument("type", help="task type: chief, worker, ps, evaluator")
  parser.add_argument("index", help="task index, from 0")
  parser.add_argument("--export", action="store_true",
                      help="print an `export TF_CONFIG='...'` shell line")
  args = parser.parse_args(argv)

  def print_tf_config() -> int:
    print(render(args.spec, args.type, args.index, export=args.export))
    return errors.EXIT_OK

  return cli.run(print_tf_config)


if __name__ == "__main__":
  sys.exit(main())
