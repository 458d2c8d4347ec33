"""The model: what a user's model function gets and gives, and the shipped
models.

Owns: the model-function contract (contract), the tasks with their losses
and metrics (tasks), the preprocessing layers built from the data's
statistics (preprocessing) and the shipped models (models). The features a
model gets are the data's (tfdist.data.features).

May import: tfdist.liveness (the peer-loss errors), data, cli, console,
errors. Never training, serving or the entry layer (setup.cfg's
import-linter contracts); serving never imports it either.
"""
