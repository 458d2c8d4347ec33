"""tfdist: distributed TensorFlow training from one laptop to Kubernetes.

The public names, kept stable (everything else is internal):

``tfdist.main(model_fn, *, name=None, defaults=None, optimizer_fn=None,
check_flags=None, loss=None, metrics=None, callbacks=None)``
  A training program's whole entry point: parses the flags, runs this
  process's task of the job (train, host or evaluate) and exits
  (tfdist.app.main).
``tfdist.fit(model_fn, *, name=None, loss=None, metrics=None,
callbacks=None, optimizer_fn=None, tf_config=None, **settings) -> dict``
  The same job from Python: the flags are keyword settings, the cluster
  task a ``tf_config=`` argument; returns the result (the JSON line main
  prints), raises ConfigError on bad input, never exits
  (tfdist.app.fit).
``tfdist.Feature``
  One input of a model: name, kind (image, numeric, category, text, id,
  id_list), shape, dtype (tfdist.data.features); a model function gets a dict
  of them.
``tfdist.keras_inputs(features)``
  The Keras inputs of those features, a dict by name (also for one).
``tfdist.encoded(inputs, features, *, combine=True)``
  Those inputs made ready for a dense layer by Keras preprocessing layers
  built from the data's statistics and vocabularies
  (tfdist.model.preprocessing).
``tfdist.preprocessing_layer(feature, *, output="encoded")``
  One feature's preprocessing layer (``ids`` for an Embedding).
``tfdist.ConfigError``
  Bad input: raised by a model function or a program's flag check, it
  ends the program with one ``error:`` line and status 2.

The model-function contract (``model_fn(features, num_outputs)``, what it
gets and returns, what tfdist owns): tfdist.model.contract; the tasks
(classification, regression, multilabel), their losses and metrics, and
how a model's own loss, metrics and optimizer are kept: tfdist.model.tasks and
tfdist.training.trainable.

The commands: ``python -m tfdist.train``, ``tfdist.launch``,
``tfdist.tfconfig``, ``tfdist.data``, ``tfdist.predict``, ``tfdist.k8s``,
``tfdist.bench`` (or ``tfdist train``, ``tfdist launch`` ...). Where
everything lives, and who may import whom: docs/architecture.md.

Importing tfdist imports neither TensorFlow nor absl: the names above are
loaded on first use.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_PUBLIC = {"main": "tfdist.app", "fit": "tfdist.app",
           "Feature": "tfdist.data.features",
           "keras_inputs": "tfdist.data.features",
           "encoded": "tfdist.model.preprocessing",
           "preprocessing_layer": "tfdist.model.preprocessing",
           "ConfigError": "tfdist.errors"}


def __getattr__(name):
  if name in _PUBLIC:
    return getattr(importlib.import_module(_PUBLIC[name]), name)
  raise AttributeError(f"module 'tfdist' has no attribute {name!r}")


def __dir__():
  return sorted([*globals(), *_PUBLIC])
