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
  has the input's dtype. The variance is computed in two passes (mean first, then the mean of
  squared deviations) after subtracting one sample per channel, which does not cancel
  catastrophically when the mean is large relative to the standard deviation, unlike
  ``E[x^2] - E[x]^2``, and leaves a constant channel exactly at ``offset``. In float32 the variance
  overflows when a channel's standard deviation exceeds about 1e19: the running variance becomes
  ``inf`` and outputs collapse to ``offset`` (never NaN).
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


def _centered(x: jax.Array, axis_name: str | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns ``(shift, mean_offset, x - shift)`` with ``mean = shift + mean_offset``.

    Subtracting one sample per channel before summing keeps the sums small when the mean is large
    relative to the spread, and makes a constant channel exactly zero after centering (no rounding
    error for ``1/sqrt(epsilon)`` to amplify). The shift cancels mathematically, so no gradient flows
    through it.
    """
    xf = x.astype(statistics_dtype(x.dtype))
    reduce_axes = tuple(range(x.ndim - 1))
    shift = jax.lax.stop_gradient(xf[(0,) * (x.ndim - 1)])
    if axis_name is not None:
        shift = jax.lax.pmean(shift, axis_name)
    shifted = xf - shift
    mean_offset = jnp.mean(shifted, axis=reduce_axes)
    if axis_name is not None:
        mean_offset = jax.lax.pmean(mean_offset, axis_name)
    return shift, mean_offset, shifted


def _variance(centered: jax.Array, axis_name: str | None) -> jax.Array:
    var = jnp.mean(jnp.square(centered), axis=tuple(range(centered.ndim - 1)))
    return var if axis_name is None else jax.lax.pmean(var, axis_name)


def batch_statistics(x: jax.Array, axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and biased variance of ``x`` over all axes but the last (shifted two-pass).

    With ``axis_name``, the statistics are those of the batch concatenated across that named axis
    (every participant must hold the same number of elements).
    """
    shift, mean_offset, shifted = _centered(x, axis_name)
    return shift + mean_offset, _variance(shifted - mean_offset, axis_name)


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
        shift, mean_offset, shifted = _centered(x, axis_name)
        centered = shifted - mean_offset
        mean, var = shift + mean_offset, _variance(centered, axis_name)
        new_state = BNState(
            mean=(momentum * state.mean + (1 - momentum) * mean).astype(state.mean.dtype),
            var=(momentum * state.var + (1 - momentum) * var).astype(state.var.dtype),
            count=state.count + 1,
        )
    else:
        var = state.var.astype(stat_dtype)
        centered = x.astype(stat_dtype) - state.mean.astype(stat_dtype)
        new_state = state
    inv = params.scale.astype(stat_dtype) * jax.lax.rsqrt(var + jnp.asarray(epsilon, stat_dtype))
    y = centered * inv + params.offset.astype(stat_dtype)
    return y.astype(x.dtype), new_state
