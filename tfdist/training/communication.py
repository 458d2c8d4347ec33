"""Gradient all-reduce in a chosen dtype: float16 halves the bytes sent.

Under ``mirrored`` and ``multiworker`` every step all-reduces (sums) the
gradients of all replicas; tf-keras does it in ``Optimizer.aggregate_gradients``
just before applying them. :func:`optimizer_class` returns a subclass of a
Keras optimizer whose aggregation casts each gradient to the wire dtype
before the all-reduce and back after it (Horovod's fp16 compression), and
counts the bytes it hands to the all-reduce, from the tensors themselves.
"""

from __future__ import annotations

from tfdist.errors import ConfigError

ALL_REDUCE_DTYPES = ("float32", "float16")
# Strategies whose optimizer all-reduces gradients; under ps, gradients are
# applied to the ps variables by each worker's step, with no all-reduce.
ALL_REDUCE_STRATEGIES = ("mirrored", "multiworker")


def check(*, all_reduce_dtype: str, strategy: str) -> None:
  """Raises ConfigError naming the flag when the dtype cannot be used."""
  if all_reduce_dtype not in ALL_REDUCE_DTYPES:
    raise ConfigError(f"--all_reduce_dtype={all_reduce_dtype!r}: use one of "
                      f"{', '.join(ALL_REDUCE_DTYPES)}")
  if all_reduce_dtype != "float32" and strategy not in ALL_REDUCE_STRATEGIES:
    raise ConfigError(f"--all_reduce_dtype={all_reduce_dtype} compresses the "
                      f"gradient all-reduce, which --strategy={strategy} does "
                      "not do; use --strategy=multiworker or mirrored, or "
                      "--all_reduce_dtype=float32")


def ring_wire_bytes(payload_bytes: int, *, num_workers: int) -> float:
  """Bytes each worker sends per all-reduce of ``payload_bytes`` in a ring.

  A ring all-reduce is a reduce-scatter then an all-gather, each sending
  (N - 1)/N of the payload: 2 (N - 1) / N x payload in all.
  """
  return 2 * (num_workers - 1) / num_workers * payload_bytes


def payload_bytes(tensors) -> int:
  """Bytes one replica hands to an all-reduce of ``tensors`` (None skipped):
  elements x bytes per element of each tensor's own (wire) dtype."""
  return sum(t.shape.num_elements() * t.dtype.size for t in tensors
             if t is not None)


def optimizer_class(base, *, all_reduce_dtype: str):
  """A subclass of the Keras optimizer class ``base`` that all-reduces
  gradients in ``all_reduce_dtype`` and records the payload size.

  After the first step is traced, ``optimizer.all_reduce_bytes`` holds the
  bytes one replica passes to the all-reduce per step (the sum over
  gradients of elements x bytes per element in the wire dtype).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  wire_dtype = tf.as_dtype(all_reduce_dtype)

  class CastingAllReduce(base):
    """``base`` with gradients all-reduced in the wire dtype."""

    all_reduce_bytes = 0

    def aggregate_gradients(self, grads_and_vars):
      pairs = list(grads_and_vars)
      # Cast before the all-reduce: the collective sends what it is given.
      cast = [(None if g is None else tf.cast(g, wire_dtype), v)
              for g, v in pairs]
      # Counted at trace time (Python), from the tensors actually reduced;
      # the same for every step and replica.
      type(self).all_reduce_bytes = payload_bytes(g for g, _ in cast)
      reduced = super().aggregate_gradients(cast)
      # Back to each variable's dtype after: the update runs at full
      # precision, on the same values on every replica.
      return [(None if g is None else tf.cast(g, v.dtype), v)
              for (g, _), (_, v) in zip(reduced, pairs)]

  CastingAllReduce.__name__ = base.__name__
  return CastingAllReduce
