"""Flags and the ``main`` shared by every trainer (entry-point side only).

Each trainer module defines its model and defaults and calls
:func:`run_trainer`; the flags below are the same for all of them, so a user
who learnt one trainer knows them all. Every training setting is a field of
tfdist.config.TrainConfig, every data setting one of
tfdist.data.options.DataConfig, and its flag is generated from the field
(name, type, default, help); a trainer changes only defaults
(``FLAGS.set_default``).
This module reads the flags and the environment; the library never does.
"""

import dataclasses
import json
import os
import sys
import typing
from typing import Callable, Optional

# Before TensorFlow is imported anywhere: tf.keras must be tf-keras (Keras 2),
# the Keras that runs all three strategies (Keras 3 cannot run
# ParameterServerStrategy). setdefault, so a user's explicit choice stands and
# meets the library's one-line Keras check instead.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ INFO lines (server options, device dumps) drown the
# training log; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# No cuInit error without a GPU, TensorFlow's start-up block once: see there.
from tfdist import tf_startup  # pylint: disable=g-import-not-at-top,wrong-import-position
tf_startup.prepare(os.environ, has_gpu=tf_startup.has_gpu_device())

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position

from tfdist import cli  # pylint: disable=wrong-import-position
from tfdist import cluster  # pylint: disable=wrong-import-position
from tfdist import config as config_lib  # pylint: disable=wrong-import-position
from tfdist import console  # pylint: disable=wrong-import-position
from tfdist import data  # pylint: disable=wrong-import-position
from tfdist import deadlines  # pylint: disable=wrong-import-position
from tfdist import errors  # pylint: disable=wrong-import-position
from tfdist import evaluator  # pylint: disable=wrong-import-position
from tfdist import hosting  # pylint: disable=wrong-import-position
from tfdist import strategy  # pylint: disable=wrong-import-position
from tfdist import train  # pylint: disable=wrong-import-position
from tfdist import watchdog  # pylint: disable=wrong-import-position
from tfdist.data import sources  # pylint: disable=wrong-import-position
from tfdist.data.options import DataConfig  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
           float: flags.DEFINE_float, str: flags.DEFINE_string,
           Optional[str]: flags.DEFINE_string}


def _define_flags(settings_class) -> None:
  """One flag per field of ``settings_class``: its name, type, default and
  help."""
  types = typing.get_type_hints(settings_class)
  for field in dataclasses.fields(settings_class):
    _DEFINE[types[field.name]](field.name, field.default,
                               field.metadata["help"])


def _settings(settings_class, **overrides):
  """``settings_class`` built from the flags of its fields."""
  values = {field.name: FLAGS[field.name].value
            for field in dataclasses.fields(settings_class)}
  return settings_class(**{**values, **overrides})


_define_flags(config_lib.TrainConfig)
_define_flags(DataConfig)
# Not a training setting: the evaluator's patience.
flags.DEFINE_float("eval_timeout", 600.0,
                   "Evaluator task: seconds without a new checkpoint before "
                   "it gives up.")


def _config(task) -> config_lib.TrainConfig:
  # A progress bar on a terminal; one line per epoch in logs, where the
  # bar's carriage returns would be noise. Only the chief reports.
  return _settings(config_lib.TrainConfig, verbose=config_lib.keras_verbosity(
      FLAGS.verbose, is_chief=task is None or task.is_chief,
      on_terminal=sys.stdout.isatty()))


def data_config() -> DataConfig:
  """The data flags, checked (no TensorFlow)."""
  return _settings(DataConfig)


def data_source(tfds_name: str = "mnist") -> data.Source:
  """The data flags resolved (data.resolve_source)."""
  config = data_config()
  return data.resolve_source(config.kind, mnist_dir=config.mnist_dir,
                             tfds_name=tfds_name,
                             tfds_data_dir=config.tfds_data_dir)


def _open_data(tfds_name: str = "mnist", image_shape=None):
  return sources.open_source(data_config(), tfds_name=tfds_name,
                             image_shape=image_shape, seed=FLAGS.seed)


