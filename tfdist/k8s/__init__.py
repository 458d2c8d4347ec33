"""Kubernetes: manifests rendered from a cluster spec, and run locally.

    python -m tfdist.k8s render --cluster_spec=SPEC --job_name=NAME \
        --image=IMAGE --out_dir=DIR [--kind=job|tfjob|jobset] \
        [--queue=LOCALQUEUE [--topology=LEVEL|--prefer_topology=LEVEL]] \
        [-- TRAINER FLAGS]
    python -m tfdist.k8s exercise DIR [--pvc=CLAIM=DIR] \
        [--kill=POD@SECONDS|POD@NUMBERsteps] [-- TRAINER FLAGS]

Modules, each importing only those above it and tfdist.cli, console,
errors, tfdist.cluster (specs, launch, relay) and tfdist.training
(checkpoint's paths, strategy's topology check); never serving (setup.cfg's
import-linter contracts):

* kueue: the names of Kueue's label and annotations;
* options: RenderOptions, the checked settings of a render;
* files: the YAML text of the objects and writing it all-or-nothing;
* manifests: the objects (ConfigMap, NetworkPolicy, PVC, a headless Service
  and an Indexed Job per task type, or one TFJob, or one JobSet);
* render: the ``render`` command;
* crd: strict validation of a custom resource (TFJob, JobSet, Kueue's
  objects) against its real CRD, its CEL rules included;
* pod: ``python -m tfdist.k8s.pod``, every pod's entry point (its TF_CONFIG
  from the spec, its role and its completion index);
* local_cluster: a manifest directory's pods (a JobSet's too), their DNS
  names and policies checked, mapped to loopback ports;
* controller: the Job and JobSet controllers' rules for failed pods and
  Jobs, and what starts a suspended one (Kueue);
* pods: local processes standing in for pods;
* exercise: the ``exercise`` command, every pod run as a local process under
  the controllers' rules.

Nothing here imports TensorFlow.
"""
