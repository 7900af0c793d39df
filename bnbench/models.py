"""Small classifiers as pure ``init``/``apply`` pairs, with BN placed before or after the activation.

Every hidden block is one of (``placement``)::

    "pre":  linear/conv -> norm -> activation
    "post": linear/conv -> activation -> norm
    "none": linear/conv -> activation           (the no-normalization baseline)

followed at the end by a linear classification head. The norm layer is BN by default, or one of its
variants or replacements (:class:`Normalization`); ``norm="none"`` is the same as ``placement="none"``.
Parameters and normalization state are pytrees; the weights of a given seed do not depend on
``placement`` or the norm (they add parameters but consume no random numbers), so runs that differ
only in those start from the same weights. Weights are normal with
variance ``gain / fan_in`` (He for ReLU hidden layers, LeCun otherwise); biases start at zero.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from bnbench import bn, norms
from bnbench.options import NORMS, PLACEMENTS

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
}
EVAL_STATS = ("running", "batch")  # "precise" is "running" with recomputed state (bnbench.train)

# Spatial kernel size by number of spatial dimensions: 1-D signals (MNIST-1D) and 2-D images.
_KERNEL_SIZE = {1: 5, 2: 3}
_CONV_DIMENSIONS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


class Normalization(NamedTuple):
    """The norm layer of every hidden block; static (part of the compiled program).

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
    """A model as pure functions.

    ``init(key) -> (params, state)``; ``state`` holds one :class:`bnbench.bn.BNState` per hidden block
    for BN and is empty otherwise.
    ``apply(params, state, x, *, train, eval_stats="running", momentum=0.99, epsilon=1e-5,
    renorm_rmax=3.0, renorm_dmax=5.0) -> (logits, new_state)``: ``momentum``, ``epsilon`` and the
    renorm bounds are BN's (see :mod:`bnbench.bn`) and may be traced scalars. In evaluation
    (``train=False``) BN normalizes with the running statistics (``eval_stats="running"``) or with the
    statistics of the batch ``x`` itself (``"batch"``; plain BN, state unchanged).
    ``preactivations(params, state, x, **same keywords) -> [array, ...]``: the input to each hidden
    layer's nonlinearity, in evaluation mode. In training, ``noise_key`` and ``noise_strength`` add
    noise after every norm layer (:func:`add_noise`, the key folded with the layer's index); without
    norm layers, after each hidden layer's linear map, where a "pre" norm layer would be.
    """

    init: Callable
    apply: Callable
    preactivations: Callable


class _Scalars(NamedTuple):
    """The traced scalars of the norm layers, and the noise after them (see :func:`add_noise`)."""

    momentum: float | jax.Array = bn.DEFAULT_MOMENTUM
    epsilon: float | jax.Array = bn.DEFAULT_EPSILON
    renorm_rmax: float | jax.Array = bn.DEFAULT_RENORM_RMAX
    renorm_dmax: float | jax.Array = bn.DEFAULT_RENORM_DMAX
    noise_key: jax.Array | None = None
    noise_strength: float | jax.Array = 0.0


def add_noise(h: jax.Array, key: jax.Array, strength) -> jax.Array:
    """Noisy BN (Santurkar et al. 2018, §2): each channel of ``h`` (last axis) times ``1 + s * u`` plus
    ``s * v``, with ``u, v ~ N(0, 1)`` drawn from ``key`` once per channel: a scale of non-unit
    variance and a shift of non-zero mean for the whole batch, which the caller redraws every step."""
    u, v = jax.random.normal(key, (2, h.shape[-1]), jnp.float32)
    return (h * (1 + strength * u) + strength * v).astype(h.dtype)


def _normalize(h, params, state, norm: Normalization, *, train: bool, eval_stats: str, scalars: _Scalars):
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


def _hidden_block(h, transform, normalize, *, activation, placement):
    """One hidden block; ``normalize(h) -> (h, state)``; returns ``(output, state, input to the nonlinearity)``."""
    act = ACTIVATIONS[activation]
    pre = transform(h)
    if placement == "pre":
        pre, state = normalize(pre)
        return act(pre), state, pre
    if placement == "post":
        h, state = normalize(act(pre))
        return h, state, pre
    return act(pre), None, pre


class _LayerKind(NamedTuple):
    """What distinguishes the MLP from the CNN: how one hidden layer is made and how data flows."""

    weight_shape: Callable[[int, int], tuple[int, ...]]  # (channels_in, width) -> weight shape (fan-in first)
    apply: Callable[[dict, jax.Array], jax.Array]  # (layer params {"w", "b"}, h) -> h
    prepare: Callable[[jax.Array], jax.Array]  # raw batch -> first layer's input
    flatten: Callable[[jax.Array], jax.Array]  # last hidden output -> (N, features) for the head
    channels_in: int
    head_features: Callable[[int], int]  # last width -> number of features the head sees