def run_trainer(*, model_fn, model_name: str,
                data_options: Optional[Callable[[], dict]] = None) -> int:
  """Runs this process's part of the job; returns the exit status.

  Training tasks print one final JSON line with the result. Bad input is
  one ``error:`` line on stderr and exit status 2.

  Args:
    model_fn: ``model_fn(input_shape, num_classes)``, see tfdist.models.
    model_name: the result's "model".
    data_options: called first, before TensorFlow is imported: checks the
      trainer's own flags (raising ConfigError) and returns extra keyword
      arguments of ``tfdist.data.sources.open_source`` (``tfds_name``,
      ``image_shape``).
  """
  if not FLAGS["verbosity"].present:
    # TensorFlow's Python INFO lines (one per all-reduce set-up) hide the
    # training log; --verbosity=0 brings them back.
    logging.set_verbosity(logging.WARNING)
  return cli.run(lambda: _run_task_to_the_end(
      model_fn=model_fn, model_name=model_name, data_options=data_options))


def _restart_without(workers: list) -> None:
  """Re-executes this ps chief with a cluster that leaves out ``workers``
  (stalled: see tfdist.deadlines.StallWatch); it resumes from the last
  checkpoint in --model_dir and trains with the other workers."""
  task = cluster.task_from_environ(os.environ)
  # The others wait for the restart (the chief's address is silent until
  # its preflight), not just the chief's usual grace.
  hosting.signal_restart(task, skip=workers)
  kept = [address for index, address in enumerate(task.cluster["worker"])
          if f"worker-{index}" not in workers]
  env = dict(os.environ, TF_CONFIG=cluster.make_tf_config(
      dict(task.cluster, worker=kept), task.type, task.index))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)


def _run_task_to_the_end(**task) -> int:
  """:func:`_run_task`; a lost peer or Ctrl-C ends the process at once.

  TensorFlow's teardown would first wait for the peers (its shutdown
  barrier, a collective's or a remote call's pending calls): a cluster task
  that is done, lost a peer or got SIGINT ends without it
  (tfdist.watchdog.exit_now).
  """
  deadlines.on_stalled_workers(_restart_without)
  try:
    status = _run_task(**task)
    if os.environ.get("TF_CONFIG") and FLAGS.strategy != "multiworker":
      # Done, outputs written: TensorFlow's teardown would wait for any
      # peer's pending remote call, forever for a stopped peer. Not under
      # multiworker: every worker passed the final barrier, so all are
      # alive, and the coordination service's leader must stay until the
      # others have had the barrier's answer (its teardown waits for them).
      watchdog.exit_now(status)
    return status
  except errors.TaskLost as e:
    watchdog.exit_now(cli.report(e))
  except KeyboardInterrupt:
    console.info("interrupted (SIGINT); exiting")
    watchdog.exit_now(errors.EXIT_INTERRUPTED)


def _run_task(*, model_fn, model_name: str,
              data_options: Optional[Callable[[], dict]]) -> int:
  """This task's part of the job: host, evaluate or train."""
  options = data_options() if data_options else {}
  data_config()  # every data flag checked before any task starts
  task = cluster.task_from_environ(os.environ)
  config = _config(task)
  role = strategy.plan_role(config.strategy, task)
  if role == strategy.HOST:
    cluster.check_port_free(task)
    status = hosting.host_until_done(task, peer_timeout=config.peer_timeout)
    from tfdist import monitor  # pylint: disable=g-import-not-at-top
    # Hosting tasks print no result: their memory is this line (read by
    # tfdist.bench).
    console.info(f"{task.name} peak memory {monitor.peak_rss_mb()} MiB")
    return status
  dataset = _open_data(**options)
  if role == strategy.EVALUATE:
    result = evaluator.run(
        model_fn=model_fn, dataset=dataset, model_dir=config.model_dir,
        model_name=model_name, batch_size=config.eval_batch_size,
        timeout=FLAGS.eval_timeout, task_name=task.name)
  else:
    result = train.run(config, model_fn=model_fn, dataset=dataset,
                       task=task, model_name=model_name)
  console.result(result)
  return errors.EXIT_OK
