"""Liveness: no task waits forever, and a lost peer ends the job clean.

Owns: the deadlines of every wait (deadlines), the guards that end a task
that stopped moving (watchdog) and the sentinel process behind them
(sentinel), the stall and peer watches (stall_watch, peer_watch), the
barriers between tasks (barrier) and TensorFlow's coordination-service
settings and its peer-loss errors (coordination).

May import: tfdist.cluster, cli, console, errors (and one another).
Training, the model and serving build on it (setup.cfg's import-linter
contracts).
"""
