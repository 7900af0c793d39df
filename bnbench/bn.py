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

Variants (keyword arguments of :func:`batch_norm`, all float64-tested):

* ``ghost_batch_size=g`` (ghost / virtual BN, Hoffer et al. 2017): the batch is cut into consecutive
  sub-batches of ``g`` examples, each normalized with its own statistics. The running statistics take
  one EMA step per call with the average of the sub-batch means and of the sub-batch variances (the
  Keras ``virtual_batch_size`` convention).
* ``renorm=True`` (Batch Renormalization, Ioffe 2017): ``x_hat = (x - mean_B) / sigma_B * r + d`` with
  ``r = clip(sigma_B / sigma, 1/rmax, rmax)`` and ``d = clip((mean_B - mean) / sigma, -dmax, dmax)``,
  where ``sigma_B = sqrt(var_B + eps)``, ``mean`` and ``sigma = sqrt(var + eps)`` come from the running
  statistics, and no gradient flows through ``r`` and ``d``. ``rmax`` and ``dmax`` are fixed (the paper
  ramps them up from 1 and 0 during training; pass a schedule's value per step to do the same).
  Evaluation is plain BN with the running statistics.
* ``running_var="unbiased"`` stores ``var_B * m / (m - 1)`` in the running variance (``m`` elements per
  channel and batch; PyTorch's convention), instead of the biased ``var_B``. Training still normalizes
  with the biased variance. With ``m = 1`` the stored value is the biased one (0).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

DEFAULT_MOMENTUM = 0.99
DEFAULT_EPSILON = 1e-5
DEFAULT_RENORM_RMAX = 3.0
DEFAULT_RENORM_DMAX = 5.0
RUNNING_VARIANCES = ("biased", "unbiased")


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


def _broadcastable(stat: jax.Array, ndim: int) -> jax.Array:
    """Per-channel statistics of shape ``(..., C)`` reshaped to broadcast against ``ndim`` data axes."""
    return stat.reshape(stat.shape[:-1] + (1,) * (ndim - 1) + stat.shape[-1:])


@partial(jax.jit, static_argnames=("train", "axis_name", "ghost_batch_size", "renorm", "running_var"))
def batch_norm(
    x: jax.Array,
    params: BNParams,
    state: BNState,
    *,
    train: bool,
    momentum: float | jax.Array = DEFAULT_MOMENTUM,
    epsilon: float | jax.Array = DEFAULT_EPSILON,
    axis_name: str | None = None,
    ghost_batch_size: int | None = None,
    renorm: bool = False,
    renorm_rmax: float | jax.Array = DEFAULT_RENORM_RMAX,
    renorm_dmax: float | jax.Array = DEFAULT_RENORM_DMAX,
    running_var: str = "biased",
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
      ghost_batch_size: training only: normalize consecutive sub-batches of this many examples (it
        must divide ``x.shape[0]``) separately; ``None`` for the whole batch.
      renorm: training only: Batch Renormalization with clipping bounds ``renorm_rmax`` (> 1) and
        ``renorm_dmax`` (>= 0), which may be traced scalars.
      running_var: ``"biased"`` or ``"unbiased"``: which batch variance the running variance averages.

    Returns:
      ``y`` with ``x``'s shape and dtype, and the updated state (unchanged when ``train`` is false).
    """
    if running_var not in RUNNING_VARIANCES:
        raise ValueError(f"running_var must be one of {RUNNING_VARIANCES}, got {running_var!r}")
    stat_dtype = statistics_dtype(x.dtype)
    if not train:
        mean, var = state.mean.astype(stat_dtype), state.var.astype(stat_dtype)
        inv = params.scale.astype(stat_dtype) * jax.lax.rsqrt(var + jnp.asarray(epsilon, stat_dtype))
        y = (x.astype(stat_dtype) - mean) * inv + params.offset.astype(stat_dtype)
        return y.astype(x.dtype), state
    if ghost_batch_size is None:
        xs = x
        mean, var = batch_statistics(x, axis_name)
        batch_mean, batch_var = mean, var
    else:
        if x.shape[0] % ghost_batch_size:
            raise ValueError(f"ghost_batch_size {ghost_batch_size} does not divide the batch of {x.shape[0]}")
        xs = x.reshape(x.shape[0] // ghost_batch_size, ghost_batch_size, *x.shape[1:])
        mean, var = jax.vmap(batch_statistics, in_axes=(0, None))(xs, axis_name)
        batch_mean, batch_var = mean.mean(axis=0), var.mean(axis=0)
    if running_var == "unbiased":
        count = xs[0].size // x.shape[-1] if ghost_batch_size else x.size // x.shape[-1]
        if axis_name is not None:
            count *= jax.lax.psum(1, axis_name)
        batch_var = batch_var * (count / jnp.maximum(count - 1, 1))
    new_state = BNState(
        mean=(momentum * state.mean + (1 - momentum) * batch_mean).astype(state.mean.dtype),
        var=(momentum * state.var + (1 - momentum) * batch_var).astype(state.var.dtype),
        count=state.count + 1,
    )
    eps = jnp.asarray(epsilon, stat_dtype)
    scale, offset = params.scale.astype(stat_dtype), params.offset.astype(stat_dtype)
    inv = jax.lax.rsqrt(var + eps)
    if renorm:
        # r and d pull the batch-normalized value towards the running-statistics one; they are
        # treated as constants by the gradient, as in Ioffe (2017).
        sigma_ratio = jnp.sqrt(var + eps) * jax.lax.rsqrt(state.var.astype(stat_dtype) + eps)
        rmax = jnp.asarray(renorm_rmax, stat_dtype)
        r = jax.lax.stop_gradient(jnp.clip(sigma_ratio, 1 / rmax, rmax))
        d = (mean - state.mean.astype(stat_dtype)) * jax.lax.rsqrt(state.var.astype(stat_dtype) + eps)
        dmax = jnp.asarray(renorm_dmax, stat_dtype)
        d = jax.lax.stop_gradient(jnp.clip(d, -dmax, dmax))
        inv, offset = inv * r, offset + scale * d
    inv = _broadcastable(scale * inv, x.ndim)
    y = (xs.astype(stat_dtype) - _broadcastable(mean, x.ndim)) * inv + _broadcastable(offset, x.ndim)
    return y.reshape(x.shape).astype(x.dtype), new_state


def fold(params: BNParams, state: BNState, weight: jax.Array, bias: jax.Array, *, epsilon: float = DEFAULT_EPSILON):
    """Folds evaluation-mode BN into the preceding dense/conv layer.

    ``weight`` has the output channels last (dense ``(in, out)``, conv ``(..., in, out)``) and ``bias``
    is ``(out,)``. Returns ``(weight', bias')`` with ``layer(x, weight') + bias'`` equal to
    ``batch_norm(layer(x, weight) + bias, train=False)``, so inference skips BN altogether.
    """
    factor = params.scale * jax.lax.rsqrt(state.var + epsilon)
    return weight * factor, (bias - state.mean) * factor + params.offset
