"""Which runtime a training task gets: :func:`create`.

Kept apart from tfdist.runtime (the interface, mirrored and multiworker)
and tfdist.ps_runtime (ps), which derives from it: neither imports the
other's subclasses. Imports tfdist.cluster, config, ps_runtime, runtime and
strategy.
"""

from __future__ import annotations

from typing import Optional

from tfdist import cluster as cluster_lib
from tfdist import ps_runtime
from tfdist import runtime
from tfdist import strategy as strategy_lib
from tfdist.config import TrainConfig

_RUNTIMES = {"mirrored": runtime.MirroredRuntime,
             "multiworker": runtime.MultiWorkerRuntime,
             "ps": ps_runtime.ParameterServerRuntime}


def create(config: TrainConfig,
           task: Optional[cluster_lib.Task]) -> runtime.Runtime:
  """The runtime of a task whose role (strategy.plan_role) is TRAIN."""
  if strategy_lib.plan_role(config.strategy, task) != strategy_lib.TRAIN:
    raise ValueError(f"task {task.name} does not train under "
                     f"{config.strategy}; call hosting.host_until_done "
                     "instead")
  return _RUNTIMES[config.strategy](config, task)
