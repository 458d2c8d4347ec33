"""The rules by which Kubernetes retries or fails a job, as the exercise applies them.

The Job controller, for a pod that failed with an exit status: the first
rule of the Job's ``podFailurePolicy`` that matches the status decides
(``FailJob``: the Job fails at once; ``Ignore``: a new pod, not counted;
``Count``), and a status no rule matches is counted; a new pod replaces the
failed one (same index, same volumes) until more than ``backoffLimit`` pods
failed. The JobSet controller, for a Job that failed: the first rule of the
``failurePolicy`` whose reasons and replicated jobs match decides
(``FailJobSet``, or ``RestartJobSet``: every Job recreated), a restart only
while fewer than ``maxRestarts`` were made; its ``successPolicy`` says when
the set is complete (a Job's own ``successPolicy`` may complete it before
every index succeeded). A Job's ``podReplacementPolicy``: ``Failed`` (a new pod
only once the old one has terminated), the only value allowed beside a
podFailurePolicy; the exercise's pods are processes replaced only once they
have exited, i.e. ``Failed``. Admission: a suspended JobSet or Job starts
only when something unsuspends it; Kueue does so for one labelled with a
queue (all its pods at once, once their quota fits).

Owns JobState, JobSetState, replacement_policy and admission. Imports
tfdist.errors and tfdist.k8s.kueue (a label's name) only; no process is
started here (tfdist.k8s.exercise runs them).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from tfdist.errors import ConfigError
from tfdist.k8s import kueue

FAIL_JOB, IGNORE, COUNT = "FailJob", "Ignore", "Count"
# Job failure reasons, as the Job controller sets them.
POD_FAILURE_POLICY = "PodFailurePolicy"
BACKOFF_LIMIT = "BackoffLimitExceeded"
DEADLINE = "DeadlineExceeded"
FAIL_JOBSET, RESTART_JOBSET = "FailJobSet", "RestartJobSet"
REPLACE_FAILED, REPLACE_TERMINATING = "Failed", "TerminatingOrFailed"


def replacement_policy(name: str, job_spec: dict) -> str:
  """The Job's podReplacementPolicy as Kubernetes applies it.

  Without the field: ``Failed`` beside a podFailurePolicy, else
  ``TerminatingOrFailed`` (Kubernetes' defaults).

  Raises:
    ConfigError: a value the API server rejects (an unknown one, or
      TerminatingOrFailed beside a podFailurePolicy).
  """
  with_policy = "podFailurePolicy" in job_spec
  policy = job_spec.get("podReplacementPolicy",
                        REPLACE_FAILED if with_policy else REPLACE_TERMINATING)
  if policy not in (REPLACE_FAILED, REPLACE_TERMINATING):
    raise ConfigError(f"Job {name}: podReplacementPolicy {policy!r}: use "
                      f"{REPLACE_FAILED} or {REPLACE_TERMINATING}")
  if with_policy and policy != REPLACE_FAILED:
    raise ConfigError(f"Job {name}: podReplacementPolicy {policy} beside a "
                      "podFailurePolicy, which the API server rejects: set "
                      f"{REPLACE_FAILED}")
  return policy


def admission(resource: dict) -> str:
  """The Kueue queue that starts a suspended Job or JobSet ('' if it is not
  suspended).

  Raises:
    ConfigError: it is suspended and no queue label names who would ever
      unsuspend it.
  """
  if not resource.get("spec", {}).get("suspend"):
    return ""
  queue = resource["metadata"].get("labels", {}).get(kueue.QUEUE_LABEL)
  if not queue:
    raise ConfigError(f"{resource['kind']} {resource['metadata']['name']} is "
                      f"suspended and has no {kueue.QUEUE_LABEL} label: "
                      "nothing would ever start it; drop spec.suspend, or "
                      "label it with the Kueue LocalQueue that admits it")
  return queue


def admit(objects: list) -> list:
  """``(kind and name, queue)`` of each suspended Job or JobSet that Kueue
  would admit, after checking every Job's podReplacementPolicy and that
  something would start each (``objects``: a JobSet's Jobs too).

  Raises:
    ConfigError: as replacement_policy and admission do.
  """
  queued = []
  for o in objects:
    if o.get("kind") == "Job":
      replacement_policy(o["metadata"]["name"], o["spec"])
    queue = admission(o) if o.get("kind") in ("Job", "JobSet") else ""
    if queue:
      queued.append((f"{o['kind']} {o['metadata']['name']}", queue))
  return queued


def pod_failure_action(job_spec: dict, container: str, status: int) -> str:
  """What the Job's podFailurePolicy does with a pod that exited ``status``.

  Rules on pod conditions (``DisruptionTarget``: preempted, evicted) never
  match here: the exercise's pods end by their exit status.
  """
  for rule in job_spec.get("podFailurePolicy", {}).get("rules", []):
    codes = rule.get("onExitCodes")
    if codes is None or codes.get("containerName", container) != container:
      continue
    if (status in codes.get("values", [])) == (codes["operator"] == "In"):
      if rule["action"] not in (FAIL_JOB, IGNORE, COUNT):
        raise ConfigError(f"podFailurePolicy action {rule['action']!r}: the "
                          "exercise knows FailJob, Ignore and Count")
      return rule["action"]
  return COUNT


def _index_set(text: str) -> set:
  """A Job's index list (``"0,2-4"``) as a set."""
  indexes = set()
  for part in text.split(","):
    first, _, last = part.partition("-")
    indexes.update(range(int(first), int(last or first) + 1))
  return indexes


@dataclasses.dataclass
class JobState:
  """One Indexed Job: which indexes succeeded, how many pods failed."""
  name: str
  spec: dict
  container: str
  succeeded: set = dataclasses.field(default_factory=set)
  failures: int = 0
  failed: Optional[str] = None  # the reason, once the Job failed

  @property
  def complete(self) -> bool:
    """Every index succeeded, or a rule of the successPolicy holds: its
    succeededIndexes all succeeded and at least succeededCount of them
    (each part optional; the Job controller then removes the pods left)."""
    if len(self.succeeded) >= self.spec.get("completions", 1):
      return True
    for rule in self.spec.get("successPolicy", {}).get("rules", []):
      indexes = (_index_set(rule["succeededIndexes"])
                 if "succeededIndexes" in rule else None)
      done = self.succeeded if indexes is None else self.succeeded & indexes
      if ((indexes is None or indexes <= self.succeeded)
          and len(done) >= rule.get("succeededCount", 0)):
        return True
    return False

  @property
  def backoff_limit(self) -> int:
    return self.spec.get("backoffLimit", 6)  # Kubernetes' default

  def pod_failed(self, status: int) -> str:
    """Applies the rules to a failed pod; returns the action taken.

    ``FailJob`` (or ``Count`` past backoffLimit) fails the Job: ``failed``
    is then set. Otherwise a new pod is due.
    """
    action = pod_failure_action(self.spec, self.container, status)
    if action == FAIL_JOB:
      self.failed = POD_FAILURE_POLICY
    elif action == COUNT:
      self.failures += 1
      if self.failures > self.backoff_limit:
        self.failed = BACKOFF_LIMIT
    return action


@dataclasses.dataclass
class JobSetState:
  """One JobSet: its failure and success policies, restarts made."""
  name: str
  spec: dict
  restarts: int = 0

  @property
  def max_restarts(self) -> int:
    return self.spec.get("failurePolicy", {}).get("maxRestarts", 0)

  def job_failed(self, replicated_job: str, reason: str) -> str:
    """FailJobSet or RestartJobSet for a failed Job (a restart is counted).

    Without a failurePolicy any failed Job fails the set; with one, a Job no
    rule matches restarts it. Either way past maxRestarts it fails.
    """
    policy = self.spec.get("failurePolicy")
    if policy is None:
      return FAIL_JOBSET
    action = RESTART_JOBSET
    for rule in policy.get("rules", []):
      targets = rule.get("targetReplicatedJobs") or [replicated_job]
      reasons = rule.get("onJobFailureReasons") or [reason]
      if replicated_job in targets and reason in reasons:
        action = rule["action"]
        break
    if action not in (FAIL_JOBSET, RESTART_JOBSET):
      raise ConfigError(f"JobSet {self.name}: failurePolicy action "
                        f"{action!r}: the exercise knows FailJobSet and "
                        "RestartJobSet")
    if action == RESTART_JOBSET and self.restarts < self.max_restarts:
      self.restarts += 1
      return RESTART_JOBSET
    return FAIL_JOBSET

  def succeeded(self, complete_jobs: set) -> bool:
    """Whether the successPolicy holds, given the complete replicated jobs."""
    policy = self.spec.get("successPolicy", {})
    targets = policy.get("targetReplicatedJobs") or [
        r["name"] for r in self.spec["replicatedJobs"]]
    met = [t in complete_jobs for t in targets]
    return any(met) if policy.get("operator") == "Any" else all(met)
