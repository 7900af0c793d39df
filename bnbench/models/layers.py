"""The pieces every model family shares: activations, the norm layer, noise, dropout and initializers.

A model computes in ``dtype`` (``"float32"`` or ``"bfloat16"``): inputs and weights are cast to it at
each layer, while parameters stay float32 (their gradients arrive in float32 through the cast) and
the norm layers accumulate their statistics in float32 (:mod:`bnbench.norm.bn`): mixed precision as
practitioners use it. Logits are returned in float32.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from bnbench.norm import bn
from bnbench.norm import per_example
from bnbench.norm.settings import BNSettings

ACTIVATION_FUNCTIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    # The exact GELU, x * Phi(x) (Hendrycks & Gimpel 2016), as PyTorch's and Keras's defaults; jax.nn.gelu's
    # default is the tanh approximation.
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "silu": jax.nn.silu,  # swish with beta = 1
    "leaky_relu": jax.nn.leaky_relu,  # negative slope 0.01, as PyTorch's default
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
}
# The initialization gain of each activation's hidden layers (he_std): He's 2 for the rectifiers (ReLU
# and its smooth and leaky kin, as is common practice), LeCun's 1 for the saturating ones.
INIT_GAINS = {"relu": 2.0, "gelu": 2.0, "silu": 2.0, "leaky_relu": 2.0, "elu": 2.0, "sigmoid": 1.0, "tanh": 1.0,
              "softplus": 1.0}
COMPUTE_DTYPES: dict[str, jnp.dtype] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Normalization(NamedTuple):
    """The norm layer of every block; static (part of the compiled program).

    ``kind``: ``"batch"`` (:func:`bnbench.norm.bn.batch_norm`), ``"group"`` (:func:`bnbench.norm.per_example.group_norm`
    with ``groups``), ``"layer"`` (:func:`bnbench.norm.per_example.layer_norm`) or ``"none"``. For BN,
    ``ghost_batch_size`` (``None``: the whole batch), ``renorm`` and ``running_var`` are passed to
    :func:`bnbench.norm.bn.batch_norm`.
    """

    kind: str = "batch"
    groups: int = 4
    ghost_batch_size: int | None = None
    renorm: bool = False
    running_var: str = "biased"


def layer_weights(params) -> list[jax.Array]:
    """``W_1 .. W_L`` and the head's weight of a built-in model, in layer order."""
    return [layer["w"] for layer in params["layers"]] + [params["head"]["w"]]


class Model(NamedTuple):
    """A model as pure functions and the counts its probes need.

    ``init(key) -> (params, state)``: ``params["norm"]`` holds the norm layers'
    :class:`bnbench.norm.bn.BNParams` (a built-in family's ``params["layers"]`` every hidden weighted layer's
    ``{"w": kernel, ...}`` in forward order and ``params["head"]`` the classifier's; other keys are
    family-specific); ``state`` holds one :class:`bnbench.norm.bn.BNState` per BN layer, in forward order,
    and is empty otherwise.
    ``apply(params, state, x, *, train, eval_stats="running", **scalars) -> (float32 logits, new_state)``:
    ``scalars`` are the fields of :class:`Scalars` (``bn_settings``: the run's
    :class:`bnbench.norm.settings.BNSettings`, which may be traced). In evaluation (``train=False``) BN
    normalizes with the running statistics (``eval_stats="running"``) or with the statistics of the
    batch ``x`` itself (``"batch"``; plain BN, state unchanged).
    ``preactivations(params, state, x, **same keywords) -> [array, ...]``: the input to each
    nonlinearity, in evaluation mode. In training, ``noise_key``/``noise_strength`` add noise after
    every norm layer (:func:`add_noise`) and ``dropout_key``/``dropout_rate`` apply dropout
    (:func:`dropout`) where the family places it; ``model_key`` is a plugin network's own key.
    ``weights(params) -> [W_1, ..., W_L, head]``: the weight matrices and kernels the probes report on;
    ``hidden_layers``: L; ``bn_layers``: the length of ``state``.
    """

    init: Callable
    apply: Callable
    preactivations: Callable
    hidden_layers: int
    bn_layers: int
    weights: Callable = layer_weights


class Scalars(NamedTuple):
    """The traced scalars and per-step keys of the layers (training-only randomness is off when a key
    is ``None``)."""

    bn_settings: BNSettings = BNSettings()
    noise_key: jax.Array | None = None
    noise_strength: float | jax.Array = 0.0
    dropout_key: jax.Array | None = None
    dropout_rate: float | jax.Array = 0.0
    model_key: jax.Array | None = None


def from_forward(
    init: Callable, forward: Callable, hidden_layers: int, bn_layers: int, weights: Callable = layer_weights
) -> Model:
    """The :class:`Model` of ``init`` and ``forward(params, state, x, train, eval_stats, scalars) ->
    (logits, new_state, preactivations)``, with ``scalars`` a :class:`Scalars`."""

    def apply(params, state, x, *, train, eval_stats="running", **scalars):
        logits, new_state, _ = forward(params, state, x, train, eval_stats, Scalars(**scalars))
        return logits, new_state

    def preactivations(params, state, x, *, eval_stats="running", **scalars):
        return forward(params, state, x, False, eval_stats, Scalars(**scalars))[2]

    return Model(init, apply, preactivations, hidden_layers, bn_layers, weights)


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


