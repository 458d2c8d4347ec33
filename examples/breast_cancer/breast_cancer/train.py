r"""Trains the model on the converted records, under any tfdist strategy.

    python -m breast_cancer.train                          # one process
    python -m tfdist.launch --cluster_spec=cluster_specs/two_workers.json \
        -- python -m breast_cancer.train --strategy=multiworker

Every tfdist flag works (``--helpfull`` lists them); the defaults below
suit this model and point at the records ``python -m tfdist.data write``
made in records/.
"""

import tfdist

from breast_cancer import model

DEFAULTS = {
    "train_files": "records/train-*",
    "test_files": "records/test-*",
    "optimizer": "adam",
    "learning_rate": 0.01,
    "batch_size": 32,
    "epochs": 30,
}

if __name__ == "__main__":
  tfdist.main(model.build, defaults=DEFAULTS)
