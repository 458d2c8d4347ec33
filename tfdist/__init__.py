"""tfdist: distributed TensorFlow training from one laptop to Kubernetes.

The public names, kept stable (everything else is internal):

``tfdist.main(model_fn, *, name=None, defaults=None, optimizer_fn=None,
check_flags=None)``
  A training program's whole entry point: parses the flags, runs this
  process's task of the job (train, host or evaluate) and exits
  (tfdist.app.main).
``tfdist.Feature``
  One input of a model: name, kind (image, numeric, category, text, id,
  id_list), shape, dtype (tfdist.features); a model function gets a dict
  of them.
``tfdist.keras_inputs(features)``
  The Keras inputs of those features, a dict by name (also for one).
``tfdist.encoded(inputs, features, *, combine=True)``
  Those inputs made ready for a dense layer by Keras preprocessing layers
  built from the data's statistics and vocabularies (tfdist.preprocessing).
``tfdist.preprocessing_layer(feature, *, output="encoded")``
  One feature's preprocessing layer (``ids`` for an Embedding).
``tfdist.ConfigError``
  Bad input: raised by a model function or a program's flag check, it
  ends the program with one ``error:`` line and status 2.

The model-function contract (what a model function gets and returns, what
tfdist owns): tfdist.contract.

The commands: ``python -m tfdist.train``, ``tfdist.launch``,
``tfdist.tfconfig``, ``tfdist.data``, ``tfdist.predict``, ``tfdist.k8s``,
``tfdist.bench``.

Importing tfdist imports neither TensorFlow nor absl: the names above are
loaded on first use.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_PUBLIC = {"main": "tfdist.app", "Feature": "tfdist.features",
           "keras_inputs": "tfdist.features",
           "encoded": "tfdist.preprocessing",
           "preprocessing_layer": "tfdist.preprocessing",
           "ConfigError": "tfdist.errors"}


def __getattr__(name):
  if name in _PUBLIC:
    return getattr(importlib.import_module(_PUBLIC[name]), name)
  raise AttributeError(f"module 'tfdist' has no attribute {name!r}")


def __dir__():
  return sorted([*globals(), *_PUBLIC])
