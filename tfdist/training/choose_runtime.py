"""Which runtime a training task gets: :func:`create`.

Kept apart from tfdist.training.runtime (the interface, mirrored and
multiworker) and tfdist.training.ps_runtime (ps), which derives from it: neither
imports the other's subclasses. Imports tfdist.cluster.specs, training.config,
training.ps_runtime, training.runtime and training.strategy.
"""

from __future__ import annotations

from typing import Optional

from tfdist.cluster import specs as cluster_lib
from tfdist.training import ps_runtime
from tfdist.training import runtime
from tfdist.training import strategy as strategy_lib
from tfdist.training.config import TrainConfig

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
