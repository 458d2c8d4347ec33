"""One all-reduce per synchronous step, and gradient accumulation.

Owns the Keras ``train_step`` that :func:`install` puts on a compiled tf-keras
model trained under ``MirroredStrategy``, ``MultiWorkerMirroredStrategy`` or the
default strategy. Imports tfdist.training.communication and tfdist.errors (and
TensorFlow lazily).

Keras' own step launches several collectives per step: the gradients' (one
per dtype pack), then one per metric variable when the logs read the metrics
(``Metric.result`` sums sync-on-read variables over replicas), then one per
log value unless ``distribute_reduction_method`` is ``first``. Each costs a
round trip whatever its size. The fused step sends one buffer::

    [grad_0 (flattened), ..., grad_n | metric deltas]

all-reduced once (SUM) in the wire dtype, then unpacked and applied with the
optimizer told not to aggregate again.

The loss is the compiled one, any loss of ``(y_true, y_pred,
sample_weight)`` (a tf.keras loss object, name or function): its
per-example values, weighted by the batch's sample weights when it has
them, summed, over the global number of values (Keras'
``sum_over_batch_size``), plus the regularisation losses. The metrics are
**every** metric of the model: Keras' loss tracker (the ``loss`` log,
updated as Keras' step does), the compiled ones and the ``add_metric``
ones. A Keras metric's
state is a set of sums (its variables' aggregation is SUM: the state over
all replicas is the sum of theirs), so each replica updates its metrics
from zero on its own examples, packs the resulting state (the step's delta)
into the buffer, and adds the all-reduced delta to a replica-local copy of
the global state (sync-on-read variables that every replica updates
alike). The logs are Keras' own metric results, read from that copy in the
step: no further collective, and Keras adds none with
``distribute_reduction_method="first"``, which :func:`install` sets. The
metric objects themselves are left holding the global state on the first
replica and zero on the others, so that reading them across replicas (a
SUM) gives the global value, as under Keras' step. A metric whose state is
not a sum, a loss per output or ``loss_weights`` cannot be carried:
:func:`cannot_fuse` says why, in one line, and Keras' own step runs.

Wire dtype: ``float32`` sends the whole buffer as one float32 collective.
``float16`` halves the gradient bytes but cannot carry the metric sums
exactly (a loss sum or a count above 2048 rounds), so they travel as a
float32 tail: two collective launches per step.
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
statistics in the forward pass, and tfdist.training.checkpoint's preemption
check runs its own small all-reduce every N steps, outside the step.

Mixed precision: a ``LossScaleOptimizer`` works: the loss is scaled before
the backward pass, the all-reduced gradients unscaled before the update; a
non-finite sum (also a float16-wire overflow) reaches every replica alike,
which then all skip the step and lower the scale together.

The checkpoint keys do not change: the step is a method bound to the model
instance and the metric copies are not attached to the
model, so ``tf.train.Checkpoint(model=model)`` holds exactly the same
variables.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Optional

from tfdist.errors import ConfigError
from tfdist.training import communication

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
      gradients and metric deltas (set when the step is first traced).
    loss: the compiled loss as a tf.keras Loss (its ``call`` gives the
      per-example values).
    metric_variables: every carried metric's variables, in order.
    metric_copies: the replica-local global state of each of them.
  """
  all_reduce_dtype: str
  accumulate_steps: int
  all_reduce_bytes: int = 0
  loss: object = None
  metric_variables: list = dataclasses.field(default_factory=list)
  metric_copies: list = dataclasses.field(default_factory=list)


def carried_metrics(model) -> list:
  """Every metric of a compiled ``model`` the step updates: Keras' loss
  tracker, the compiled ones and the ``add_metric`` ones."""
  return list(model.metrics)


def cannot_fuse(model) -> Optional[str]:
  """Why the fused step cannot carry ``model``'s loss or metrics, in one
  line, or None when it can. Call once its metrics are built
  (tfdist.model.tasks.build_metrics)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  loss = getattr(model, "loss", None)
  if loss is None or isinstance(loss, (dict, list, tuple)):
    return "the model has no single loss"
  config = getattr(getattr(model, "_compile_config", None), "config", {})
  if config.get("loss_weights") is not None:
    return "the model is compiled with loss_weights"
  for metric in carried_metrics(model):
    for variable in metric.variables:
      if variable.aggregation != tf.VariableAggregation.SUM:
        return (f"metric {metric.name!r} keeps {variable.name} aggregated "
                f"{variable.aggregation.name}, not as a sum over replicas")
  return None


def _as_loss(loss):
  """``loss`` as a tf.keras Loss whose ``call`` gives per-example values."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if isinstance(loss, tf.keras.losses.Loss):
    return loss
  function = tf.keras.losses.get(loss) if isinstance(loss, str) else loss
  return tf.keras.__internal__.losses.LossFunctionWrapper(function)


