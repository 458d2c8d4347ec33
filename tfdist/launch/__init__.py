"""``python -m tfdist.launch`` (``tfdist launch``): the launcher.

The documented command only (its __main__ runs tfdist.cluster.launch);
code imports tfdist.cluster.launch.
"""
