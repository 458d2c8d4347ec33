r"""The chaos sweep's trial kind "a worker gone for good" under --min_workers.

    python -m tfdist.bench.chaos --strategies=multiworker-elastic \
        --phases=training --actions=SIGKILL --targets=worker --trials=5

The shape ``multiworker-elastic`` (tfdist.bench.jobs: 3 workers with
``--min_workers=2``) SIGKILLed in training: the sweep never restarts a
task, so the target is gone for good. The other two must regroup without
it (tfdist.training.elastic), train to the end and exit 0, within a
deadline that counts their round and the rest of the training; a trial records whether
they did (``finished_without``), the workers of each membership change
and the global batch, from the first one's result line. Imports
tfdist.bench.jobs; no TensorFlow.
"""

from __future__ import annotations

import json

from tfdist.bench import jobs as jobs_lib

# At most, for the survivors to train the rest of the steps and evaluate
# on a loaded 2-core machine.
_REST_S = 120


def deadline_s(*, peer_timeout: float, heartbeat_timeout: float) -> float:
  """How long after the action the survivors may take to exit: the
  heartbeat or an aborted collective, their round (--peer_timeout), the
  new cluster's start (--peer_timeout), the rest of the training, 30 s."""
  return 3 * peer_timeout + heartbeat_timeout + 30 + _REST_S


def outcome(job: jobs_lib.Job, others: list) -> dict:
  """Whether ``others`` finished without the target (each exited 0), and
  from the first one's result line the workers at each membership change
  and the global batch."""
  results = [json.loads(job.result(n)) for n in others if job.result(n)]
  first = results[0] if results else {}
  return {"finished_without": all(job.status(n) == 0 for n in others),
          "membership": [m["workers"] for m in first.get("membership", [])],
          "global_batch_size": first.get("global_batch_size")}


def summary(records: list) -> list:
  """The summary's line for the trials of this kind (none without any)."""
  gone = [r for r in records if "finished_without" in r
          and r["action"] == "SIGKILL" and r["acted_in"] == "training"]
  if not gone:
    return []
  return [f"\nworkers SIGKILLed in training and never back, --min_workers: "
          f"{sum(r['finished_without'] for r in gone)} of {len(gone)} jobs "
          "finished on the others"]


def one_line(record: dict) -> str:
  """What a trial's line adds (nothing for other kinds)."""
  if "finished_without" not in record:
    return ""
  return (f" finished_without={record['finished_without']} membership="
          f"{record['membership']} "
          f"global_batch={record['global_batch_size']}")
