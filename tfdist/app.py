"""The entry points of every training program: :func:`main` and :func:`fit`.

A user's own ``train.py``::

    import tfdist
    from my_project.model import build

    if __name__ == "__main__":
      tfdist.main(build, defaults={"epochs": 10, "batch_size": 64})

gets every flag of the shipped trainers, under all three strategies, with
TF_CONFIG, ``python -m tfdist.launch`` and Kubernetes. The flags are generated:
one per field of tfdist.training.config.TrainConfig and
tfdist.data.options.DataConfig (its name, type, default and help); ``defaults``
only changes defaults. :func:`fit` runs the same job from Python (a notebook, a
sweep) with the same settings as keyword arguments, and returns the result.
This module is the entry-point side: it reads the flags and the environment,
sets what TensorFlow reads before it starts, and hands plain arguments to
tfdist.lifecycle. Imports tfdist.cli, cluster.specs, training.config,
model.contract, errors, lifecycle, tf_startup and data.options; absl.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import typing
from typing import Callable, Mapping, Optional, Union

from absl import app as absl_app
from absl import flags
from absl import logging

from tfdist import cli
from tfdist import tf_startup
from tfdist.cluster import specs as cluster_lib
from tfdist.data.options import DataConfig
from tfdist.errors import ConfigError
from tfdist.model import contract
from tfdist.training import config as config_lib

FLAGS = flags.FLAGS
SETTINGS = (config_lib.TrainConfig, DataConfig)
_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
           float: flags.DEFINE_float, str: flags.DEFINE_string,
           Optional[str]: flags.DEFINE_string,
           Optional[float]: flags.DEFINE_float}
# The flags define_flags defined (a program's own flag may share a name).
_DEFINED = set()


def prepare_environment(environ=os.environ) -> None:
  """What an entry point sets before TensorFlow starts (a user's own
  setting stands): tf.keras is tf-keras (Keras 2), the Keras that runs
  all three strategies (Keras 3 cannot run ParameterServerStrategy; the
  library's check says so in one line if a user chose it); TensorFlow's
  C++ INFO lines (server options, device dumps) off; no CUDA error on a
  machine without a GPU (tfdist.tf_startup)."""
  environ.setdefault("TF_USE_LEGACY_KERAS", "1")
  environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  tf_startup.prepare(environ, has_gpu=tf_startup.has_gpu_device())


def _fields() -> list:
  return [f for s in SETTINGS for f in dataclasses.fields(s)]


def define_flags() -> None:
  """One flag per settings field (once per process).

  Raises:
    ConfigError: the program defined an absl flag of a tfdist flag's name.
  """
  for field in _fields():
    if field.name in FLAGS and field.name not in _DEFINED:
      raise ConfigError(
          f"the program defines its own flag --{field.name}, which is a "
          f"tfdist flag ({field.metadata['help'].split('.')[0]}); rename "
          f"yours, or set tfdist's default with "
          f"tfdist.main(..., defaults={{{field.name!r}: ...}})")
  if _DEFINED:
    return
  for settings_class in SETTINGS:
    types = typing.get_type_hints(settings_class)
    for field in dataclasses.fields(settings_class):
      _DEFINE[types[field.name]](field.name, field.default,
                                 field.metadata["help"])
      _DEFINED.add(field.name)


def flags_table(settings_class) -> str:
  """The flags of ``settings_class``'s fields as a Markdown table (name,
  default, help): the docs' flag reference is generated from this, the
  fields being the one declaration of each setting."""
  rows = ["| flag | default | what it sets |", "|---|---|---|"]
  for field in dataclasses.fields(settings_class):
    default = "" if field.default is None else f"`{field.default!r}`"
    text = field.metadata["help"].replace("|", "\\|")
    rows.append(f"| `--{field.name}` | {default} | {text} |")
  return "\n".join(rows)


def set_defaults(defaults: Mapping[str, object]) -> None:
  """New defaults for tfdist's flags; ConfigError names an unknown one."""
  known = {f.name for f in _fields()}
  for name, value in defaults.items():
    if name not in known:
      raise ConfigError(f"defaults={{{name!r}: ...}}: no such tfdist flag; "
                        "see python -m tfdist.train --helpfull")
    FLAGS.set_default(name, value)


def _settings(settings_class, **overrides):
  values = {field.name: FLAGS[field.name].value
            for field in dataclasses.fields(settings_class)}
  return settings_class(**{**values, **overrides})


def train_config(task: Optional[cluster_lib.Task]) -> config_lib.TrainConfig:
  """The training flags, checked. ``--verbose=-1``: a progress bar on a
  terminal, one line per epoch in logs; only the chief reports."""
  return _settings(config_lib.TrainConfig, verbose=config_lib.keras_verbosity(
      FLAGS.verbose, is_chief=task is None or task.is_chief,
      on_terminal=sys.stdout.isatty()))


def data_config() -> DataConfig:
  """The data flags, checked (no TensorFlow)."""
  return _settings(DataConfig)


Name = Union[str, Callable[[], str], None]


