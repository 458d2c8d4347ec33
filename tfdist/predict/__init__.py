"""``python -m tfdist.predict`` (``tfdist predict``): predictions with an export.

The documented command only (its __main__ runs tfdist.serving.predict);
code imports tfdist.serving.predict.
"""
