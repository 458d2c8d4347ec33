"""The one exception type that tfdist turns into a one-line error message."""


class ConfigError(ValueError):
  """Bad user input: a cluster spec, TF_CONFIG, flag or data directory.

  The message is one line that names the problem and the fix. Entry points
  print it as ``error: <message>`` and exit with status 2, without a
  traceback: a traceback is noise when the user only has to fix an input.
  """
