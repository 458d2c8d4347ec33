"""Kueue's names: the label and annotations its JobSet integration reads.

Kueue (kubernetes-sigs/kueue, API kueue.x-k8s.io/v1beta2; the CRDs of the
objects a cluster admin creates are in third_party/crds) admits a JobSet
labelled with a LocalQueue as one workload: the JobSet waits suspended until
the quota of every pod fits, then Kueue unsuspends it. Owns these names
only; tfdist.k8s.manifests writes them and tfdist.k8s.controller reads them.
Imports nothing.
"""

# On the JobSet: the LocalQueue (of the JobSet's namespace) that admits it.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# On the JobSet: a WorkloadPriorityClass, the workload's priority in Kueue
# only (the pods' priority comes from their priorityClassName).
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
# On each pod template (a PodSet): all its pods within one domain of a level
# of the flavor's Topology, required or preferred.
REQUIRED_TOPOLOGY = "kueue.x-k8s.io/podset-required-topology"
PREFERRED_TOPOLOGY = "kueue.x-k8s.io/podset-preferred-topology"
