"""Kubernetes: manifests rendered from a cluster spec, and run locally.

    python -m tfdist.k8s render --cluster_spec=SPEC --job_name=NAME \
        --image=IMAGE --out_dir=DIR [-- TRAINER FLAGS]
    python -m tfdist.k8s exercise DIR --pvc=CLAIM=DIR [-- TRAINER FLAGS]

Modules, each importing only those above it and tfdist's foundations
(cli, cluster, errors, console, launch, strategy's topology check):

* options: RenderOptions, the checked settings of a render;
* files: the YAML text of the objects and writing it all-or-nothing;
* manifests: the objects (ConfigMap, NetworkPolicy, PVC, a headless Service
  and an Indexed Job per task type, or one TFJob);
* render: the ``render`` command;
* pod: ``python -m tfdist.k8s.pod``, every pod's entry point (its TF_CONFIG
  from the spec, its role and its completion index);
* local_cluster: a manifest directory's pods, their DNS names and policies
  checked, mapped to loopback ports;
* exercise: the ``exercise`` command, every pod run as a local process.

Nothing here imports TensorFlow.
"""
