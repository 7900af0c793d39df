"""Batch Normalization (Ioffe & Szegedy, 2015) as a pure function over explicit state.

Conventions
-----------
* The channel (feature) axis is the **last** axis; statistics reduce over every other axis.
* Training mode normalizes with the batch mean and the **biased** batch variance
  (divide by the number of reduced elements), then applies ``scale`` and ``offset``.
* Running statistics follow the flax/keras EMA convention::

      running = momentum * running + (1 - momentum) * batch

  so ``momentum=0.99`` keeps 99% of the old value per step. PyTorch's ``momentum`` is the weight of
  the *batch* value: PyTorch ``momentum=0.1`` is bnbench ``momentum=0.9``
  (``bnbench = 1 - pytorch``). The running variance stores the biased batch variance
  (PyTorch stores the unbiased one).
* Evaluation mode normalizes with the running statistics and returns the state unchanged.
* Statistics are accumulated in at least float32 (bfloat16/float16 inputs are upcast); the output
  has the input's dtype. The variance is computed in two passes (mean first, shifted by one sample
  per channel, then the mean of squared deviations), which does not cancel catastrophically when
  the mean is large relative to the standard deviation, unlike ``E[x^2] - E[x]^2``, and leaves a
  constant channel exactly at ``offset``. In float32 the variance overflows when a channel's
  standard deviation exceeds about 1e19: the running variance becomes ``inf`` and outputs collapse
  to ``offset`` (never NaN). Speed against the one-pass formula: ``bnbench profile``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

DEFAULT_MOMENTUM = 0.99
DEFAULT_EPSILON = 1e-5


class BNParams(NamedTuple):
    """Learned affine parameters, one entry per channel."""

    scale: jax.Array
    offset: jax.Array


class BNState(NamedTuple):
    """Running statistics, one entry per channel, and the number of training updates applied."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def init(num_features: int, dtype=jnp.float32) -> tuple[BNParams, BNState]:
    """Returns identity parameters (scale 1, offset 0) and state (running mean 0, var 1, count 0)."""
    params = BNParams(scale=jnp.ones((num_features,), dtype), offset=jnp.zeros((num_features,), dtype))
    state = BNState(
        mean=jnp.zeros((num_features,), dtype),
        var=jnp.ones((num_features,), dtype),
        count=jnp.zeros((), jnp.int32),
    )
    return params, state


def statistics_dtype(dtype) -> jnp.dtype:
    """The dtype statistics are accumulated in: the input dtype promoted to at least float32."""
    return jnp.promote_types(dtype, jnp.float32)


def batch_statistics(x: jax.Array, axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and biased variance of ``x`` over all axes but the last, in two passes.

    The mean is ``shift + mean(x - shift)`` with ``shift`` one sample per channel: the sum stays small
    when the mean is large relative to the spread, and a constant channel gets exactly its value as
    mean (so it normalizes to exactly 0, leaving no rounding error for ``1/sqrt(epsilon)`` to amplify).
    The variance is then ``mean((x - mean)^2)``. Each pass is a single reduction of an elementwise
    expression of ``x``, which XLA fuses into one read of ``x``. With ``axis_name``, the statistics are
    those of the batch concatenated across that named axis (every participant must hold the same
    number of elements).
    """
    xf = x.astype(statistics_dtype(x.dtype))
    reduce_axes = tuple(range(x.ndim - 1))
    # The shift cancels mathematically, so no gradient flows through it.
    shift = jax.lax.stop_gradient(xf[(0,) * (x.ndim - 1)])
    if axis_name is not None:
        shift = jax.lax.pmean(shift, axis_name)
    mean_offset = jnp.mean(xf - shift, axis=reduce_axes)
    if axis_name is not None:
        mean_offset = jax.lax.pmean(mean_offset, axis_name)
    mean = shift + mean_offset
    var = jnp.mean(jnp.square(xf - mean), axis=reduce_axes)
    if axis_name is not None:
        var = jax.lax.pmean(var, axis_name)
    return mean, var


@partial(jax.jit, static_argnames=("train", "axis_name"))
def batch_norm(
    x: jax.Array,
    params: BNParams,
    state: BNState,
    *,
    train: bool,
    momentum: float | jax.Array = DEFAULT_MOMENTUM,
    epsilon: float | jax.Array = DEFAULT_EPSILON,
    axis_name: str | None = None,
) -> tuple[jax.Array, BNState]:
    """Normalizes ``x`` over all axes but the last and returns ``(y, new_state)``.

    Args:
      x: input of shape ``(..., C)``.
      params: per-channel ``scale`` and ``offset`` of shape ``(C,)``.
      state: running statistics of shape ``(C,)``.
      train: use (and record) batch statistics if true, the running statistics otherwise.
      momentum: EMA decay of the running statistics, flax/keras convention (see module docstring);
        may be a traced scalar.
      epsilon: added to the variance before the square root; may be a traced scalar.
      axis_name: a named axis (``vmap``/``pmap``/``shard_map``) over which batch statistics are
        averaged: cross-device BN.

    Returns:
      ``y`` with ``x``'s shape and dtype, and the updated state (unchanged when ``train`` is false).
    """
    stat_dtype = statistics_dtype(x.dtype)
    if train:
        mean, var = batch_statistics(x, axis_name)
        new_state = BNState(
            mean=(momentum * state.mean + (1 - momentum) * mean).astype(state.mean.dtype),
            var=(momentum * state.var + (1 - momentum) * var).astype(state.var.dtype),
            count=state.count + 1,
        )
    else:
        mean, var = state.mean.astype(stat_dtype), state.var.astype(stat_dtype)
        new_state = state
    inv = params.scale.astype(stat_dtype) * jax.lax.rsqrt(var + jnp.asarray(epsilon, stat_dtype))
    y = (x.astype(stat_dtype) - mean) * inv + params.offset.astype(stat_dtype)
    return y.astype(x.dtype), new_state


def fold(params: BNParams, state: BNState, weight: jax.Array, bias: jax.Array, *, epsilon: float = DEFAULT_EPSILON):
    """Folds evaluation-mode BN into the preceding dense/conv layer.

    ``weight`` has the output channels last (dense ``(in, out)``, conv ``(..., in, out)``) and ``bias``
    is ``(out,)``. Returns ``(weight', bias')`` with ``layer(x, weight') + bias'`` equal to
    ``batch_norm(layer(x, weight) + bias, train=False)``, so inference skips BN altogether.
    """
    factor = params.scale * jax.lax.rsqrt(state.var + epsilon)
    return weight * factor, (bias - state.mean) * factor + params.offset