def normalize(h, params, state, norm: Normalization, *, train: bool, eval_stats: str, scalars: Scalars,
              axis_name: str | None = None):
    """The norm layer; returns ``(output, new state)``. With ``axis_name``, ``h`` is one example of a
    batch vmapped over that axis, and BN takes its statistics across it (GroupNorm and LayerNorm are per
    example anyway)."""
    if norm.kind in ("group", "layer"):
        groups = norm.groups if norm.kind == "group" else 1  # LayerNorm is GroupNorm with one group
        batch = h[None] if axis_name else h  # one example of a vmapped batch: a batch of one
        out = per_example.group_norm(batch, params, groups=groups, epsilon=scalars.bn_settings.epsilon)
        return (out[0] if axis_name else out), state
    if not train and eval_stats == "batch":
        y, _ = bn.batch_norm(h, params, state, train=True, epsilon=scalars.bn_settings.epsilon, axis_name=axis_name)
        return y, state
    return bn.batch_norm(
        h,
        params,
        state,
        train=train,
        **scalars.bn_settings._asdict(),
        axis_name=axis_name if train else None,
        ghost_batch_size=norm.ghost_batch_size,
        renorm=norm.renorm,
        running_var=norm.running_var,
    )


class BlockNorm(NamedTuple):
    """The norm layer of a chain's blocks in one forward pass, with the dropout and noise around it: what
    the built-in chains (:mod:`bnbench.models.stack`) and plugin networks (:mod:`bnbench.models.plugin`) share.

    Block ``i`` draws its noise and dropout masks from ``fold_in(key, i)``. Without a norm layer
    (``placement`` or ``norm`` "none") the noise goes where a "pre" norm layer would be (noise alone).
    """

    norm: Normalization
    placement: str
    dropout_placement: str
    train: bool
    eval_stats: str
    scalars: Scalars
    axis_name: str | None = None  # per-example values vmapped over this batch axis (see normalize)

    @property
    def active(self) -> bool:
        """Whether the blocks have a norm layer."""
        return self.placement != "none" and self.norm.kind != "none"

    def noisy(self, z, i: int):
        if not self.train or self.scalars.noise_key is None:
            return z
        return add_noise(z, jax.random.fold_in(self.scalars.noise_key, i), self.scalars.noise_strength)

    def dropped(self, z, i: int, where: str):
        if not self.train or self.scalars.dropout_key is None or where != self.dropout_placement:
            return z
        key = jax.random.fold_in(self.scalars.dropout_key, i)
        if self.axis_name is not None:  # one example of a vmapped batch: a mask of its own
            key = jax.random.fold_in(key, jax.lax.axis_index(self.axis_name))
        return dropout(z, key, self.scalars.dropout_rate)

    def normalize(self, z, i: int, params, state):
        """Block ``i``'s norm layer, dropout before it and noise after it: ``(output, new state)``
        (the new state None without BN)."""
        z = self.dropped(z, i, "before_norm")
        if not self.active:
            return self.noisy(z, i), None
        out, new = normalize(z, params, state, self.norm, train=self.train, eval_stats=self.eval_stats,
                             scalars=self.scalars, axis_name=self.axis_name)
        return self.noisy(out, i), new

    def block(self, pre, i: int, fn: Callable, params, state):
        """The rest of block ``i`` after its linear layer's output ``pre``: the norm layer and ``fn`` in
        the order ``placement`` says, then dropout after the activation. Returns ``(output, input to
        fn, new state)``."""
        if self.placement == "post" and self.active:
            h, new = self.normalize(fn(pre), i, params, state)
        else:
            pre, new = self.normalize(pre, i, params, state)
            h = fn(pre)
        return self.dropped(h, i, "after_activation"), pre, new


def normal_weights(key: jax.Array, shapes: Sequence[tuple[int, ...]], stds: Sequence[float]) -> list[jax.Array]:
    """One normal array per shape, times its standard deviation, from a single draw: every
    ``jax.random`` call compiles its own kernel on XLA:CPU, and a deep net has many."""
    noise = jax.random.normal(key, (sum(math.prod(shape) for shape in shapes),), jnp.float32)
    weights, offset = [], 0
    for shape, std in zip(shapes, stds):
        weights.append(noise[offset : offset + math.prod(shape)].reshape(shape) * std)
        offset += math.prod(shape)
    return weights


def he_std(shape: tuple[int, ...], gain: float = 2.0) -> float:
    """``sqrt(gain / fan_in)`` for a weight of ``shape`` whose last axis is the output's (fan-in first):
    He for ReLU (gain 2), LeCun for sigmoid, tanh and linear heads (gain 1); :data:`INIT_GAINS`."""
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