def _stack(
    kind: _LayerKind, widths: Sequence[int], num_classes: int, activation: str, placement: str, norm: Normalization
) -> Model:
    """Builds a model of ``len(widths)`` hidden blocks of one layer kind and a linear head."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}")
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}")
    if norm.kind not in NORMS:
        raise ValueError(f"unknown norm {norm.kind!r}")
    use_norm = placement != "none" and norm.kind != "none"
    has_state = use_norm and norm.kind == "batch"

    def init(key):
        shapes, c = [], kind.channels_in
        for width in widths:
            shapes.append(kind.weight_shape(c, width))
            c = width
        shapes.append((kind.head_features(c), num_classes))
        # He initialization keeps ReLU pre-activations at unit scale; LeCun suits sigmoid/tanh and the head.
        gains = [2.0 if activation == "relu" else 1.0] * len(widths) + [1.0]
        # One draw for all weights: every jax.random call compiles its own kernel (~0.2 s each on XLA:CPU).
        noise = jax.random.normal(key, (sum(math.prod(shape) for shape in shapes),), jnp.float32)
        weights, offset = [], 0
        for shape, gain in zip(shapes, gains):
            fan_in = math.prod(shape[:-1])
            weights.append(noise[offset : offset + math.prod(shape)].reshape(shape) * math.sqrt(gain / fan_in))
            offset += math.prod(shape)
        layers = [{"w": w, "b": jnp.zeros((w.shape[-1],), jnp.float32)} for w in weights]
        norm_pairs = [bn.init(width) for width in widths] if use_norm else []
        norm_params = [p for p, _ in norm_pairs]
        state = [s for _, s in norm_pairs] if has_state else []
        return {"layers": layers[:-1], "norm": norm_params, "head": layers[-1]}, state

    def forward(params, state, x, train, eval_stats, scalars):
        def normalize(z, i):
            out, s = _normalize(
                z, params["norm"][i], state[i] if has_state else None, norm, train=train, eval_stats=eval_stats,
                scalars=scalars,
            )
            return noisy(out, i), s

        def noisy(z, i):
            if not train or scalars.noise_key is None:
                return z
            return add_noise(z, jax.random.fold_in(scalars.noise_key, i), scalars.noise_strength)

        def transform(z, layer, i):
            # Without a norm layer, noise goes where a pre-activation norm layer would be (noise alone).
            z = kind.apply(layer, z)
            return z if use_norm else noisy(z, i)

        h = kind.prepare(x)
        new_state, preacts = [], []
        for i, layer in enumerate(params["layers"]):
            h, s, pre = _hidden_block(
                h,
                lambda z, layer=layer, i=i: transform(z, layer, i),
                lambda z, i=i: normalize(z, i),
                activation=activation,
                placement=placement if use_norm else "none",
            )
            preacts.append(pre)
            if has_state:
                new_state.append(s)
        logits = kind.flatten(h) @ params["head"]["w"] + params["head"]["b"]
        return logits, new_state, preacts

    def apply(params, state, x, *, train, eval_stats="running", **scalars):
        logits, new_state, _ = forward(params, state, x, train, eval_stats, _Scalars(**scalars))
        return logits, new_state

    def preactivations(params, state, x, *, eval_stats="running", **scalars):
        return forward(params, state, x, False, eval_stats, _Scalars(**scalars))[2]

    return Model(init=init, apply=apply, preactivations=preactivations)


def mlp(
    *,
    input_shape: tuple[int, ...],
    widths: Sequence[int],
    num_classes: int,
    activation: str,
    placement: str,
    norm: Normalization = Normalization(),
) -> Model:
    """Fully connected network; inputs of any shape are flattened per example."""
    in_features = math.prod(input_shape)

    def flatten(x):
        return x.reshape(x.shape[0], -1)

    kind = _LayerKind(
        weight_shape=lambda fan_in, width: (fan_in, width),
        apply=lambda p, h: h @ p["w"] + p["b"],
        prepare=flatten,
        flatten=lambda h: h,
        channels_in=in_features,
        head_features=lambda c: c,
    )
    return _stack(kind, widths, num_classes, activation, placement, norm)


def cnn(
    *,
    input_shape: tuple[int, ...],
    widths: Sequence[int],
    num_classes: int,
    activation: str,
    placement: str,
    norm: Normalization = Normalization(),
) -> Model:
    """Convolutional network: one stride-2 'SAME' convolution per width, then flatten and a linear head.

    ``input_shape`` is ``(L,)`` or ``(L, C)`` for 1-D signals (kernel 5) and ``(H, W, C)`` for images
    (kernel 3x3); a missing channel axis is added. BN normalizes per channel over batch and space.
    """
    if len(input_shape) == 1:
        input_shape = (*input_shape, 1)
    spatial = len(input_shape) - 1
    if spatial not in _KERNEL_SIZE:
        raise ValueError(f"cnn takes 1-D signals or 2-D images, got input shape {input_shape}")
    kernel = (_KERNEL_SIZE[spatial],) * spatial
    dimensions = _CONV_DIMENSIONS[spatial]
    out_spatial = list(input_shape[:-1])
    for _ in widths:
        out_spatial = [math.ceil(n / 2) for n in out_spatial]

    def conv(p, h):
        out = jax.lax.conv_general_dilated(
            h, p["w"], window_strides=(2,) * spatial, padding="SAME", dimension_numbers=dimensions
        )
        return out + p["b"]

    def add_channel_axis(x):
        return x.reshape(x.shape[0], *input_shape)

    kind = _LayerKind(
        weight_shape=lambda channels_in, width: (*kernel, channels_in, width),
        apply=conv,
        prepare=add_channel_axis,
        flatten=lambda h: h.reshape(h.shape[0], -1),
        channels_in=input_shape[-1],
        head_features=lambda c: c * math.prod(out_spatial),
    )
    return _stack(kind, widths, num_classes, activation, placement, norm)


MODELS: dict[str, Callable[..., Model]] = {"mlp": mlp, "cnn": cnn}


def make_model(
    name: str,
    *,
    input_shape: tuple[int, ...],
    widths: Sequence[int],
    num_classes: int,
    activation: str,
    placement: str,
    norm: Normalization = Normalization(),
) -> Model:
    """Looks up a model family by name (``"mlp"`` or ``"cnn"``) and builds it."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}")
    return MODELS[name](
        input_shape=tuple(input_shape),
        widths=tuple(widths),
        num_classes=num_classes,
        activation=activation,
        placement=placement,
        norm=norm,
    )