def _replica_local(tf, like, name: str):
  """A sync-on-read variable shaped as ``like`` that each replica updates
  alike (read across replicas: the first's)."""
  return tf.Variable(tf.zeros(like.shape, like.dtype), trainable=False,
                     name=name,
                     synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def install(model, *, all_reduce_dtype: str = "float32",
            accumulate_steps: int = 1) -> FusedStep:
  """Makes ``fit`` train ``model`` with the fused step.

  Call after ``model.compile`` and once its metrics are built
  (tfdist.model.tasks.build_metrics; a new compile keeps the step). The logs are
  ``loss`` and every metric's result, as Keras' own step names them.

  Raises:
    ValueError: the model is not compiled with an optimizer, its loss or a
      metric cannot be carried (:func:`cannot_fuse`), or the settings are
      out of range.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if all_reduce_dtype not in communication.ALL_REDUCE_DTYPES:
    raise ValueError(f"all_reduce_dtype={all_reduce_dtype!r}: use one of "
                     f"{communication.ALL_REDUCE_DTYPES}")
  if accumulate_steps < 1:
    raise ValueError(f"accumulate_steps={accumulate_steps}: must be >= 1")
  if getattr(model, "optimizer", None) is None:
    raise ValueError("compile the model (with an optimizer) before "
                     "installing the fused step")
  reason = cannot_fuse(model)
  if reason is not None:
    raise ValueError(f"the fused step cannot carry the model: {reason}")
  fused = FusedStep(all_reduce_dtype=all_reduce_dtype,
                    accumulate_steps=accumulate_steps,
                    loss=_as_loss(model.loss))
  fused.metric_variables = [v for m in carried_metrics(model)
                            for v in m.variables]
  for metric in carried_metrics(model):
    # Keras' Metric.result reads across replicas in a step (an add_metric
    # reads its result in the forward pass): a collective per variable
    # under multiworker. The class's own result reads this replica's
    # variables, which hold the global state when the step reads them
    # (and across replicas, outside a step, still sum them).
    metric.result = types.MethodType(type(metric).result, metric)
  with model.distribute_strategy.scope():
    fused.metric_copies = [
        _replica_local(tf, v, f"fused_{v.name.split(':')[0]}")
        for v in fused.metric_variables]
  keras_reset = model.reset_metrics

  def reset_metrics(self):
    keras_reset()
    for variable in fused.metric_copies:
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


def _micro_batch(model, x, y, sample_weight, *, fused: FusedStep,
                 scale_parts: float):
  """Gradients of one micro-batch on this replica; updates its metrics (the
  ``add_metric`` ones in the forward pass).

  The differentiated loss is the micro-batch's weighted per-example loss
  sum over the loss values of the whole update over all replicas (its
  values times ``scale_parts``, the micro-batches of the update over all
  replicas) plus the regularisation losses over ``scale_parts``, so that
  the all-reduced sum of the gradients is the gradient of the global mean
  loss plus the regularisation.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  scaler = _loss_scale_optimizer(model.optimizer)
  with tf.GradientTape() as tape:
    outputs = model(x, training=True)
    values = tf.cast(fused.loss.call(y, outputs), tf.float32)
    loss_sum = tf.keras.__internal__.losses.compute_weighted_loss(
        values, sample_weight, reduction=tf.keras.losses.Reduction.SUM)
    count = tf.cast(tf.size(values), tf.float32)
    regularization = (tf.add_n([tf.cast(l, tf.float32) for l in model.losses])
                      if model.losses else tf.constant(0.0))
    loss = loss_sum / (count * scale_parts) + regularization / scale_parts
    if scaler is not None:
      loss = scaler.get_scaled_loss(loss)
  grads = tape.gradient(loss, model.trainable_variables)
  # Keras' loss log: the batch's loss, once per example.
  for tracker in model.compiled_loss.metrics:
    tracker.update_state(loss_sum / count + regularization,
                         sample_weight=tf.shape(outputs)[0])
  model.compiled_metrics.update_state(y, outputs, sample_weight)
  return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
          for g, v in zip(grads, model.trainable_variables)]


