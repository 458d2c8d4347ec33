"""``python -m tfdist.launch`` (``tfdist launch``): the launcher.

The documented command only: it runs tfdist.cluster.launch as
``__main__``; code imports that module.
"""

import runpy

if __name__ == "__main__":
  runpy.run_module("tfdist.cluster.launch", run_name="__main__",
                   alter_sys=True)
