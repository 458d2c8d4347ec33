"""The cluster: who the tasks are, and how they are started on one machine.

Owns: cluster specs and TF_CONFIG (specs), one task's TF_CONFIG printed
(tfconfig), the local launcher (launch) and its prefixed output (relay),
and preflight (every address free or answering before TensorFlow starts).

May import: tfdist.cli, console, errors (and one another). Nothing of
training, liveness, model, serving or data: those build on it
(setup.cfg's import-linter contracts).
"""
