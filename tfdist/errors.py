"""What can go wrong, as exception types, and the exit status of each.

Owns: the exceptions that entry points turn into one line (never a
traceback) and the exit statuses every task, the launcher and the Kubernetes
manifests agree on. Imports nothing from tfdist.

========  ==========================================  ==============
status    meaning                                     on Kubernetes
========  ==========================================  ==============
0         done                                        complete
1         the program failed                          fails the job
2         bad input (:class:`ConfigError`)            fails the job
130       interrupted (SIGINT, Ctrl-C)                retried
142       TensorFlow held the task's main thread past retried
          a deadline or a signal's grace; ended by
          tfdist.sentinel's SIGALRM, after its line
143       preempted (SIGTERM; a checkpoint was saved) retried
200       a peer was lost, or a phase's peer deadline retried
          expired (:class:`PeerLost`)
========  ==========================================  ==============

Statuses 1-127 are the program's own verdict: a retry would fail again, so
the rendered ``podFailurePolicy`` fails the job at once. 128 and above mean
the task was stopped from outside and a new pod may succeed.
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
# 128 + the signal's number: what a shell reports for a process the signal
# ended, and what Kubernetes' and the launcher's retry rules look for.
EXIT_INTERRUPTED = 130  # SIGINT
EXIT_PREEMPTED = 143  # SIGTERM
# Above every 128 + signal status: a peer vanished or went silent past its
# deadline. Not this task's fault, so Kubernetes retries (>= 128).
EXIT_PEER_LOST = 200


class ConfigError(ValueError):
  """Bad user input: a cluster spec, TF_CONFIG, flag or data directory.

  The message is one line that names the problem and the fix. Entry points
  print it as ``error: <message>`` and exit with status 2, without a
  traceback: a traceback is noise when the user only has to fix an input.
  """


class TaskLost(RuntimeError):
  """A peer task vanished during training; the job must be relaunched."""


class Stalled(RuntimeError):
  """What this task waits for made no progress before its deadline.

  E.g. the evaluator saw no new checkpoint for ``--eval_timeout`` seconds.
  Nothing was lost; the task fails with one line and status 1.
  """


class PeerLost(TaskLost):
  """A peer stopped answering, or a blocking phase outlived its deadline.

  The message is one line naming the phase and the peers not heard from;
  the task exits with :data:`EXIT_PEER_LOST` so that a relaunch may succeed.
  """

  def __init__(self, phase: str, peers=()):
    names = ", ".join(peers) or "any peer"
    super().__init__(f"{phase}; not heard from {names}; the job is retried "
                     "once every task is back")
    self.phase = phase
    self.peers = tuple(peers)


class Preempted(Exception):
  """This task received SIGTERM; the job saved a checkpoint and stops."""

  def __init__(self, step: int, path, *, by=None):
    where = path or "the chief's --model_dir"
    signalled = f"SIGTERM to {by}" if by else "SIGTERM"
    super().__init__(f"preempted ({signalled}): saved step {step} to "
                     f"{where}; relaunch with the same --model_dir to resume")
    self.step = step
    self.path = path
    self.by = by
