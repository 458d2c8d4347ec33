"""``python -m tfdist.tfconfig`` (``tfdist tfconfig``): one task's TF_CONFIG.

The documented command only: it runs tfdist.cluster.tfconfig as
``__main__``; code imports that module.
"""

import runpy

if __name__ == "__main__":
  runpy.run_module("tfdist.cluster.tfconfig", run_name="__main__",
                   alter_sys=True)
