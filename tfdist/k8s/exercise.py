r"""Runs the pods of a manifest directory as local processes: no cluster.

    python -m tfdist.k8s exercise k8s --pvc=mnist-data=../shared/data \
        [--pvc=mnist-model=/tmp/model] [-- --epochs=1]

For every pod the manifests' Indexed Jobs would create, the exercise starts
the container's own command and arguments as a local process, with the
environment the pod would get: the container's ``env``, plus what Kubernetes
adds (``JOB_COMPLETION_INDEX``, ``HOSTNAME``). What only a cluster provides
is mapped, the way a node would provide it:

* DNS: every address in the cluster spec of a ConfigMap must be the name of
  a pod (``<job>-<index>.<subdomain>``) behind a headless Service of that
  subdomain selecting it, on a port the Service and container expose; it is
  rewritten to a free loopback port in the local copy of the ConfigMap.
* NetworkPolicy: every pod must be admitted to every such address's port
  (read, not enforced: loopback has no policies).
* Volumes: each ``mountPath`` becomes a local directory in the command and
  env (a ConfigMap's files written out, an emptyDir a fresh directory, a
  PersistentVolumeClaim the directory given with ``--pvc CLAIM=DIR`` or, for
  a claim the manifests create, a fresh one).

Arguments after ``--`` are appended to every trainer command (e.g. fewer
epochs). tfdist.launch's Launcher runs the pods (prefixed output, stop on
failure, deadlines); the job passes when every pod exits 0 by itself, as
every Job must for Kubernetes to call it Complete. Not proven: that the image
builds and runs, that pods get scheduled, GPUs, storage classes and
NetworkPolicy enforcement.

Owns the local stand-ins for volumes and the pods' processes. Imports
tfdist.cli, tfdist.cluster, tfdist.launch, tfdist.k8s.local_cluster (what
runs) and tfdist.k8s.pod (how a pod runs its trainer); never the render.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import Optional

from tfdist import cli
from tfdist import cluster as cluster_lib
from tfdist import launch
from tfdist.errors import ConfigError
from tfdist.k8s import pod as pod_entry
from tfdist.k8s.local_cluster import Plan, Pod, by_kind, load_manifests, plan

PROG = "python -m tfdist.k8s exercise"
_POD_COMMAND = "_pod"  # internal: the launcher's command for one pod


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
                        "mnist-data=../shared/data")
    if not os.path.isdir(path):
      raise ConfigError(f"--pvc={value}: {path} is not a directory")
    pvcs[claim] = os.path.abspath(path)
  return pvcs


def _read_status(path: str) -> Optional[int]:
  try:
    with open(path) as f:
      return int(f.read())
  except (OSError, ValueError):
    return None  # killed before it could write one


def exercise(directory: str, *, pvcs: dict, extra_args: list, grace: float,
             work_dir: str, out=None) -> int:
  """Runs every pod of ``directory`` locally; returns the exit status.

  0 only when every pod exited 0 by itself: every Job would be Complete.
  """
  import portpicker  # pylint: disable=g-import-not-at-top
  out = out or sys.stdout
  objects = load_manifests(directory)
  job_plan = plan(objects, portpicker.pick_unused_port)
  volumes = _Volumes(root=work_dir, plan_=job_plan, pvcs=pvcs,
                     claims=by_kind(objects, "PersistentVolumeClaim"))
  processes = {}
  for task_name, pod in job_plan.pods.items():
    processes[task_name] = pod_process(pod, volume_dir=volumes,
                                       extra_args=extra_args)
    processes[task_name]["status_file"] = os.path.join(
        work_dir, f"{pod.name}.status")
    out.write(f"[exercise] {task_name} is pod {pod.name}: "
              f"{' '.join(processes[task_name]['command'])}\n")
  plan_file = os.path.join(work_dir, "plan.json")
  with open(plan_file, "w") as f:
    json.dump(processes, f)
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  # The image's `python` is the one running this.
  env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get(
      "PATH", "")
  launcher = launch.Launcher(
      cluster=job_plan.cluster, grace=grace, env=env, out=out,
      command=[sys.executable, "-m", "tfdist.k8s.exercise", _POD_COMMAND,
               plan_file])
  status = launcher.run()
  if status != 0:
    return status
  # The launcher returned 0, so a pod without status 0 was still running
  # when the launcher stopped it after the grace period.
  lingering = sorted(p["pod"] for p in processes.values()
                     if _read_status(p["status_file"]) != 0)
  if lingering:
    launcher.say(f"pods {', '.join(lingering)} did not end by themselves "
                 f"within {grace:.0f} s of the chief: on Kubernetes they "
                 "would keep running and their Job would never complete")
    return 1
  for job in by_kind(objects, "Job"):
    count = sum(1 for p in job_plan.pods.values()
                if p.job["metadata"]["name"] == job)
    launcher.say(f"Job {job}: {count}/{count} pods succeeded: Complete")
  return 0


def run_pod(plan_file: str) -> int:
  """The launcher's command for one task: runs its pod's process.

  The launcher identifies the task by TF_CONFIG; the pod must derive its
  own, so TF_CONFIG is removed and the pod's environment added.
  """
  task = cluster_lib.task_from_environ(os.environ)
  with open(plan_file) as f:
    process = json.load(f)[task.name]
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  env.update(process["env"])
  status = pod_entry.run_child(process["command"], env)
  with open(process["status_file"], "w") as f:
    f.write(str(status))
  return status


def main(argv=None) -> int:
  """``python -m tfdist.k8s exercise DIR``: runs a job's pods locally."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == [_POD_COMMAND]:
    return run_pod(argv[1])
  own, extra_args = cli.split_command(argv)
  parser = cli.OneLineParser(
      prog=PROG,
      description="Run every pod of a manifest directory as a local process; "
                  "arguments after -- are appended to every trainer command.")
  parser.add_argument("directory", help="manifest directory, e.g. k8s")
  parser.add_argument("--pvc", action="append", default=[],
                      help="CLAIM=DIR: the local directory of a "
                           "PersistentVolumeClaim (repeatable)")
  parser.add_argument("--grace", type=float, default=60.0,
                      help="seconds the other pods get to end by themselves "
                           "after the chief exits 0")
  args = parser.parse_args(own)
  work_dir = tempfile.mkdtemp(prefix="tfdist-exercise-")
  try:
    return exercise(args.directory, pvcs=_parse_pvcs(args.pvc),
                    extra_args=extra_args, grace=args.grace,
                    work_dir=work_dir)
  except ConfigError as e:
    return cli.report(e)
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
  sys.exit(main())