def _model_name(model_fn: Callable, name: Name) -> str:
  if callable(name):
    return name()
  return name or getattr(model_fn, "__name__", "model")


def _user_model(model_fn: Union[Callable, str], *, name: Name, loss,
                metrics, callbacks, optimizer_fn) -> contract.UserModel:
  """What the program gave, checked (a model named by a string imported)."""
  function = (import_model(model_fn) if isinstance(model_fn, str)
              else model_fn)
  for argument, value in (("metrics", metrics), ("callbacks", callbacks)):
    if value is not None and not isinstance(value, (list, tuple)):
      raise ConfigError(f"{argument}={value!r}: give a list")
  return contract.UserModel(
      model_fn=function, name=_model_name(function, name), loss=loss,
      metrics=tuple(metrics or ()), callbacks=tuple(callbacks or ()),
      optimizer_fn=optimizer_fn)


def run(model_fn: Union[Callable, str], *, name: Name = None,
        optimizer_fn: Optional[Callable] = None,
        check_flags: Optional[Callable[[], None]] = None, loss: object = None,
        metrics: Optional[list] = None,
        callbacks: Optional[list] = None) -> int:
  """Runs this process's task with the parsed flags; returns its status.

  For an entry point that parses the flags itself (absl); :func:`main`
  does that and calls this. Bad input is one ``error:`` line and status 2.
  """
  if not FLAGS["verbosity"].present:
    # TensorFlow's Python INFO lines (one per all-reduce set-up) hide the
    # training log; --verbosity=0 brings them back.
    logging.set_verbosity(logging.WARNING)
  from tfdist import lifecycle  # pylint: disable=g-import-not-at-top

  def run_checked() -> int:
    function = (import_model(model_fn) if isinstance(model_fn, str)
                else model_fn)
    task = cluster_lib.task_from_environ(os.environ)
    config = train_config(task)
    if check_flags is not None:
      check_flags()  # may point the data flags at data it prepared
    data = data_config()  # every flag checked before any task starts
    data.source()  # where the data is, checked without TensorFlow
    # The name may read the program's flags, checked now.
    user = _user_model(function, name=name, loss=loss, metrics=metrics,
                       callbacks=callbacks, optimizer_fn=optimizer_fn)
    return lifecycle.run(
        config=config, data_config=data, user=user, task=task,
        process=lifecycle.Process(sys.executable, tuple(sys.orig_argv),
                                  dict(os.environ)))

  return cli.run(run_checked)


def import_model(reference: str) -> Callable:
  """The model function ``PACKAGE.MODULE:FUNCTION`` names, imported from
  the Python path (the current directory first, under ``python -m``).

  Raises:
    ConfigError: not of that form, no such module or function, the
      module's import failed, or the name is not a function.
  """
  flag = f"--model={reference}"
  module_name, _, attribute = reference.partition(":")
  if (not module_name or not attribute
      or not all(part.isidentifier() for part in module_name.split("."))
      or not all(part.isidentifier() for part in attribute.split("."))):
    raise ConfigError(f"{flag}: name the model function as "
                      "PACKAGE.MODULE:FUNCTION, e.g. "
                      "--model=my_project.model:build")
  try:
    found = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name and module_name.startswith(e.name):
      raise ConfigError(f"{flag}: no module {e.name} on the Python path; run "
                        "from the directory that holds it, or pip install "
                        "its project") from None
    raise ConfigError(f"{flag}: importing {module_name} failed: {e}") from None
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"{flag}: importing {module_name} failed "
                      f"({type(e).__name__}: {e})") from None
  for part in attribute.split("."):
    if not hasattr(found, part):
      raise ConfigError(f"{flag}: {module_name} has no {attribute}; define "
                        f"def {attribute.split('.')[-1]}(features, "
                        "num_outputs) there, or name another function")
    found = getattr(found, part)
  if not callable(found):
    raise ConfigError(f"{flag}: {attribute} is a {type(found).__name__}, "
                      "not a function returning a Keras model")
  return found


def check_no_arguments(args) -> None:
  """absl passes the words left after the flags: there must be none."""
  if len(args) > 1:
    raise absl_app.UsageError(f"unexpected arguments: {' '.join(args[1:])}")


