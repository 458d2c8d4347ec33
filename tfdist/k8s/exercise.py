r"""Runs the pods of a manifest directory as local processes: no cluster.

    python -m tfdist.k8s exercise k8s [--pvc=CLAIM=DIR] \
        [--kill=mnist-worker-1@40steps] [-- --epochs=1]

For every pod the manifests' Indexed Jobs (or a JobSet's) would create, the
exercise starts the container's own command and arguments as a local
process, with the environment the pod would get: the container's ``env``,
plus what Kubernetes adds (``JOB_COMPLETION_INDEX``, ``HOSTNAME``). What
only a cluster provides is mapped, the way a node would provide it:

* DNS: every address in the cluster spec of a ConfigMap must be the name of
  a pod (``<job>-<index>.<subdomain>``) behind a headless Service of that
  subdomain selecting it, on a port the Service and container expose; it is
  rewritten to a free loopback port in the local copy of the ConfigMap.
* NetworkPolicy: every pod must be admitted to every such address's port
  (read, not enforced: loopback has no policies).
* Volumes: each ``mountPath`` becomes a local directory in the command and
  env (a ConfigMap's files written out, an emptyDir a fresh directory per
  pod, a PersistentVolumeClaim the directory given with ``--pvc CLAIM=DIR``
  or, for a claim the manifests create, a fresh one shared by every pod).
* The controllers (tfdist.k8s.controller): a pod that fails is replaced by
  a new one (same index, same claims, a fresh emptyDir) or fails its Job by
  the Job's podFailurePolicy and backoffLimit (a new pod once the old one
  has exited: podReplacementPolicy Failed); a failed Job of a JobSet
  restarts every pod or fails the set by its failurePolicy. Each restart is
  one ``[exercise]`` line.
* Kueue: a JobSet (or Job) suspended for a Kueue queue is admitted at once,
  in one line (no quota here); one suspended with no queue label would
  never start, which fails the exercise before any pod starts. ``--kill=POD@SECONDS`` (or ``@NUMBERsteps``: once
  a checkpoint of that step is in the pod's --model_dir) SIGKILLs a pod
  once, as a lost node or an OOM kill would; ``:gone`` after it keeps its
  replacement Pending for good (a node gone, none other fits).
* GPUs: none here; ``--all_reduce=nccl`` (GPU renders) runs as ring on a
  machine without GPUs, said in one line: the exercise proves everything
  but NCCL itself.

Arguments after ``--`` are appended to every trainer command (e.g. fewer
epochs). The job passes when every Job completes (each pod of it exited 0
by itself, none left running ``--grace`` seconds after the chief's pod
succeeded), or a JobSet's successPolicy holds. Not proven: that the image
builds and runs, scheduling (Kueue's quota and topology included), GPUs,
storage classes, NetworkPolicy enforcement, and a JobSet's startup order
(preflight makes it moot).

Owns the local stand-ins for volumes and the run of a job. Imports
tfdist.cli, tfdist.k8s.controller,
tfdist.k8s.local_cluster, tfdist.k8s.pod and tfdist.k8s.pods; never the
render.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import signal
import sys
import tempfile
import time
from typing import Optional

from tfdist import cli
from tfdist.errors import ConfigError
from tfdist.k8s import controller
from tfdist.k8s import local_cluster
from tfdist.k8s import pod as pod_entry
from tfdist.k8s import pods as pods_lib
from tfdist.k8s.local_cluster import Plan, Pod, by_kind, load_manifests, plan
from tfdist.k8s.pods import Kill, Pods

PROG = "python -m tfdist.k8s exercise"


def _map_path(value: str, mounts: dict) -> str:
  """``value`` (a path, or ``--flag=path``) with its mount path made local."""
  prefix, path = "", value
  if value.startswith("-") and "=" in value:
    flag, _, path = value.partition("=")
    prefix = flag + "="
  for mount_path in sorted(mounts, key=len, reverse=True):
    root = mount_path.rstrip("/")
    if path == root or path.startswith(root + "/"):
      return prefix + mounts[mount_path] + path[len(root):]
  return value


def pod_process(pod: Pod, *, volume_dir, extra_args: list) -> dict:
  """The local command and environment of one pod.

  Args:
    pod: the pod.
    volume_dir: ``volume_dir(pod, volume)`` -> the local directory of one of
      the pod's volumes.
    extra_args: appended to the command.
  """
  volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
  mounts = {m["mountPath"]: volume_dir(pod, volumes[m["name"]])
            for m in pod.container.get("volumeMounts", [])}
  env = {}
  for variable in pod.container.get("env", []):
    if "value" not in variable:
      raise ConfigError(f"pod {pod.name}: env {variable['name']} uses "
                        "valueFrom, which the exercise cannot provide")
    env[variable["name"]] = _map_path(variable["value"], mounts)
  # What Kubernetes adds to every pod of an Indexed Job.
  env[pod_entry.INDEX_ENV] = str(pod.index)
  env["HOSTNAME"] = pod.name
  command = pod.container["command"] + pod.container.get("args", [])
  return {"pod": pod.name,
          "command": [_map_path(a, mounts) for a in command] + extra_args,
          "env": env}


class _Volumes:
  """Local directories standing in for the pods' volumes."""

  def __init__(self, *, root: str, plan_: Plan, pvcs: dict, claims: dict):
    self._root, self._plan, self._pvcs, self._claims = root, plan_, pvcs, claims
    self._dirs: dict = {}

  def new_pod(self, pod: Pod) -> None:
    """A new pod of the same index: its emptyDirs start empty."""
    for key in [k for k in self._dirs
                if k[0] == "emptyDir" and k[1] == pod.name]:
      del self._dirs[key]

  def __call__(self, pod: Pod, volume: dict) -> str:
    if "configMap" in volume:
      name = volume["configMap"]["name"]
      if name not in self._plan.config_maps:
        raise ConfigError(f"pod {pod.name}: ConfigMap {name} is not in the "
                          "manifests")
      key = ("configMap", name)
    elif "persistentVolumeClaim" in volume:
      claim = volume["persistentVolumeClaim"]["claimName"]
      if claim in self._pvcs:
        return self._pvcs[claim]
      if claim not in self._claims:
        raise ConfigError(f"pod {pod.name} mounts PersistentVolumeClaim "
                          f"{claim}, which the manifests do not create; map "
                          f"it to a local directory with --pvc={claim}=DIR")
      key = ("pvc", claim)  # one directory, shared by every pod
    elif "emptyDir" in volume:
      key = ("emptyDir", pod.name, volume["name"])  # one per pod
    else:
      raise ConfigError(f"pod {pod.name}: volume {volume['name']} is neither "
                        "a ConfigMap, a PVC nor an emptyDir")
    if key not in self._dirs:
      path = tempfile.mkdtemp(prefix="-".join(key[:2]) + "-", dir=self._root)
      if key[0] == "configMap":
        for file_name, text in self._plan.config_maps[key[1]].items():
          with open(os.path.join(path, file_name), "w") as f:
            f.write(text)
      self._dirs[key] = path
    return self._dirs[key]


