"""Small classifiers as pure ``init``/``apply`` pairs, with BN placed before or after the activation.

Every hidden block is one of (``placement``)::

    "pre":  linear/conv -> BN -> activation
    "post": linear/conv -> activation -> BN
    "none": linear/conv -> activation           (the no-BN baseline)

followed at the end by a linear classification head. Parameters and BN state are pytrees; the
weights of a given seed do not depend on ``placement`` (BN adds parameters but consumes no random
numbers), so runs that differ only in placement start from the same weights.
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
    """A model as two pure functions.

    ``init(key) -> (params, state)``.
    ``apply(params, state, x, *, train, momentum=0.99, epsilon=1e-5) -> (logits, new_state)``, where
    ``momentum`` and ``epsilon`` are BN's (see :mod:`bnbench.bn`) and may be traced scalars.
    """

    init: Callable
    apply: Callable


def _normal_weights(key: jax.Array, shape: tuple[int, ...], fan_in: int, activation: str) -> jax.Array:
    # He initialization keeps ReLU pre-activations at unit scale; LeCun suits sigmoid/tanh.
    gain = 2.0 if activation == "relu" else 1.0
    return jax.random.normal(key, shape, jnp.float32) * math.sqrt(gain / fan_in)


def _hidden_block(h, transform, bn_params, bn_state, *, activation, placement, train, momentum, epsilon):
    act = ACTIVATIONS[activation]
    h = transform(h)
    if placement == "pre":
        h, bn_state = bn.batch_norm(h, bn_params, bn_state, train=train, momentum=momentum, epsilon=epsilon)
        h = act(h)
    elif placement == "post":
        h = act(h)
        h, bn_state = bn.batch_norm(h, bn_params, bn_state, train=train, momentum=momentum, epsilon=epsilon)
    else:
        h = act(h)
    return h, bn_state


class _LayerKind(NamedTuple):
    """What distinguishes the MLP from the CNN: how one hidden layer is made and how data flows."""

    init: Callable[[jax.Array, int, int], dict]  # (key, channels_in, width) -> layer params
    apply: Callable[[dict, jax.Array], jax.Array]  # (layer params, h) -> h
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
        keys = jax.random.split(key, len(widths) + 1)
        layers, bn_params, bn_state = [], [], []
        c = kind.channels_in
        for k, width in zip(keys[:-1], widths):
            layers.append(kind.init(k, c, width))
            if use_bn:
                p, s = bn.init(width)
                bn_params.append(p)
                bn_state.append(s)
            c = width
        fan_in = kind.head_features(c)
        head = {
            "w": jax.random.normal(keys[-1], (fan_in, num_classes), jnp.float32) / math.sqrt(fan_in),
            "b": jnp.zeros((num_classes,), jnp.float32),
        }
        return {"layers": layers, "bn": bn_params, "head": head}, bn_state

    def apply(params, state, x, *, train, momentum=bn.DEFAULT_MOMENTUM, epsilon=bn.DEFAULT_EPSILON):
        h = kind.prepare(x)
        new_state = []
        for i, layer in enumerate(params["layers"]):
            h, s = _hidden_block(
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
            if use_bn:
                new_state.append(s)
        logits = kind.flatten(h) @ params["head"]["w"] + params["head"]["b"]
        return logits, new_state

    return Model(init=init, apply=apply)


def mlp(
    *, input_shape: tuple[int, ...], widths: Sequence[int], num_classes: int, activation: str, placement: str
) -> Model:
    """Fully connected network; inputs of any shape are flattened per example."""
    in_features = math.prod(input_shape)

    def layer_init(key, fan_in, width):
        return {"w": _normal_weights(key, (fan_in, width), fan_in, activation), "b": jnp.zeros((width,))}

    def flatten(x):
        return x.reshape(x.shape[0], -1)

    kind = _LayerKind(
        init=layer_init,
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

    def layer_init(key, fan_in_channels, width):
        fan_in = fan_in_channels * math.prod(kernel)
        w = _normal_weights(key, (*kernel, fan_in_channels, width), fan_in, activation)
        return {"w": w, "b": jnp.zeros((width,))}

    def conv(p, h):
        out = jax.lax.conv_general_dilated(
            h, p["w"], window_strides=(2,) * spatial, padding="SAME", dimension_numbers=dimensions
        )
        return out + p["b"]

    def add_channel_axis(x):
        return x.reshape(x.shape[0], *input_shape)

    kind = _LayerKind(
        init=layer_init,
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