def _local_gradients(model, data, fused: FusedStep):
  """This replica's gradient sum over its K micro-batches.

  ``data`` is ``(x, y, sample_weight)``: the model's input (a dict of
  tensors and RaggedTensors by feature name), the labels (they count the
  examples) and the weights or None.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x, y, sample_weight = data
  k = fused.accumulate_steps
  replicas = tf.distribute.get_replica_context().num_replicas_in_sync
  scale_parts = float(replicas * k)
  if k == 1:
    return _micro_batch(model, x, y, sample_weight, fused=fused,
                        scale_parts=scale_parts)
  micro = tf.shape(y)[0] // k

  def body(i, grads):
    # Micro-batch i is the i-th ``micro`` examples (rows of a ragged id
    # list too).
    rows = slice(i * micro, (i + 1) * micro)
    part = [None if t is None else tf.nest.map_structure(lambda u: u[rows], t)
            for t in (x, y, sample_weight)]
    g = _micro_batch(model, *part, fused=fused, scale_parts=scale_parts)
    return i + 1, [a + b for a, b in zip(grads, g)]

  zeros = [tf.zeros_like(v, dtype=v.dtype) for v in model.trainable_variables]
  # parallel_iterations=1: one micro-batch's activations alive at a time.
  _, grads = tf.while_loop(lambda i, *_: i < k, body, [tf.constant(0), zeros],
                           parallel_iterations=1)
  return grads


def _all_reduce_once(grads, tail, fused: FusedStep):
  """Packs, all-reduces (SUM) and unpacks: one collective (float32 wire).
  ``tail``: the float32 metric deltas."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  wire = tf.as_dtype(fused.all_reduce_dtype)
  flat = tf.concat([tf.reshape(tf.cast(g, wire), [-1]) for g in grads],
                   axis=0)
  size = flat.shape[0]
  if wire == tf.float32:
    buffers = [tf.concat([flat, tail], axis=0)]
  else:
    # The sums stay exact in a float32 tail (module docstring).
    buffers = [flat, tail]
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
    flat, tail = buffers[0][:size], buffers[0][size:]
  else:
    flat, tail = buffers
  sizes = [g.shape.num_elements() for g in grads]
  reduced = [tf.cast(tf.reshape(part, g.shape), g.dtype)
             for part, g in zip(tf.split(flat, sizes), grads)]
  return reduced, tail


def _metric_deltas(tf, fused: FusedStep):
  """This replica's metric state (updated from zero): its step's delta."""
  return tf.concat([tf.reshape(tf.cast(v.read_value(), tf.float32), [-1])
                    for v in fused.metric_variables], axis=0)


def _apply_metric_deltas(tf, model, deltas, fused: FusedStep) -> dict:
  """Adds the all-reduced deltas to the global state; returns the metrics'
  results on it. The metric objects then keep the state on the first
  replica only (module docstring)."""
  sizes = [v.shape.num_elements() for v in fused.metric_variables]
  for variable, copy, part in zip(fused.metric_variables,
                                  fused.metric_copies,
                                  tf.split(deltas, sizes)):
    total = copy.assign_add(tf.cast(tf.reshape(part, copy.shape),
                                    copy.dtype))
    variable.assign(total)
  logs = model.get_metrics_result()  # this replica's (see install)
  replica = tf.distribute.get_replica_context().replica_id_in_sync_group
  first = tf.equal(replica, 0)
  with tf.control_dependencies(tf.nest.flatten(logs)):
    for variable in fused.metric_variables:
      variable.assign(tf.where(first, variable.read_value(),
                               tf.zeros_like(variable)))
  return logs


def _train_step(model, data, fused: FusedStep):
  """The step Keras runs on each replica: see the module docstring."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data = tf.keras.utils.unpack_x_y_sample_weight(data)
  for variable in fused.metric_variables:
    variable.assign(tf.zeros_like(variable))  # updated from zero: a delta
  grads = _local_gradients(model, data, fused)
  grads, deltas = _all_reduce_once(grads, _metric_deltas(tf, fused), fused)
  scaler = _loss_scale_optimizer(model.optimizer)
  if scaler is not None:
    grads = scaler.get_unscaled_gradients(grads)
  # Aggregated already: the optimizer must not all-reduce again.
  model.optimizer.apply_gradients(
      zip(grads, model.trainable_variables),
      experimental_aggregate_gradients=False)
  return _apply_metric_deltas(tf, model, deltas, fused)
