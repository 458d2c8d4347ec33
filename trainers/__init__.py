"""The shipped trainers: each a model function and its defaults, run by
tfdist.main (the same public entry a user's own train.py calls)."""
