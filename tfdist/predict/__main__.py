"""Runs tfdist.serving.predict as ``python -m tfdist.predict``."""

import runpy

runpy.run_module("tfdist.serving.predict", run_name="__main__", alter_sys=True)
