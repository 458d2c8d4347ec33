"""What can go wrong, as exception types, and the exit status of each.

Owns: the exceptions that entry points turn into one line (never a
traceback) and the exit statuses every task, the launcher and the Kubernetes
manifests agree on. Imports nothing from tfdist.

| status | meaning | on Kubernetes |
|---|---|---|
| 0 | done | complete |
| 1 | the program failed | fails the job |
| 2 | bad input (`ConfigError`) | fails the job |
| 130 | interrupted (SIGINT, Ctrl-C) | retried |
| 142 | TensorFlow froze the task (tfdist.liveness.sentinel's SIGALRM) | retried |
| 143 | preempted (SIGTERM) | retried |
| 200 | a peer was lost, or silent past a deadline, or this task's port stayed taken (`PeerLost`) | retried |

Bad input (2) is a flag, a spec or data that cannot work, a peer that
answered from a different cluster spec, or something else at a peer's
address. 142: TensorFlow held the task's main thread past a deadline or a
signal's grace; the sentinel said the phase's line, then ended it. 143:
SIGTERM at any moment; a checkpoint was saved if one was due. 200: a peer
was lost, or did not answer within a phase's deadline, preflight's
``--peer_timeout`` included.

Statuses 1-127 are the program's own verdict: a retry would fail again, so
the rendered ``podFailurePolicy`` fails the job at once, and so does
``python -m tfdist.launch --max_restarts`` (:func:`retried`: a local run
previews the cluster). 128 and above mean the task was stopped from
outside, or a peer was missing, and a new pod may succeed. Once TensorFlow
has started, every cause that is not the program's is one of them: a peer
lost at any moment (set-up and its restore, training, the final save, the
test accuracy, the export) is 200, and so is this task's own port held by
another process past ``--peer_timeout``; "corrupt, remove it" (2) is said
only of a checkpoint whose files fail to read here. A peer that never
answers preflight is retried, not a bad input: a pod may wait minutes for
a node (a cluster autoscaler adding one) or be preempted while it starts;
each retry counts against ``--max_restarts`` (the Job's ``backoffLimit``),
so a peer address that is simply wrong still ends the job, after those
retries, each with the line that names the peer.
Every other docstring points here instead of restating a status.
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
# The first status that is not a program's verdict (see the table).
_FIRST_RETRIED = 128


def retried(status: int) -> bool:
  """Whether a task that exited ``status`` (not 0) is run again: 128 and
  above, as the rendered podFailurePolicy and tfdist.cluster.launch decide."""
  return status >= _FIRST_RETRIED


class ConfigError(ValueError):
  """Bad user input: a cluster spec, TF_CONFIG, flag or data directory.

  The message is one line that names the problem and the fix. Entry points
  print it as ``error: <message>`` and exit with status 2, without a
  traceback: a traceback is noise when the user only has to fix an input.
  """


class Stalled(RuntimeError):
  """What this task waits for made no progress before its deadline.

  E.g. the evaluator saw no new checkpoint for ``--eval_timeout`` seconds.
  Nothing was lost; the task fails with one line and status 1.
  """


class PeerLost(RuntimeError):
  """A peer was lost or did not answer within a phase's deadline.

  The one exception type for a missing peer (exit status
  :data:`EXIT_PEER_LOST`, retried: see the table above). The message is
  one line: ``what`` and then either ``what_next`` or, by default, the
  peers not heard from and that the job is retried.
  """

  def __init__(self, what: str, peers=(), *, what_next: str = ""):
    if not what_next:
      names = ", ".join(peers) or "any peer"
      what_next = (f"not heard from {names}; the job is retried once every "
                   "task is back")
    super().__init__(f"{what}; {what_next}")
    self.phase = what
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
