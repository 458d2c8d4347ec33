"""What an entry point does before TensorFlow is imported, so that a
successful run on a CPU-only machine prints no error-level line and
TensorFlow's start-up block once.

Owns: the environment TensorFlow reads when it starts, deferring the
load of TensorFlow's profiler plugin, and the garbage collector during the
import. Imports nothing from tfdist and never imports TensorFlow itself
(it wraps the import wherever the process first makes it). Library code
calls none of this: entry points apply it (they own os.environ,
sys.modules and the garbage collector).

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
* A third of the import's CPU time is Python's cyclic garbage collector:
  ``import tensorflow`` (and tf-keras) makes about a million objects that
  live as long as the process, and the collector traverses them again and
  again while they are made, and once more at exit, to find almost nothing
  (about 1,500 objects). :func:`collect_after_tensorflow_import` pauses it
  for that import and then freezes what the import made (``gc.freeze``):
  2.99 instead of 4.31 CPU-seconds per process, the same peak memory.
"""

from __future__ import annotations

import gc
import glob
import importlib
import importlib.abc
import importlib.util
import sys
import types
from typing import Mapping, MutableMapping

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


class _CollectorPaused(importlib.abc.Loader):
  """Runs a module's loader with the cyclic garbage collector paused, then
  freezes every object made so far (they are no longer traversed)."""

  def __init__(self, loader, then: tuple):
    self._loader = loader
    self._then = then

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    # The module keeps its own loader (importlib.resources, inspect).
    module.__loader__ = module.__spec__.loader = self._loader
    enabled = gc.isenabled()
    gc.disable()
    try:
      self._loader.exec_module(module)
      for name in self._then:  # modules it loads lazily, later
        importlib.import_module(name)
    finally:
      gc.collect()  # the few cycles the import left, before the freeze
      gc.freeze()
      if enabled:
        gc.enable()


class _FirstImport(importlib.abc.MetaPathFinder):
  """Finds ``name`` once, the first time it is imported, with its loader
  wrapped in :class:`_CollectorPaused`; then leaves ``sys.meta_path``."""

  def __init__(self, name: str, then: tuple):
    self._name = name
    self._then = then

  def find_spec(self, fullname, path, target=None):
    del path, target
    if fullname != self._name:
      return None
    sys.meta_path.remove(self)
    spec = importlib.util.find_spec(fullname)
    if spec is not None and spec.loader is not None:
      spec.loader = _CollectorPaused(spec.loader, self._then)
    return spec


def collect_after_tensorflow_import(environ: Mapping,
                                    modules: Mapping = sys.modules) -> None:
  """Imports TensorFlow, when the process first does, with the garbage
  collector paused, and tf-keras with it if ``TF_USE_LEGACY_KERAS`` asks
  for Keras 2 (tf.keras would load it later); then freezes what they made.
  Nothing happens if TensorFlow is imported already."""
  if "tensorflow" in modules or any(isinstance(f, _FirstImport)
                                    for f in sys.meta_path):
    return
  legacy = environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true")
  sys.meta_path.insert(
      0, _FirstImport("tensorflow", ("tf_keras",) if legacy else ()))


def prepare(environ: MutableMapping, *, has_gpu: bool,
            modules: MutableMapping = sys.modules) -> None:
  """Everything above, for an entry point about to import TensorFlow."""
  for key, value in environment(has_gpu=has_gpu).items():
    environ.setdefault(key, value)
  defer_profiler_plugin(modules)
  collect_after_tensorflow_import(environ, modules)

