"""usage: python -m tfdist.train --model=PACKAGE.MODULE:FUNCTION [flags]

Trains any model function on the Python path (the current directory
first) with every flag of the shipped trainers, under mirrored,
multiworker and ps, with TF_CONFIG, tfdist.cluster.launch and Kubernetes. The
function is called as FUNCTION(features, num_outputs) and returns a Keras
model (the contract: tfdist.model.contract; --helpfull lists every flag).
"""

from absl import app as absl_app
from absl import flags

from tfdist import app
from tfdist import cli
from tfdist.errors import ConfigError

FLAGS = flags.FLAGS
MODEL_HELP = ("The model function, PACKAGE.MODULE:FUNCTION on the Python "
              "path: FUNCTION(features, num_outputs), features a dict of "
              "tfdist.Feature by name and num_outputs the classes (or the "
              "label columns of a regression or multi-label table), returns "
              "a tf.keras model (compiled or not) that is called with the "
              "dict of inputs by name and outputs [batch, num_outputs]: "
              "logits unless it ends in a softmax (sigmoid for multilabel) "
              "or its compiled loss says from_logits=False.")


def _main(args) -> int:
  app.check_no_arguments(args)
  if not FLAGS.model:
    return cli.report(ConfigError(
        "--model is required: name your model function as "
        "--model=PACKAGE.MODULE:FUNCTION, e.g. --model=my_project.model:build"))
  return app.run(FLAGS.model)


def main(argv=None) -> None:
  app.prepare_environment()
  app.define_flags()
  flags.DEFINE_string("model", None, MODEL_HELP)
  with cli.help_is_success(argv):
    absl_app.run(_main, argv=argv)


if __name__ == "__main__":
  main()
