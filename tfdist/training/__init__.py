"""Training: a model trained under a strategy, from the flags to the result.

Owns: what to train (config: TrainConfig), the strategies (strategy) and
their runtimes (runtime: mirrored and multiworker; ps_runtime and its
ps_coordinator; choose_runtime), the loop of one training task (loop,
trainable, the fused step and its communication and collectives, precision,
schedules, monitor), the tasks that host (hosting), who trains in an elastic
job (elastic), checkpoints and ps saves (checkpoint, ps_save), variable
sharding (sharding), and the test measurement and the evaluator task
(measurement, evaluator).

May import: tfdist.serving, model, liveness, cluster, data, cli, console,
tf_startup, errors. Only the entry layer (tfdist.app, lifecycle, k8s,
train, bench) imports it (setup.cfg's import-linter contracts).
"""