def _parse_pvcs(values: list) -> dict:
  pvcs = {}
  for value in values:
    claim, sep, path = value.partition("=")
    if not sep or not claim or not path:
      raise ConfigError(f"--pvc={value!r}: write CLAIM=DIR, e.g. "
                        "mnist-data=tfdist/datasets")
    if not os.path.isdir(path):
      raise ConfigError(f"--pvc={value}: {path} is not a directory")
    pvcs[claim] = os.path.abspath(path)
  return pvcs




@dataclasses.dataclass
class Outcome:
  """What ended the job: its exit status and the line saying why."""
  status: int
  message: str


class _Run:
  """One job's pods, run under the controllers' rules."""

  def __init__(self, objects: list, job_plan: Plan, volumes: _Volumes, *,
               extra_args: list, grace: float, kill: Optional[Kill], out):
    self.volumes = volumes
    self.extra_args, self.grace, self.kill = extra_args, grace, kill
    self.events: queue.SimpleQueue = queue.SimpleQueue()
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    # The image's `python` is the one running this.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get(
        "PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    self.pods = Pods(out=out, events=self.events, env=env)
    self.jobsets = {n: controller.JobSetState(n, o["spec"])
                    for n, o in by_kind(objects, "JobSet").items()}
    self.job_specs = {n: o["spec"] for n, o in by_kind(objects, "Job").items()}
    self.jobs: dict = {}
    self.tasks = {name: pod for name, pod in job_plan.pods.items()}
    self.nccl_as_ring = not pods_lib.has_gpu()
    self.killed_at: Optional[float] = None
    self.pending: set = set()  # pods that never schedule (--kill ...:gone)
    self.figures: dict = {}

  def _new_jobs(self) -> None:
    self.jobs = {n: controller.JobState(
        n, spec, spec["template"]["spec"]["containers"][0]["name"])
                 for n, spec in self.job_specs.items()}

  def _jobset_of(self, job: str) -> Optional[str]:
    for pod in self.tasks.values():
      if pod.job_name == job:
        return pod.job["metadata"].get("labels", {}).get(
            local_cluster.JOBSET_LABEL)
    return None

  def start_pod(self, task: str) -> None:
    pod = self.tasks[task]
    self.volumes.new_pod(pod)
    process = pod_process(pod, volume_dir=self.volumes,
                          extra_args=self.extra_args)
    command = process["command"]
    if self.nccl_as_ring and "--all_reduce=nccl" in command:
      if "nccl" not in self.figures:
        self.pods.say("no GPU on this machine: --all_reduce=nccl runs as "
                      "ring here (the manifests keep nccl)")
        self.figures["nccl"] = "ring"
      command = pods_lib.without_nccl(command)
    if task not in self.pods.started_at:
      self.pods.say(f"{task} is pod {pod.name}: {' '.join(command)}")
    elif self.kill and self.kill.gone and pod.name == self.kill.pod:
      self.pods.say(f"pod {pod.name} stays Pending: its node is gone and "
                    "no other fits it (--kill ...:gone)")
      self.pending.add(pod.name)
      return
    self.pods.start(task, command, process["env"])

  def start_all(self) -> None:
    self._new_jobs()
    for task in self.tasks:
      self.start_pod(task)

  def _check_kill(self) -> None:
    kill = self.kill
    if kill is None or self.killed_at is not None:
      return
    (task,) = [t for t, p in self.tasks.items() if p.name == kill.pod]
    if not self.pods.running([task]):
      return
    if kill.steps is not None:
      command = self.pods.processes[task].args
      steps = pods_lib.checkpoint_steps(command)
      due = bool(steps) and steps[-1] >= kill.steps
    else:
      due = (time.monotonic() - self.pods.started_at[task]) >= kill.seconds
    if due:
      self.pods.say(f"SIGKILL to pod {kill.pod} ({kill.describe()})")
      self.pods.kill(task)
      self.killed_at = time.monotonic()

  def on_exit(self, task: str, status: int) -> Optional[Outcome]:
    """Applies the controllers' rules to a pod that ended."""
    pod = self.tasks[task]
    job = self.jobs[pod.job_name]
    if status == 0:
      job.succeeded.add(pod.index)
      if job.complete:
        self.pods.say(f"Job {job.name}: {len(job.succeeded)}/"
                      f"{job.spec.get('completions', 1)} pods succeeded: "
                      "Complete")
        # A successPolicy met: the Job controller removes the pods left.
        self.pods.stop(self.pods.running([
            t for t, p in self.tasks.items() if p.job_name == job.name]),
                       grace=pod.spec.get("terminationGracePeriodSeconds", 30))
      return None
    action = job.pod_failed(status)
    if job.failed is None:
      counted = (f"{job.failures}/{job.backoff_limit} of its backoffLimit"
                 if action == controller.COUNT else "not counted")
      self.pods.say(f"pod {pod.name} failed with exit status {status} "
                    f"(podFailurePolicy of Job {job.name}: {action}, "
                    f"{counted}); restarting it as a new pod")
      self.start_pod(task)
      return None
    self.pods.say(f"Job {job.name} failed ({job.failed}): pod {pod.name} "
                  f"exited with status {status}")
    jobset = self._jobset_of(job.name)
    if jobset is None:
      return Outcome(status, f"job failed: Job {job.name} ({job.failed})")
    state = self.jobsets[jobset]
    replicated = pod.job["metadata"]["labels"][
        local_cluster.REPLICATED_JOB_LABEL]
    if state.job_failed(replicated, job.failed) == controller.FAIL_JOBSET:
      return Outcome(status, f"JobSet {jobset} failed: Job {job.name} "
                             f"({job.failed}), {state.restarts}/"
                             f"{state.max_restarts} restarts made")
    self.pods.say(f"JobSet {jobset}: RestartJobSet ({state.restarts}/"
                  f"{state.max_restarts} of maxRestarts): recreating every "
                  "pod")
    running = self.pods.running()
    # Deleted pods get their terminationGracePeriodSeconds (default 30).
    self.pods.stop(running, grace=max(
        self.tasks[t].spec.get("terminationGracePeriodSeconds", 30)
        for t in running) if running else 0)
    self.start_all()
    return None

  def finished(self) -> Optional[Outcome]:
    """Success once every Job completed, or every JobSet's successPolicy."""
    if self.jobsets:
      complete = {p.job["metadata"]["labels"][
          local_cluster.REPLICATED_JOB_LABEL] for p in self.tasks.values()
                  if self.jobs[p.job_name].complete}
      if all(s.succeeded(complete) for s in self.jobsets.values()):
        for name in self.jobsets:
          self.pods.say(f"JobSet {name}: successPolicy met: Completed")
        return Outcome(0, "")
      return None
    if all(j.complete for j in self.jobs.values()):
      return Outcome(0, "")
    return None

  def _chief_succeeded(self) -> bool:
    chief = self.tasks["chief-0" if "chief-0" in self.tasks else "worker-0"]
    return chief.index in self.jobs[chief.job_name].succeeded

  def run(self) -> Outcome:
    """Runs the job to its end (or a signal); every pod is gone after."""
    self.start_all()
    grace_deadline = None
    try:
      while True:
        self._check_kill()
        try:
          event = self.events.get(timeout=0.25)
        except queue.Empty:
          event = None
        if event and event[0] == "signal":
          return Outcome(128 + event[1], "interrupted; stopped every pod")
        if event and event[0] == "resumed":
          self._resumed(*event[1:])
        if event and event[0] == "exit":
          _, task, process, status = event
          if self.pods.is_current(task, process):
            outcome = self.on_exit(task, status) or self.finished()
            if outcome:
              return outcome
        if not self._chief_succeeded():
          grace_deadline = None  # not yet, or a JobSet restarted it
        elif grace_deadline is None:
          grace_deadline = time.monotonic() + self.grace
        if grace_deadline is not None and time.monotonic() > grace_deadline:
          return self._lingering()
    finally:
      self.pods.stop(self.pods.running(), grace=10)
      self.pods.close()

  def _resumed(self, task: str, step: int) -> None:
    if self.killed_at is not None and "resumed_after" not in self.figures:
      seconds = time.monotonic() - self.killed_at
      self.figures.update(resumed_after=round(seconds, 1), resumed_at=step)
      self.pods.say(f"training resumed at step {step} ({task}), "
                    f"{seconds:.1f} s after the kill")

  def _lingering(self) -> Outcome:
    left = sorted({self.tasks[t].name for t in self.pods.running()}
                  | self.pending)
    return Outcome(1, f"pods {', '.join(left)} did not end by themselves "
                      f"within {self.grace:.0f} s of the chief: on Kubernetes "
                      "they would keep running (or Pending) and their Job "
                      "would never complete")


