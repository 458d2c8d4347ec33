"""Thin absl entry points; the work is done by the tfdist library."""
