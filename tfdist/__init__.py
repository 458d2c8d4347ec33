"""tfdist: distributed TensorFlow training from one laptop to Kubernetes."""

__version__ = "0.1.0"
