r"""Softmax regression on MNIST (784 -> 10), under any strategy.

    python -m trainers.mnist --strategy=multiworker
    python -m tfdist.launch --cluster_spec=cluster_specs/two_workers.json -- \
        python -m trainers.mnist --strategy=multiworker

A trainer is what a user's own ``train.py`` is: a model function and the
defaults that suit it, handed to :func:`tfdist.main` (every flag comes with
it; ``--helpfull`` lists them).
"""

from tfdist.model import models
import tfdist

if __name__ == "__main__":
  tfdist.main(models.softmax_regression)
