"""The pieces every model family shares: activations, the norm layer, noise, dropout and initializers.

A model computes in ``dtype`` (``"float32"`` or ``"bfloat16"``): inputs and weights are cast to it at
each layer, while parameters stay float32 (their gradients arrive in float32 through the cast) and
the norm layers accumulate their statistics in float32 (:mod:`bnbench.bn`): mixed precision as
practitioners use it. Logits are returned in float32.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from bnbench import bn, norms

ACTIVATION_FUNCTIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
}
COMPUTE_DTYPES: dict[str, jnp.dtype] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Normalization(NamedTuple):
    """The norm layer of every block; static (part of the compiled program).

    ``kind``: ``"batch"`` (:func:`bnbench.bn.batch_norm`), ``"group"`` (:func:`bnbench.norms.group_norm`
    with ``groups``), ``"layer"`` (:func:`bnbench.norms.layer_norm`) or ``"none"``. For BN,
    ``ghost_batch_size`` (``None``: the whole batch), ``renorm`` and ``running_var`` are passed to
    :func:`bnbench.bn.batch_norm`.
    """

    kind: str = "batch"
    groups: int = 4
    ghost_batch_size: int | None = None
    renorm: bool = False
    running_var: str = "biased"


class Model(NamedTuple):
    """A model as pure functions and the counts its probes need.

    ``init(key) -> (params, state)``: ``params["layers"]`` holds every hidden weighted layer's
    ``{"w": kernel, ...}`` in forward order, ``params["head"]`` the classifier's, ``params["norm"]`` the
    norm layers' :class:`bnbench.bn.BNParams` (other keys are family-specific); ``state`` holds one
    :class:`bnbench.bn.BNState` per BN layer, in forward order, and is empty otherwise.
    ``apply(params, state, x, *, train, eval_stats="running", **scalars) -> (float32 logits, new_state)``:
    ``scalars`` are the fields of :class:`Scalars` (momentum, epsilon and the renorm bounds are BN's,
    see :mod:`bnbench.bn`, and may be traced). In evaluation (``train=False``) BN normalizes with the
    running statistics (``eval_stats="running"``) or with the statistics of the batch ``x`` itself
    (``"batch"``; plain BN, state unchanged).
    ``preactivations(params, state, x, **same keywords) -> [array, ...]``: the input to each
    nonlinearity, in evaluation mode. In training, ``noise_key``/``noise_strength`` add noise after
    every norm layer (:func:`add_noise`) and ``dropout_key``/``dropout_rate`` apply dropout
    (:func:`dropout`) where the family places it.
    ``hidden_layers``: the length of ``params["layers"]``; ``bn_layers``: the length of ``state``.
    """

    init: Callable
    apply: Callable
    preactivations: Callable
    hidden_layers: int
    bn_layers: int


class Scalars(NamedTuple):
    """The traced scalars and per-step keys of the layers (training-only randomness is off when a key
    is ``None``)."""

    momentum: float | jax.Array = bn.DEFAULT_MOMENTUM
    epsilon: float | jax.Array = bn.DEFAULT_EPSILON
    renorm_rmax: float | jax.Array = bn.DEFAULT_RENORM_RMAX
    renorm_dmax: float | jax.Array = bn.DEFAULT_RENORM_DMAX
    noise_key: jax.Array | None = None
    noise_strength: float | jax.Array = 0.0
    dropout_key: jax.Array | None = None
    dropout_rate: float | jax.Array = 0.0


def from_forward(init: Callable, forward: Callable, hidden_layers: int, bn_layers: int) -> Model:
    """The :class:`Model` of ``init`` and ``forward(params, state, x, train, eval_stats, scalars) ->
    (logits, new_state, preactivations)``, with ``scalars`` a :class:`Scalars`."""

    def apply(params, state, x, *, train, eval_stats="running", **scalars):
        logits, new_state, _ = forward(params, state, x, train, eval_stats, Scalars(**scalars))
        return logits, new_state

    def preactivations(params, state, x, *, eval_stats="running", **scalars):
        return forward(params, state, x, False, eval_stats, Scalars(**scalars))[2]

    return Model(init, apply, preactivations, hidden_layers, bn_layers)


def add_noise(h: jax.Array, key: jax.Array, strength) -> jax.Array:
    """Noisy BN (Santurkar et al. 2018, §2): each channel of ``h`` (last axis) times ``1 + s * u`` plus
    ``s * v``, with ``u, v ~ N(0, 1)`` drawn from ``key`` once per channel: a scale of non-unit
    variance and a shift of non-zero mean for the whole batch, which the caller redraws every step."""
    u, v = jax.random.normal(key, (2, h.shape[-1]), jnp.float32)
    return (h * (1 + strength * u) + strength * v).astype(h.dtype)


def dropout(h: jax.Array, key: jax.Array, rate) -> jax.Array:
    """Inverted dropout: each value kept with probability ``1 - rate`` and divided by it, so the
    expectation is ``h``; ``rate`` may be traced (in ``[0, 1)``)."""
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    mask = jax.random.uniform(key, h.shape) < keep
    return jnp.where(mask, h / keep.astype(h.dtype), 0).astype(h.dtype)


def normalize(h, params, state, norm: Normalization, *, train: bool, eval_stats: str, scalars: Scalars):
    """The norm layer; returns ``(output, new state)``."""
    if norm.kind == "group":
        return norms.group_norm(h, params, groups=norm.groups, epsilon=scalars.epsilon), state
    if norm.kind == "layer":
        return norms.layer_norm(h, params, epsilon=scalars.epsilon), state
    if not train and eval_stats == "batch":
        return bn.batch_norm(h, params, state, train=True, epsilon=scalars.epsilon)[0], state
    return bn.batch_norm(
        h,
        params,
        state,
        train=train,
        momentum=scalars.momentum,
        epsilon=scalars.epsilon,
        ghost_batch_size=norm.ghost_batch_size,
        renorm=norm.renorm,
        renorm_rmax=scalars.renorm_rmax,
        renorm_dmax=scalars.renorm_dmax,
        running_var=norm.running_var,
    )


def normal_weights(key: jax.Array, shapes: Sequence[tuple[int, ...]], stds: Sequence[float]) -> list[jax.Array]:
    """One normal array per shape, times its standard deviation, from a single draw: every
    ``jax.random`` call compiles its own kernel (~0.2 s each on XLA:CPU), and a deep net has many."""
    noise = jax.random.normal(key, (sum(math.prod(shape) for shape in shapes),), jnp.float32)
    weights, offset = [], 0
    for shape, std in zip(shapes, stds):
        weights.append(noise[offset : offset + math.prod(shape)].reshape(shape) * std)
        offset += math.prod(shape)
    return weights


def he_std(shape: tuple[int, ...], gain: float = 2.0) -> float:
    """``sqrt(gain / fan_in)`` for a weight of ``shape`` whose last axis is the output's (fan-in first):
    He for ReLU (gain 2), LeCun for sigmoid, tanh and linear heads (gain 1)."""
    return math.sqrt(gain / math.prod(shape[:-1]))


def conv(h: jax.Array, w: jax.Array, stride: int = 1, padding="SAME") -> jax.Array:
    """Convolution over the spatial axes of ``h`` (``(N, *spatial, C)``, 1-D or 2-D) with the kernel ``w``
    (``(*kernel, C_in, C_out)``) cast to ``h``'s dtype."""
    spatial = h.ndim - 2
    dimensions = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}[spatial]
    return jax.lax.conv_general_dilated(
        h, w.astype(h.dtype), window_strides=(stride,) * spatial, padding=padding, dimension_numbers=dimensions
    )


def dense(h: jax.Array, p: dict) -> jax.Array:
    """``h @ w + b`` with the weights cast to ``h``'s dtype."""
    return h @ p["w"].astype(h.dtype) + p["b"].astype(h.dtype)


def count_params(params) -> int:
    """The number of learned values in ``params``."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))
