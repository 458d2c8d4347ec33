"""``python -m tfdist.predict`` (``tfdist predict``): predictions with an
export.

The documented command only: it runs tfdist.serving.predict as
``__main__``; code imports that module.
"""

import runpy

if __name__ == "__main__":
  runpy.run_module("tfdist.serving.predict", run_name="__main__",
                   alter_sys=True)
