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
* An empty batch (no elements to reduce) gives an empty output and leaves the state unchanged, as
  in PyTorch. Complex inputs are refused (``TypeError``).
* Statistics are accumulated in at least float32 (bfloat16/float16 inputs are upcast); the output
  has the input's dtype. The variance is computed in two passes (mean first, shifted by one sample
  per channel, then the mean of squared deviations), which does not cancel catastrophically when
  the mean is large relative to the standard deviation, unlike ``E[x^2] - E[x]^2``, and leaves a
  constant channel exactly at ``offset``. In float32 the variance overflows when a channel's
  standard deviation exceeds about 1e19: the running variance becomes ``inf`` and outputs collapse
  to ``offset`` (never NaN). Speed against the one-pass formula: ``bnbench profile``.
* Training-mode derivatives are written out (``jax.custom_jvp``): reverse mode, forward mode and
  higher orders all work, and the gradient reads ``x`` and the cotangent twice each and writes ``dx``
  once. Derivatives reach ``x``, ``scale``, ``offset``, ``epsilon`` and, through the updated
  state, the batch statistics. With ``axis_name`` JAX differentiates the forward pass instead: a
  written-out rule's collectives fail where the rule is traced outside the ``vmap`` that names the
  axis (:func:`_normalize`).

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

from bnbench.norm.settings import BNSettings
from bnbench.options import RUNNING_VARIANCES

_DEFAULTS = BNSettings()


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


def check_real(x: jax.Array, where: str) -> None:
    """Refuses complex inputs: the variance of complex values needs ``|x - mean|^2``, which the
    normalizations here do not implement; normalize the real and imaginary parts separately."""
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{where}: complex input ({x.dtype}) is not supported; normalize real and imaginary parts separately")


