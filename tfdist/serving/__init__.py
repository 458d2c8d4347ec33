"""Serving: a trained model exported, loaded again, and predicting.

Owns: the export (export: SavedModel versions and TFLite models), its
signatures and description (signatures), loading an export (loading),
predictions with their scores (predict, scoring) and image inputs
(image_files).

May import: tfdist.data, cli, console, tf_startup, errors. Never training,
the model or liveness: the trainer hands the export a plain copy of its
model (setup.cfg's import-linter contracts).
"""