def exercise(directory: str, *, pvcs: dict, extra_args: list, grace: float,
             work_dir: str, kill: Optional[Kill] = None, out=None) -> int:
  """Runs every pod of ``directory`` locally; returns the exit status.

  0 only when the job completed as Kubernetes would call it Complete.
  """
  import portpicker  # pylint: disable=g-import-not-at-top
  out = out or sys.stdout
  objects = local_cluster.expand_jobsets(load_manifests(directory))
  queued = controller.admit(objects)
  job_plan = plan(objects, portpicker.pick_unused_port)
  if kill and kill.pod not in {p.name for p in job_plan.pods.values()}:
    raise ConfigError(f"--kill={kill.pod}@...: no such pod; the pods are "
                      f"{', '.join(p.name for p in job_plan.pods.values())}")
  volumes = _Volumes(root=work_dir, plan_=job_plan, pvcs=pvcs,
                     claims=by_kind(objects, "PersistentVolumeClaim"))
  run = _Run(objects, job_plan, volumes, extra_args=extra_args, grace=grace,
             kill=kill, out=out)
  for name, queue in queued:
    run.pods.say(f"{name} is suspended for Kueue's LocalQueue {queue}: "
                 "admitted here at once, all pods together (Kueue unsuspends "
                 "it once every pod's requests fit the queue's quota; none is "
                 "checked here)")
  previous = {s: signal.signal(s, lambda n, _: run.events.put(("signal", n)))
              for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    outcome = run.run()
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  if outcome.status:
    run.pods.say(outcome.message)
  if kill and run.killed_at is None:
    run.pods.say(f"--kill: pod {kill.pod} was never killed; it was due "
                 f"once {kill.describe()}")
  return outcome.status


def main(argv=None) -> int:
  """``python -m tfdist.k8s exercise DIR``: runs a job's pods locally."""
  argv = list(sys.argv[1:] if argv is None else argv)
  own, extra_args = cli.split_command(argv)
  parser = cli.OneLineParser(
      prog=PROG,
      description="Run every pod of a manifest directory as a local process, "
                  "restarted or failed as Kubernetes would; arguments after "
                  "-- are appended to every trainer command.")
  parser.add_argument("directory", help="manifest directory, e.g. k8s")
  parser.add_argument("--pvc", action="append", default=[],
                      help="CLAIM=DIR: the local directory of a "
                           "PersistentVolumeClaim (repeatable)")
  parser.add_argument("--grace", type=float, default=60.0,
                      help="seconds the other pods get to end by themselves "
                           "after the chief's pod succeeded")
  parser.add_argument("--kill", default=None,
                      help="POD@SECONDS or POD@NUMBERsteps[:gone]: SIGKILL "
                           "that pod once (:gone: its replacement stays "
                           "Pending), e.g. mnist-worker-1@40steps")
  args = parser.parse_args(own)
  work_dir = tempfile.mkdtemp(prefix="tfdist-exercise-")
  try:
    return exercise(args.directory, pvcs=_parse_pvcs(args.pvc),
                    extra_args=extra_args, grace=args.grace,
                    work_dir=work_dir,
                    kill=Kill.parse(args.kill) if args.kill else None)
  except ConfigError as e:
    return cli.report(e)
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
  sys.exit(main())