def batch_statistics(x: jax.Array, axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and biased variance of ``x`` over all axes but the last, in two passes.

    The mean is ``shift + mean(x - shift)`` with ``shift`` one sample per channel: the sum stays small
    when the mean is large relative to the spread, and a constant channel gets exactly its value as
    mean (so it normalizes to exactly 0, leaving no rounding error for ``1/sqrt(epsilon)`` to amplify).
    The variance is then ``mean(((x - shift) - mean_offset)^2)``. Each pass is a single reduction of an
    elementwise expression of ``x``, which XLA fuses into one read of ``x``. With ``axis_name``, the
    statistics are those of the batch concatenated across that named axis (every participant must
    hold the same number of elements).
    """
    xf = x.astype(statistics_dtype(x.dtype))
    shift, mean_offset, var = _shifted_statistics(xf, axis_name)
    return shift + mean_offset, var


def _shifted_statistics(xf: jax.Array, axis_name: str | None):
    """``(shift, mean_offset, var)`` of :func:`batch_statistics`: the mean is ``shift + mean_offset``.

    Callers normalize with ``(x - shift) - mean_offset`` rather than ``x - mean``: when the mean is
    large, ``shift + mean_offset`` rounds to the statistics dtype (at 1e6 in float32, to 1/16), and
    that rounding would shift every output by up to ``ulp(mean) / std``.
    """
    reduce_axes = tuple(range(xf.ndim - 1))
    # The shift cancels mathematically, so no gradient flows through it.
    shift = jax.lax.stop_gradient(xf[(0,) * (xf.ndim - 1)])
    if axis_name is not None:
        shift = jax.lax.pmean(shift, axis_name)
    mean_offset = jnp.mean(xf - shift, axis=reduce_axes)
    if axis_name is not None:
        mean_offset = jax.lax.pmean(mean_offset, axis_name)
    var = jnp.mean(jnp.square(_centered(xf, (shift, mean_offset))), axis=reduce_axes)
    if axis_name is not None:
        var = jax.lax.pmean(var, axis_name)
    return shift, mean_offset, var


def _centered(xf: jax.Array, statistics: tuple) -> jax.Array:
    """``(xf - shift) - mean_offset`` with ``statistics = (shift, mean_offset, ...)`` passed through an
    optimization barrier.

    Why the barrier: XLA would share ``x - shift`` between every pass that reads it, and XLA:CPU then
    writes it out as a whole tensor (one extra write and read of x). A distinct copy of the statistics
    per pass keeps each pass fused; the barrier changes no value. Each caller passes a different tuple
    (the extra entries tell them apart), so that XLA does not merge two barriers into one.
    """
    shift, mean_offset = jax.lax.optimization_barrier(statistics)[:2]
    return (xf - shift) - mean_offset


def _renorm_correction(mean, var, epsilon, renorm):
    """Batch Renormalization's ``(r, d)`` for batch statistics ``mean, var``, or ``(1, 0)`` when
    ``renorm`` is None; else ``renorm = (running_mean, running_var, rmax, dmax)``."""
    if renorm is None:
        return 1.0, 0.0
    running_mean, running_var, rmax, dmax = (a.astype(mean.dtype) for a in renorm)
    inv_running = jax.lax.rsqrt(running_var + epsilon)
    r = jnp.clip(jnp.sqrt(var + epsilon) * inv_running, 1 / rmax, rmax)
    d = jnp.clip((mean - running_mean) * inv_running, -dmax, dmax)
    return jax.lax.stop_gradient((r, d))  # constants of the derivative (Ioffe 2017)


def _forward(x, scale, offset, epsilon, renorm, axis_name):
    """Training-mode BN of one batch: ``((y, batch mean, batch variance), (shift, mean_offset, inv, r, d))``.

    ``y = ((x - shift) - mean_offset) * scale * r * inv + offset + scale * d`` with the batch mean
    ``shift + mean_offset`` (:func:`_shifted_statistics`), ``inv = 1 / sqrt(var + epsilon)`` and
    ``(r, d)`` from :func:`_renorm_correction`. ``epsilon`` is an array of the statistics dtype.
    """
    stat_dtype = statistics_dtype(x.dtype)
    xf = x.astype(stat_dtype)
    shift, mean_offset, var = _shifted_statistics(xf, axis_name)
    mean = shift + mean_offset
    inv = jax.lax.rsqrt(var + epsilon)
    r, d = _renorm_correction(mean, var, epsilon, renorm)
    scale, offset = scale.astype(stat_dtype), offset.astype(stat_dtype)
    y = _centered(xf, (shift, mean_offset, inv)) * (scale * inv * r) + (offset + scale * d)
    return (y.astype(x.dtype), mean, var), (shift, mean_offset, inv, r, d)


@partial(jax.custom_jvp, nondiff_argnums=(5,))
def _normalize_batch(x, scale, offset, epsilon, renorm, axis_name):
    """Training-mode BN of one batch: ``(y, batch mean, batch variance)`` (see :func:`_forward`)."""
    return _forward(x, scale, offset, epsilon, renorm, axis_name)[0]


@_normalize_batch.defjvp
def _normalize_batch_jvp(axis_name, primals, tangents):
    """The derivative written out, so that its transpose (the gradient) reads ``x`` and the cotangent
    twice each and writes ``dx`` once: autodiff of the statistics makes XLA:CPU write out whole
    tensors (``x - mean``, ``g * scale * inv``) that this form keeps inside fused reductions.

    ``r`` and ``d`` are constants (Ioffe 2017), so no derivative reaches the running statistics or the
    renorm bounds. The sums ``mean(x - mean)`` that vanish in exact arithmetic are left out.
    """
    x, scale, offset, epsilon, renorm = primals
    dx, dscale, doffset, depsilon, _ = tangents
    (y, mean, var), (shift, mean_offset, inv, r, d) = _forward(x, scale, offset, epsilon, renorm, axis_name)
    stat_dtype = mean.dtype
    reduce_axes = tuple(range(x.ndim - 1))
    xf, dxf = x.astype(stat_dtype), dx.astype(stat_dtype)
    scale, dscale, doffset = (a.astype(stat_dtype) for a in (scale, dscale, doffset))
    dmean = jnp.mean(dxf, axis=reduce_axes)
    dvar = 2 * jnp.mean(dxf * _centered(xf, (shift, mean_offset, inv, scale)), axis=reduce_axes)
    if axis_name is not None:
        dmean, dvar = jax.lax.pmean((dmean, dvar), axis_name)
    dinv = -0.5 * inv**3 * (dvar + depsilon)
    multiplier = scale * inv * r
    dmultiplier = (dscale * inv + scale * dinv) * r
    # dx * multiplier and dmean * multiplier stay apart so that the gradient sums the cotangent
    # before multiplying, rather than writing out cotangent * multiplier.
    dy = dxf * multiplier - dmean * multiplier + _centered(xf, (shift, mean_offset, scale)) * dmultiplier + (
        doffset + dscale * d
    )
    return (y, mean, var), (dy.astype(x.dtype), dmean, dvar)


def _normalize(x, scale, offset, epsilon, renorm, axis_name):
    """Training-mode BN of one batch, ``(y, batch mean, batch variance)``: :func:`_normalize_batch`'s
    written-out derivative without ``axis_name``, JAX's derivative of :func:`_forward` with it.

    Why two: JAX traces a ``custom_jvp`` rule lazily, when a derivative is first taken, and a
    collective (the rule's ``pmean``) binds only while the ``vmap`` naming its axis is being traced.
    A program recorded inside that vmap (``jax.jit``, ``jax.make_jaxpr``, ``jax.checkpoint``, the
    engine's convolution rewrite :func:`bnbench.models.convolution.with_patches`) and differentiated
    outside it traces the rule with no axis bound: ``NameError: unbound axis name``. The forward
    pass's collectives are batched as it is traced, and JAX differentiates what they became. Only the
    per-example path (an adapted Equinox model) names an axis, so every other model keeps the
    written-out derivative and its numbers.
    """
    if axis_name is None:
        return _normalize_batch(x, scale, offset, epsilon, renorm, axis_name)
    return _forward(x, scale, offset, epsilon, renorm, axis_name)[0]


def _normalize_with_running(x: jax.Array, params: BNParams, state: BNState, epsilon) -> jax.Array:
    """Evaluation mode: ``x`` normalized with the running statistics."""
    stat_dtype = statistics_dtype(x.dtype)
    mean, var = state.mean.astype(stat_dtype), state.var.astype(stat_dtype)
    inv = params.scale.astype(stat_dtype) * jax.lax.rsqrt(var + jnp.asarray(epsilon, stat_dtype))
    y = (x.astype(stat_dtype) - mean) * inv + params.offset.astype(stat_dtype)
    return y.astype(x.dtype)


def _renorm_bounds(state: BNState, settings: BNSettings) -> tuple[jax.Array, ...]:
    """The ``renorm`` argument of :func:`_normalize_batch`: the running statistics and the bounds."""
    return state.mean, state.var, jnp.asarray(settings.renorm_rmax), jnp.asarray(settings.renorm_dmax)


def _ghost_batches(normalize, x: jax.Array, ghost_batch_size: int):
    """``normalize`` of each sub-batch of ``ghost_batch_size`` consecutive examples: ``(y, the mean of
    the sub-batch means, the mean of their variances, elements per channel of one sub-batch)``."""
    if x.shape[0] % ghost_batch_size:
        raise ValueError(f"ghost_batch_size {ghost_batch_size} does not divide the batch of {x.shape[0]}")
    ghosts = x.reshape(x.shape[0] // ghost_batch_size, ghost_batch_size, *x.shape[1:])
    y, means, variances = jax.vmap(normalize)(ghosts)
    return y.reshape(x.shape), means.mean(axis=0), variances.mean(axis=0), ghosts[0].size // x.shape[-1]


def _recorded_variance(batch_var: jax.Array, count: int, running_var: str, axis_name: str | None) -> jax.Array:
    """The batch variance the running variance averages: the biased one, or with ``"unbiased"`` times
    ``m / (m - 1)`` for ``m = count`` elements per channel (on every participant of ``axis_name``)."""
    if running_var == "biased":
        return batch_var
    if axis_name is not None:
        count *= jax.lax.psum(1, axis_name)
    return batch_var * (count / jnp.maximum(count - 1, 1))


def _updated_state(state: BNState, batch_mean: jax.Array, batch_var: jax.Array, momentum) -> BNState:
    """The running statistics after one EMA step towards the batch's (:class:`BNSettings`)."""
    return BNState(
        mean=(momentum * state.mean + (1 - momentum) * batch_mean).astype(state.mean.dtype),
        var=(momentum * state.var + (1 - momentum) * batch_var).astype(state.var.dtype),
        count=state.count + 1,
    )


@partial(jax.jit, static_argnames=("train", "axis_name", "ghost_batch_size", "renorm", "running_var"))
def batch_norm(
    x: jax.Array,
    params: BNParams,
    state: BNState,
    *,
    train: bool,
    momentum: float | jax.Array = _DEFAULTS.momentum,
    epsilon: float | jax.Array = _DEFAULTS.epsilon,
    axis_name: str | None = None,
    ghost_batch_size: int | None = None,
    renorm: bool = False,
    renorm_rmax: float | jax.Array = _DEFAULTS.renorm_rmax,
    renorm_dmax: float | jax.Array = _DEFAULTS.renorm_dmax,
    running_var: str = "biased",
) -> tuple[jax.Array, BNState]:
    """Normalizes ``x`` over all axes but the last and returns ``(y, new_state)``.

    Args:
      x: input of shape ``(..., C)``.
      params: per-channel ``scale`` and ``offset`` of shape ``(C,)``.
      state: running statistics of shape ``(C,)``.
      train: use (and record) batch statistics if true, the running statistics otherwise.
      momentum, epsilon, renorm_rmax, renorm_dmax: the fields of :class:`BNSettings` (their meaning,
        the momentum convention and the defaults are there; pass ``**settings._asdict()``); each may
        be a traced scalar. The renorm bounds apply with ``renorm`` only.
      axis_name: a named axis (``vmap``/``pmap``/``shard_map``) over which batch statistics are
        averaged: cross-device BN.
      ghost_batch_size: training only: normalize consecutive sub-batches of this many examples (it
        must divide ``x.shape[0]``) separately; ``None`` for the whole batch.
      renorm: training only: Batch Renormalization (module docstring).
      running_var: ``"biased"`` or ``"unbiased"``: which batch variance the running variance averages.

    Returns:
      ``y`` with ``x``'s shape and dtype, and the updated state (unchanged when ``train`` is false).
    """
    if running_var not in RUNNING_VARIANCES:
        raise ValueError(f"running_var must be one of {RUNNING_VARIANCES}, got {running_var!r}")
    check_real(x, "batch_norm")
    settings = BNSettings(momentum, epsilon, renorm_rmax, renorm_dmax)
    if train and x.size == 0:
        # Nothing to take statistics of: like PyTorch, an empty output and the state unchanged.
        return jnp.zeros_like(x), state
    if not train:
        return _normalize_with_running(x, params, state, settings.epsilon), state
    eps = jnp.asarray(settings.epsilon, statistics_dtype(x.dtype))
    bounds = _renorm_bounds(state, settings) if renorm else None

    def normalize(batch):
        return _normalize(batch, params.scale, params.offset, eps, bounds, axis_name)

    if ghost_batch_size is None:
        y, batch_mean, batch_var = normalize(x)
        count = x.size // x.shape[-1]
    else:
        y, batch_mean, batch_var, count = _ghost_batches(normalize, x, ghost_batch_size)
    batch_var = _recorded_variance(batch_var, count, running_var, axis_name)
    return y, _updated_state(state, batch_mean, batch_var, settings.momentum)


def fold(params: BNParams, state: BNState, weight: jax.Array, bias: jax.Array, *, epsilon: float = _DEFAULTS.epsilon):
    """Folds evaluation-mode BN into the preceding dense/conv layer.

    ``weight`` has the output channels last (dense ``(in, out)``, conv ``(..., in, out)``) and ``bias``
    is ``(out,)``. Returns ``(weight', bias')`` with ``layer(x, weight') + bias'`` equal to
    ``batch_norm(layer(x, weight) + bias, train=False)``, so inference skips BN altogether.
    """
    factor = params.scale * jax.lax.rsqrt(state.var + epsilon)
    return weight * factor, (bias - state.mean) * factor + params.offset
