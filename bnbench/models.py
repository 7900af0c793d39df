"""Small classifiers as pure ``init``/``apply`` pairs, with BN placed before or after the activation.

Every hidden block is one of (``placement``)::

    "pre":  linear/conv -> BN -> activation
    "post": linear/conv -> activation -> BN
    "none": linear/conv -> activation           (the no-BN baseline)

followed at the end by a linear classification head. Parameters and BN state are pytrees; the
weights of a given seed do not depend on ``placement`` (BN adds parameters but consumes no random
numbers), so runs that differ only in placement start from the same weights. Weights are normal with
variance ``gain / fan_in`` (He for ReLU hidden layers, LeCun otherwise); biases start at zero.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from bnbench import bn

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
}
PLACEMENTS = ("pre", "post", "none")

# Spatial kernel size by number of spatial dimensions: 1-D signals (MNIST-1D) and 2-D images.
_KERNEL_SIZE = {1: 5, 2: 3}
_CONV_DIMENSIONS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


class Model(NamedTuple):
    """A model as pure functions.

    ``init(key) -> (params, state)``.
    ``apply(params, state, x, *, train, momentum=0.99, epsilon=1e-5) -> (logits, new_state)``, where
    ``momentum`` and ``epsilon`` are BN's (see :mod:`bnbench.bn`) and may be traced scalars.
    ``preactivations(params, state, x, *, momentum=0.99, epsilon=1e-5) -> [array, ...]``: the input
    to each hidden layer's nonlinearity, in evaluation mode (BN with running statistics).
    """

    init: Callable
    apply: Callable
    preactivations: Callable


def _hidden_block(h, transform, bn_params, bn_state, *, activation, placement, train, momentum, epsilon):
    """One hidden block; returns ``(output, bn_state, input to the nonlinearity)``."""
    act = ACTIVATIONS[activation]
    pre = transform(h)
    if placement == "pre":
        pre, bn_state = bn.batch_norm(pre, bn_params, bn_state, train=train, momentum=momentum, epsilon=epsilon)
        return act(pre), bn_state, pre
    if placement == "post":
        h, bn_state = bn.batch_norm(act(pre), bn_params, bn_state, train=train, momentum=momentum, epsilon=epsilon)
        return h, bn_state, pre
    return act(pre), bn_state, pre


class _LayerKind(NamedTuple):
    """What distinguishes the MLP from the CNN: how one hidden layer is made and how data flows."""

    weight_shape: Callable[[int, int], tuple[int, ...]]  # (channels_in, width) -> weight shape (fan-in first)
    apply: Callable[[dict, jax.Array], jax.Array]  # (layer params {"w", "b"}, h) -> h
    prepare: Callable[[jax.Array], jax.Array]  # raw batch -> first layer's input
    flatten: Callable[[jax.Array], jax.Array]  # last hidden output -> (N, features) for the head
    channels_in: int
    head_features: Callable[[int], int]  # last width -> number of features the head sees


def _stack(kind: _LayerKind, widths: Sequence[int], num_classes: int, activation: str, placement: str) -> Model:
    """Builds a model of ``len(widths)`` hidden blocks of one layer kind and a linear head."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}")
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}")
    use_bn = placement != "none"

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
        bn_pairs = [bn.init(width) for width in widths] if use_bn else []
        bn_params, bn_state = [p for p, _ in bn_pairs], [s for _, s in bn_pairs]
        return {"layers": layers[:-1], "bn": bn_params, "head": layers[-1]}, bn_state

    def forward(params, state, x, train, momentum, epsilon):
        h = kind.prepare(x)
        new_state, preacts = [], []
        for i, layer in enumerate(params["layers"]):
            h, s, pre = _hidden_block(
                h,
                lambda z, layer=layer: kind.apply(layer, z),
                params["bn"][i] if use_bn else None,
                state[i] if use_bn else None,
                activation=activation,
                placement=placement,
                train=train,
                momentum=momentum,
                epsilon=epsilon,
            )
            preacts.append(pre)
            if use_bn:
                new_state.append(s)
        logits = kind.flatten(h) @ params["head"]["w"] + params["head"]["b"]
        return logits, new_state, preacts

    def apply(params, state, x, *, train, momentum=bn.DEFAULT_MOMENTUM, epsilon=bn.DEFAULT_EPSILON):
        logits, new_state, _ = forward(params, state, x, train, momentum, epsilon)
        return logits, new_state

    def preactivations(params, state, x, *, momentum=bn.DEFAULT_MOMENTUM, epsilon=bn.DEFAULT_EPSILON):
        return forward(params, state, x, False, momentum, epsilon)[2]

    return Model(init=init, apply=apply, preactivations=preactivations)


def mlp(
    *, input_shape: tuple[int, ...], widths: Sequence[int], num_classes: int, activation: str, placement: str
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
    return _stack(kind, widths, num_classes, activation, placement)


def cnn(
    *, input_shape: tuple[int, ...], widths: Sequence[int], num_classes: int, activation: str, placement: str
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
    return _stack(kind, widths, num_classes, activation, placement)


MODELS: dict[str, Callable[..., Model]] = {"mlp": mlp, "cnn": cnn}


def make_model(
    name: str, *, input_shape: tuple[int, ...], widths: Sequence[int], num_classes: int, activation: str, placement: str
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
    )
