r"""Softmax regression on MNIST (784 -> 10), under any strategy.

    python -m trainers.mnist --strategy=multiworker
    python -m tfdist.launch --cluster_spec=cluster_specs/two_workers.json -- \
        python -m trainers.mnist --strategy=multiworker
"""

from absl import app

from trainers import common  # sets TF_USE_LEGACY_KERAS before TF loads
from tfdist import models


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  return common.run_trainer(model_fn=models.softmax_regression,
                            model_name="softmax_regression")


if __name__ == "__main__":
  app.run(main)
