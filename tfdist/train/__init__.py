r"""``python -m tfdist.train --model=PACKAGE.MODULE:FUNCTION [flags]``.

Trains any model function on the Python path (the current directory
first) with every flag of the shipped trainers, under mirrored,
multiworker and ps, with TF_CONFIG, ``python -m tfdist.launch`` and
Kubernetes::

    python -m tfdist.train --model=my_project.model:build --epochs=10
    python -m tfdist.launch --cluster_spec=cluster_specs/two_workers.json -- \
        python -m tfdist.train --model=my_project.model:build \
        --strategy=multiworker

The command of :func:`tfdist.main` for a module without a ``train.py``
(tfdist.train.__main__). Nothing to import here.
"""
