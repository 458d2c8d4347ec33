"""tfdist: distributed TensorFlow training from one laptop to Kubernetes.

The public names, kept stable (everything else is internal):

``tfdist.main(model_fn, *, name=None, defaults=None)``
  A training program's whole entry point: parses the flags, runs this
  process's task of the job (train, host or evaluate) and exits
  (tfdist.app.main).

The commands: ``python -m tfdist.train``, ``tfdist.launch``,
``tfdist.tfconfig``, ``tfdist.data``, ``tfdist.predict``, ``tfdist.k8s``,
``tfdist.bench``.

Importing tfdist imports neither TensorFlow nor absl: the names above are
loaded on first use.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_PUBLIC = {"main": "tfdist.app"}


def __getattr__(name):
  if name in _PUBLIC:
    return getattr(importlib.import_module(_PUBLIC[name]), name)
  raise AttributeError(f"module 'tfdist' has no attribute {name!r}")


def __dir__():
  return sorted([*globals(), *_PUBLIC])
