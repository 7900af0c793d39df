"""Per-example normalizations that replace BN where batch statistics fail: GroupNorm and LayerNorm.

GroupNorm (Wu & He, 2018) splits the channels (last axis) into ``groups`` groups of consecutive
channels and normalizes each example over its spatial positions and the channels of each group;
LayerNorm (Ba et al., 2016) is GroupNorm with one group: each example over all its features. Neither
depends on the batch or keeps running statistics, so training and evaluation compute the same
function. Statistics are accumulated in at least float32 with the two-pass variance (biased), like
:func:`bnbench.norm.bn.batch_statistics`; ``scale`` and ``offset`` are per channel
(:class:`bnbench.norm.bn.BNParams`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from bnbench.norm.bn import BNParams, check_real, statistics_dtype


@partial(jax.jit, static_argnames=("groups",))
def group_norm(x: jax.Array, params: BNParams, *, groups: int, epsilon: float | jax.Array) -> jax.Array:
    """Normalizes each example of ``x`` (shape ``(N, ..., C)``) per group of ``C // groups`` channels.

    ``groups`` must divide ``C``. Returns an array of ``x``'s shape and dtype (empty for an empty
    batch). Complex inputs are refused (``TypeError``).
    """
    channels = x.shape[-1]
    if channels % groups:
        raise ValueError(f"groups={groups} does not divide the {channels} channels")
    check_real(x, "group_norm")
    if x.size == 0:
        return jnp.zeros_like(x)
    stat_dtype = statistics_dtype(x.dtype)
    xg = x.astype(stat_dtype).reshape(x.shape[0], -1, groups, channels // groups)
    mean = jnp.mean(xg, axis=(1, 3), keepdims=True)
    var = jnp.mean(jnp.square(xg - mean), axis=(1, 3), keepdims=True)
    normalized = ((xg - mean) * jax.lax.rsqrt(var + jnp.asarray(epsilon, stat_dtype))).reshape(x.shape)
    y = normalized * params.scale.astype(stat_dtype) + params.offset.astype(stat_dtype)
    return y.astype(x.dtype)


def layer_norm(x: jax.Array, params: BNParams, *, epsilon: float | jax.Array) -> jax.Array:
    """Normalizes each example of ``x`` over all its features: :func:`group_norm` with one group."""
    return group_norm(x, params, groups=1, epsilon=epsilon)
