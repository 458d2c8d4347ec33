# The training image of the Kubernetes manifests in k8s/: TensorFlow 2.21
# with CUDA, plus tfdist and its trainers.
#
#   docker build -t REGISTRY/tfdist:0.1 . && docker push REGISTRY/tfdist:0.1
#
# Pinned to the TensorFlow release that setup.cfg requires: tf-keras 2.21
# is built against TensorFlow 2.21's internals.
FROM tensorflow/tensorflow:2.21.0-gpu

# Log lines reach `kubectl logs` at once; no .pyc writes, since the pods'
# root filesystem is read-only; HOME on the writable /tmp (an emptyDir in the
# pods) for anything that writes under ~ (Keras config, TFDS downloads).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp

WORKDIR /opt/tfdist
COPY pyproject.toml setup.cfg README.md ./
COPY tfdist ./tfdist
COPY trainers ./trainers
# TensorFlow itself is in the base image already; this adds tf-keras,
# tensorflow-datasets and the other requirements of setup.cfg.
RUN pip install --no-cache-dir . \
    && (id -u 1000 >/dev/null 2>&1 || useradd --uid 1000 --user-group \
        --no-create-home --shell /usr/sbin/nologin tfdist)

# A numeric non-root user: Kubernetes can check runAsNonRoot against it.
USER 1000:1000
# `docker run --gpus all IMAGE` checks the image: a short run on synthetic
# data on every GPU of the machine. The manifests give their own command.
CMD ["python", "-m", "trainers.mnist", "--strategy=mirrored", \
     "--data=synthetic", "--epochs=1"]
