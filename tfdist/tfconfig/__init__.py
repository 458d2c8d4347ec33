"""``python -m tfdist.tfconfig`` (``tfdist tfconfig``): one task's TF_CONFIG.

The documented command only (its __main__ runs tfdist.cluster.tfconfig);
code imports tfdist.cluster.tfconfig.
"""
