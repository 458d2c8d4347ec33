"""MkDocs hook: the flag reference, generated when the docs are built.

A line ``<!-- flags: tfdist.training.config.TrainConfig -->`` in a page becomes
the table of that settings class's flags (tfdist.app.flags_table): each flag is
declared once, as a field, and never copied by hand into the docs.
"""

import importlib
import re

from tfdist import app

_MARKER = re.compile(r"^<!-- flags: ([\w.]+) -->$", re.MULTILINE)


def _table(match) -> str:
  module, _, name = match.group(1).rpartition(".")
  return app.flags_table(getattr(importlib.import_module(module), name))


def on_page_markdown(markdown, **kwargs):
  del kwargs
  return _MARKER.sub(_table, markdown)