def main(model_fn: Union[Callable, str], *, name: Name = None,
         defaults: Optional[Mapping[str, object]] = None,
         optimizer_fn: Optional[Callable] = None,
         check_flags: Optional[Callable[[], None]] = None,
         argv: Optional[list] = None, loss: object = None,
         metrics: Optional[list] = None,
         callbacks: Optional[list] = None) -> None:
  """Parses the command line, runs this process's task and exits.

  Args:
    model_fn: ``model_fn(features, num_outputs)`` returns a Keras model,
      compiled or not (the contract: tfdist.model.contract); called after the
      flags are parsed, so it may read a program's own absl flags. Or
      ``"PACKAGE.MODULE:FUNCTION"``, imported after the flags are parsed.
    name: the result's and the checkpoints' model name, or a function of
      no arguments returning it (called after the flags are parsed);
      default: the model function's ``__name__``.
    defaults: new defaults of tfdist's flags, e.g. ``{"epochs": 10}``.
    optimizer_fn: ``optimizer_fn(learning_rate)`` returns a tf.keras
      optimizer (``learning_rate`` a float or a schedule: --learning_rate
      after the large-batch recipe); default: the model's compiled
      optimizer, else --optimizer's (tfdist.training.trainable has the order).
    check_flags: called once the flags are parsed and tfdist's training
      flags checked, before the data flags are read and the task starts:
      checks a program's own flags, and may set tfdist's data flags (e.g.
      to data it prepared); a ``tfdist.ConfigError`` it raises is the
      program's one ``error:`` line (status 2).
    argv: the command line (default ``sys.argv``).
    loss: a tf.keras loss (object, name, or function of ``(y_true,
      y_pred)``) instead of the task's (tfdist.model.tasks); a model compiled
      with a loss keeps its own, and giving both is an error.
    metrics: tf.keras metrics (objects, names or functions) beside the
      task's: trained with, logged, and measured on the test split.
    callbacks: tf.keras callbacks for ``fit``, after tfdist's own (on
      every training task: the chief, and under multiworker each worker).
  """
  prepare_environment()
  try:
    define_flags()
    set_defaults(defaults or {})
  except ConfigError as e:
    sys.exit(cli.report(e))

  def absl_main(args):
    check_no_arguments(args)
    return run(model_fn, name=name, optimizer_fn=optimizer_fn,
               check_flags=check_flags, loss=loss, metrics=metrics,
               callbacks=callbacks)

  with cli.help_is_success(argv):
    absl_app.run(absl_main, argv=argv)


def _settings_of(settings: Mapping[str, object],
                 task: Optional[cluster_lib.Task]) -> tuple:
  """(TrainConfig, DataConfig) of keyword settings, checked."""
  known = {f.name for f in _fields()}
  unknown = sorted(set(settings) - known)
  if unknown:
    raise ConfigError(f"fit(..., {unknown[0]}=...): no such setting; the "
                      "settings are tfdist's flags (python -m tfdist.train "
                      "--helpfull)")

  def of(settings_class, **overrides):
    names = {f.name for f in dataclasses.fields(settings_class)}
    return settings_class(**{**{k: v for k, v in settings.items()
                                if k in names}, **overrides})

  config = of(config_lib.TrainConfig)
  config = dataclasses.replace(config, verbose=config_lib.keras_verbosity(
      config.verbose, is_chief=task is None or task.is_chief,
      on_terminal=sys.stdout.isatty()))
  return config, of(DataConfig)


def fit(model_fn: Union[Callable, str], *, name: Optional[str] = None,
        loss: object = None, metrics: Optional[list] = None,
        callbacks: Optional[list] = None,
        optimizer_fn: Optional[Callable] = None,
        tf_config: Union[str, Mapping, None] = None,
        **settings: object) -> dict:
  """Runs the job :func:`main` runs, from Python, and returns its result.

  ``tfdist.fit(build, epochs=30, train_files="records/train-*",
  test_files="records/test-*")`` trains and returns the result dict that
  main prints as its JSON line: no flags are parsed, no environment
  variable is read, and nothing exits.

  Args:
    model_fn: as for :func:`main`.
    name: the model's name in the result (default: the function's).
    loss: as for :func:`main`.
    metrics: as for :func:`main`.
    callbacks: as for :func:`main`.
    optimizer_fn: as for :func:`main`.
    tf_config: this process's task of a cluster, as a TF_CONFIG (a JSON
      string, or its dict); None: one process (mirrored, or ps with an
      in-process cluster).
    **settings: tfdist's flags by name (``strategy="ps"``, ``epochs=3``,
      ``train_files=...``); the rest keep their defaults.

  Returns:
    A training task's result (as main prints it), the evaluator's, or for
    a ps worker or ps task ``{"task", "role": "host", "status"}``.

  Raises:
    ConfigError: bad settings, data or model function (the one line main
      would print).
    tfdist.errors.PeerLost, Stalled, Preempted: the job could not go on;
      in a cluster task, end the process after it (TensorFlow's teardown
      may wait for the lost peer).
  """
  from tfdist import lifecycle  # pylint: disable=g-import-not-at-top
  prepare_environment()
  logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines
  user = _user_model(model_fn, name=name, loss=loss, metrics=metrics,
                     callbacks=callbacks, optimizer_fn=optimizer_fn)
  task = cluster_lib.parse_tf_config(
      tf_config if tf_config is None or isinstance(tf_config, str)
      else json.dumps(tf_config))
  config, data = _settings_of(settings, task)
  if config.min_workers:
    raise ConfigError("fit(..., min_workers=...): a regroup re-executes the "
                      "process; run the job with tfdist.main or python -m "
                      "tfdist.train instead")
  data.source()  # where the data is, checked without TensorFlow
  return lifecycle.perform(config=config, data_config=data, user=user,
                           task=task)
