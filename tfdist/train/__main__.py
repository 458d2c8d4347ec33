"""``python -m tfdist.train``: see the package docstring (tfdist.train)."""

from absl import app as absl_app
from absl import flags

from tfdist import app
from tfdist import cli
from tfdist.errors import ConfigError

FLAGS = flags.FLAGS
MODEL_HELP = ("The model function, PACKAGE.MODULE:FUNCTION on the Python "
              "path: FUNCTION(input_shape, num_classes) returns an "
              "uncompiled Keras model.")


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
  absl_app.run(_main, argv=argv)


if __name__ == "__main__":
  main()
