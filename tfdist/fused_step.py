"""One all-reduce per synchronous step, and gradient accumulation.

Owns the Keras ``train_step`` that :func:`install` puts on a compiled tf-keras
model trained under ``MirroredStrategy``, ``MultiWorkerMirroredStrategy`` or
the default strategy. Imports tfdist.communication and tfdist.errors (and
TensorFlow lazily).

Keras' own step launches several collectives per step: the gradients' (one
per dtype pack), then one per metric variable when the logs read the metrics
(``Metric.result`` sums sync-on-read variables over replicas), then one per
log value unless ``distribute_reduction_method`` is ``first``. Each costs a
round trip whatever its size. The fused step sends one buffer::

    [grad_0 (flattened), grad_1, ..., grad_n | loss sum, correct, examples]

all-reduced once (SUM) in the wire dtype, then unpacked and applied with the
optimizer told not to aggregate again. Every replica holds the same sums
after the all-reduce, so the running epoch sums live in replica-local
(sync-on-read) variables that each replica updates alike, and the logs (the
global mean loss and top-1 accuracy since the epoch began) are read from the
local copy: no further collective, and Keras adds none with
``distribute_reduction_method="first"``, which :func:`install` sets.

Wire dtype: ``float32`` sends the whole buffer as one float32 collective.
``float16`` halves the gradient bytes but cannot carry the metric sums
exactly (a loss sum or a count above 2048 rounds), so they travel as a
float32 tail in the same all-reduce call: two collective launches per step.
For a latency-bound model (the softmax's 31 KB) float32 is the faster one.

Gradient accumulation (``accumulate_steps=K``, Horovod's
``backward_passes_per_step``): each Keras step takes a per-replica batch of
K x B examples, splits it into K micro-batches of B, and runs their forward
and backward passes one after another in a ``tf.while_loop``, summing the
gradients in loop-carried tensors; then one all-reduce and one update. So
one Keras step is one optimizer update: ``optimizer.iterations``,
``steps_per_epoch``, checkpoints and preemption checks all count updates,
and no partial accumulation ever crosses a step (nothing to checkpoint). The
global batch of an update, which ``--lr_scaling`` scales by, is B x replicas
x K; the input pipeline must batch K x B per replica. The model must be
built before ``fit`` (a functional or Sequential model with an input shape
is): a layer cannot create its variables inside the loop. Batch-norm moving
statistics update once per micro-batch.

Other collectives stay theirs: synchronised batch norm all-reduces its
statistics in the forward pass, and tfdist.checkpoint's preemption check
runs its own small all-reduce every N steps, outside the step.

Mixed precision: a ``LossScaleOptimizer`` works: the loss is scaled before
the backward pass, the all-reduced gradients unscaled before the update; a
non-finite sum (also a float16-wire overflow) reaches every replica alike,
which then all skip the step and lower the scale together.

The checkpoint keys do not change: the step is a method bound to the model
instance and the running sums are not attached to the model, so
``tf.train.Checkpoint(model=model)`` holds exactly the same variables.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Optional

from tfdist import communication
from tfdist.errors import ConfigError

# The metric sums at the end of the buffer: per-example loss sum, correctly
# classified examples, examples.
_METRIC_SUMS = 3
# Strategies whose replicas train in sync; under ps a step is one worker's.
FUSED_STRATEGIES = communication.ALL_REDUCE_STRATEGIES
# --fused_step: auto = on under FUSED_STRATEGIES, off elsewhere.
FUSED_STEP_SETTINGS = ("auto", "on", "off")


def enabled(*, fused_step: str, accumulate_steps: int, strategy: str) -> bool:
  """Whether the fused step runs (``--fused_step=auto`` means under the
  synchronous strategies); raises ConfigError naming the flag when the
  settings cannot work together."""
  if fused_step not in FUSED_STEP_SETTINGS:
    raise ConfigError(f"--fused_step={fused_step!r}: use one of "
                      f"{', '.join(FUSED_STEP_SETTINGS)}")
  if accumulate_steps < 1:
    raise ConfigError(f"--accumulate_steps={accumulate_steps}: must be at "
                      "least 1 (1 = no accumulation)")
  synchronous = strategy in FUSED_STRATEGIES
  if fused_step == "on" and not synchronous:
    raise ConfigError(f"--fused_step=on all-reduces gradients, which "
                      f"--strategy={strategy} does not do; use "
                      "--fused_step=auto, or --strategy=multiworker or "
                      "mirrored")
  on = fused_step == "on" or (fused_step == "auto" and synchronous)
  if accumulate_steps > 1 and not on:
    raise ConfigError(f"--accumulate_steps={accumulate_steps} runs in the "
                      "fused step, which "
                      + (f"--strategy={strategy} does not use; use "
                         "--strategy=multiworker or mirrored"
                         if not synchronous else "--fused_step=off turns "
                         "off; drop --fused_step=off")
                      + ", or --accumulate_steps=1")
  return on


def examples_per_update(batch_size: int, *, num_replicas: int,
                        accumulate_steps: int) -> int:
  """The global batch of one optimizer update (what lr scaling counts)."""
  return batch_size * num_replicas * accumulate_steps


@dataclasses.dataclass
class FusedStep:
  """What :func:`install` put on a model.

  Attributes:
    all_reduce_dtype: the wire dtype of the gradients.
    accumulate_steps: micro-batches per update.
    all_reduce_bytes: bytes one replica hands to the all-reduce per step,
      gradients and metric sums (set when the step is first traced).
    running_sums: the replica-local float64 variables (loss sum, correct,
      examples) of the current epoch.
  """
  all_reduce_dtype: str
  accumulate_steps: int
  all_reduce_bytes: int = 0
  running_sums: Optional[list] = None


def install(model, *, all_reduce_dtype: str = "float32",
            accumulate_steps: int = 1) -> FusedStep:
  """Makes ``fit`` train ``model`` with the fused step.

  Call after ``model.compile`` (a new compile keeps the step, but the model
  must be compiled with a tf.keras loss object that takes integer labels and
  logits, such as SparseCategoricalCrossentropy). The logs are ``loss`` and
  ``accuracy`` (top-1 of the logits against the integer labels), whatever
  metrics were compiled.

  Raises:
    ValueError: the model is not compiled with a loss object and an
      optimizer, or the settings are out of range.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if all_reduce_dtype not in communication.ALL_REDUCE_DTYPES:
    raise ValueError(f"all_reduce_dtype={all_reduce_dtype!r}: use one of "
                     f"{communication.ALL_REDUCE_DTYPES}")
  if accumulate_steps < 1:
    raise ValueError(f"accumulate_steps={accumulate_steps}: must be >= 1")
  if not isinstance(getattr(model, "loss", None), tf.keras.losses.Loss):
    raise ValueError("the fused step needs a model compiled with a loss "
                     "object (e.g. tf.keras.losses."
                     "SparseCategoricalCrossentropy(from_logits=True)), got "
                     f"{getattr(model, 'loss', None)!r}")
  if getattr(model, "optimizer", None) is None:
    raise ValueError("compile the model (with an optimizer) before "
                     "installing the fused step")
  fused = FusedStep(all_reduce_dtype=all_reduce_dtype,
                    accumulate_steps=accumulate_steps)
  with model.distribute_strategy.scope():
    fused.running_sums = [
        tf.Variable(0.0, dtype=tf.float64, trainable=False, name=name,
                    synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        for name in ("fused_loss_sum", "fused_correct", "fused_examples")]
  keras_reset = model.reset_metrics

  def reset_metrics(self):
    keras_reset()
    for variable in fused.running_sums:
      variable.assign(tf.zeros_like(variable))

  # Bound to this instance: the class, and so the checkpoint's object
  # graph, stay those of the model that was built.
  model.train_step = types.MethodType(
      lambda self, data: _train_step(self, data, fused), model)
  model.reset_metrics = types.MethodType(reset_metrics, model)
  # Every replica returns the same logs: take the first, all-reduce none.
  model.distribute_reduction_method = "first"
  model.train_function = None  # fit traces the new step
  return fused


def _loss_scale_optimizer(optimizer):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  mixed = tf.keras.mixed_precision
  return optimizer if isinstance(optimizer, mixed.LossScaleOptimizer) else None


def _micro_batch(model, x, y, *, denominator, scale_parts: float):
  """Gradients and metric sums of one micro-batch on this replica.

  The differentiated loss is the micro-batch's per-example loss sum over
  ``denominator`` (the examples of the whole update over all replicas) plus
  the regularisation losses over ``scale_parts`` (the micro-batches of the
  update over all replicas), so that the all-reduced sum of the gradients
  is the gradient of the global mean loss plus the regularisation.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  scaler = _loss_scale_optimizer(model.optimizer)
  with tf.GradientTape() as tape:
    logits = model(x, training=True)
    per_example = tf.cast(model.loss.call(y, logits), tf.float32)
    loss_sum = tf.reduce_sum(per_example)
    examples = tf.cast(tf.shape(per_example)[0], tf.float32)
    regularization = (tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
                      if model.losses else tf.constant(0.0))
    loss = loss_sum / denominator + regularization / scale_parts
    if scaler is not None:
      loss = scaler.get_scaled_loss(loss)
  grads = tape.gradient(loss, model.trainable_variables)
  grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
           for g, v in zip(grads, model.trainable_variables)]
  labels = tf.reshape(tf.cast(y, tf.int64), [-1])
  correct = tf.reduce_sum(tf.cast(
      tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int64), labels),
      tf.float32))
  # Keras' loss log counts the regularisation once per example.
  sums = tf.stack([loss_sum + regularization * examples, correct, examples])
  return grads, sums


def _local_gradients(model, x, y, accumulate_steps: int):
  """This replica's gradient sum and metric sums over its K micro-batches.

  ``x`` is the model's input: a tensor, a RaggedTensor (ids) or a dict of
  them; the labels ``y`` count the examples.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  replicas = tf.distribute.get_replica_context().num_replicas_in_sync
  local_examples = tf.shape(y)[0]
  denominator = tf.cast(local_examples, tf.float32) * replicas
  scale_parts = float(replicas * accumulate_steps)
  if accumulate_steps == 1:
    return _micro_batch(model, x, y, denominator=denominator,
                        scale_parts=scale_parts)
  micro = local_examples // accumulate_steps

  def body(i, grads, sums):
    # Micro-batch i is the i-th ``micro`` examples (rows of a ragged id
    # list too).
    rows = slice(i * micro, (i + 1) * micro)
    g, s = _micro_batch(model, tf.nest.map_structure(lambda t: t[rows], x),
                        y[rows], denominator=denominator,
                        scale_parts=scale_parts)
    return i + 1, [a + b for a, b in zip(grads, g)], sums + s

  zeros = [tf.zeros_like(v, dtype=v.dtype) for v in model.trainable_variables]
  # parallel_iterations=1: one micro-batch's activations alive at a time.
  _, grads, sums = tf.while_loop(
      lambda i, *_: i < accumulate_steps, body,
      [tf.constant(0), zeros, tf.zeros([_METRIC_SUMS])],
      parallel_iterations=1)
  return grads, sums


def _all_reduce_once(grads, sums, fused: FusedStep):
  """Packs, all-reduces (SUM) and unpacks: one collective (float32 wire)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  wire = tf.as_dtype(fused.all_reduce_dtype)
  flat = tf.concat([tf.reshape(tf.cast(g, wire), [-1]) for g in grads],
                   axis=0)
  if wire == tf.float32:
    buffers = [tf.concat([flat, sums], axis=0)]
  else:
    # The metric sums stay exact in a float32 tail (module docstring).
    buffers = [flat, sums]
  context = tf.distribute.get_replica_context()
  # One replica (the default strategy) all-reduces nothing and sends 0 bytes.
  fused.all_reduce_bytes = 0
  if context.num_replicas_in_sync > 1:
    fused.all_reduce_bytes = communication.payload_bytes(buffers)
    # One call per buffer: tf.distribute packs the tensors of one call into
    # one concat, which cannot mix dtypes.
    buffers = [context.all_reduce(tf.distribute.ReduceOp.SUM, b)
               for b in buffers]
  if wire == tf.float32:
    flat, sums = buffers[0][:-_METRIC_SUMS], buffers[0][-_METRIC_SUMS:]
  else:
    flat, sums = buffers
  sizes = [g.shape.num_elements() for g in grads]
  reduced = [tf.cast(tf.reshape(part, g.shape), g.dtype)
             for part, g in zip(tf.split(flat, sizes), grads)]
  return reduced, sums


def _train_step(model, data, fused: FusedStep):
  """The step Keras runs on each replica: see the module docstring."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
  if sample_weight is not None:
    raise ValueError("the fused step does not take sample weights")
  grads, sums = _local_gradients(model, x, y, fused.accumulate_steps)
  grads, sums = _all_reduce_once(grads, sums, fused)
  scaler = _loss_scale_optimizer(model.optimizer)
  if scaler is not None:
    grads = scaler.get_unscaled_gradients(grads)
  # Aggregated already: the optimizer must not all-reduce again.
  model.optimizer.apply_gradients(
      zip(grads, model.trainable_variables),
      experimental_aggregate_gradients=False)
  totals = [variable.assign_add(tf.cast(value, tf.float64))
            for variable, value in zip(fused.running_sums, tf.unstack(sums))]
  loss_sum, correct, examples = totals
  return {"loss": tf.cast(loss_sum / examples, tf.float32),
          "accuracy": tf.cast(correct / examples, tf.float32)}
