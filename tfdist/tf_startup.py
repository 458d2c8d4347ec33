"""What an entry point does before TensorFlow is imported, so that a
successful run on a CPU-only machine prints no error-level line and
TensorFlow's start-up block once.

Owns: the environment TensorFlow reads when it starts, and deferring the
load of TensorFlow's profiler plugin. Imports nothing from tfdist and never
imports TensorFlow. Library code calls none of this: entry points apply it
(they own os.environ and sys.modules).

The causes, in TensorFlow 2.21's pip wheel (built with CUDA):

* ``failed call to cuInit ... (303)`` (error level): creating TensorFlow's
  context asks every device factory for devices; the GPU factory initialises
  CUDA even when the machine has no GPU and no driver. Absl's
  ``app.call_after_init`` in ``tensorflow/python/distribute/combinations.py``
  already lists GPUs during ``import tensorflow`` under ``absl.app.run``.
  TensorFlow skips the factories that ``TF_ENABLED_DEVICE_TYPES`` leaves
  out, so on a machine without a GPU device node it is set to ``CPU``.
* The start-up block twice (``All log messages before absl::InitializeLog()``,
  oneDNN, ``cudart_stub``): ``import tensorflow`` loads
  ``_pywrap_profiler_plugin.so`` (for ``tf.profiler.experimental.client``), a
  90 MB extension that links its own copy of TensorFlow's runtime and of
  absl logging, so their static initialisers run and log a second time.
  The trainers never use that client: :func:`defer_profiler_plugin` loads
  the extension on its first use instead of at import.
"""

from __future__ import annotations

import glob
import importlib
import sys
import types
from typing import MutableMapping

PROFILER_PLUGIN = "tensorflow.python.profiler.internal._pywrap_profiler_plugin"
# Device nodes of a GPU a process can use: NVIDIA, AMD ROCm, WSL 2.
GPU_DEVICE_NODES = ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg")


def has_gpu_device() -> bool:
  """True if the machine (or container) has a GPU device node."""
  return any(glob.glob(pattern) for pattern in GPU_DEVICE_NODES)


def environment(*, has_gpu: bool, platform: str = sys.platform) -> dict:
  """TensorFlow's start-up settings for this machine (set them only where
  the user has not: a user's own choice stands)."""
  if platform == "linux" and not has_gpu:
    # Only the CPU device factory: no CUDA initialisation, no cuInit error.
    return {"TF_ENABLED_DEVICE_TYPES": "CPU"}
  return {}


class _LoadOnFirstUse(types.ModuleType):
  """Stands in for an extension module until an attribute is needed."""

  def __getattr__(self, attr):
    if attr.startswith("__"):
      raise AttributeError(attr)
    del sys.modules[self.__name__]
    module = importlib.import_module(self.__name__)
    self.__dict__.update(module.__dict__)
    return getattr(module, attr)


def defer_profiler_plugin(modules: MutableMapping = sys.modules) -> None:
  """Loads TensorFlow's profiler plugin on first use, not at import."""
  if PROFILER_PLUGIN not in modules:
    modules[PROFILER_PLUGIN] = _LoadOnFirstUse(PROFILER_PLUGIN)


def prepare(environ: MutableMapping, *, has_gpu: bool,
            modules: MutableMapping = sys.modules) -> None:
  """Everything above, for an entry point about to import TensorFlow."""
  for key, value in environment(has_gpu=has_gpu).items():
    environ.setdefault(key, value)
  defer_profiler_plugin(modules)

