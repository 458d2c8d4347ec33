"""Runs tfdist.cluster.tfconfig as ``python -m tfdist.tfconfig``."""

import runpy

runpy.run_module("tfdist.cluster.tfconfig", run_name="__main__", alter_sys=True)
