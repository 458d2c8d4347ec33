"""Runs tfdist.cluster.launch as ``python -m tfdist.launch``."""

import runpy

runpy.run_module("tfdist.cluster.launch", run_name="__main__", alter_sys=True)
