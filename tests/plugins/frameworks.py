"""Flax NNX and Equinox networks with their own norm layers, run through bnbench.adapters: an MLP whose
norm layers must be gone, and a 1-D conv net whose norm layer must normalize as the framework's does.
(Their 2-D conv nets against native twins: tests/plugins/conv_frameworks.py.)"""

import math

import equinox as eqx
import jax
from flax import nnx

from bnbench import adapters, plugin


class NnxNet(nnx.Module):
    def __init__(self, features: int, width: int, classes: int, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(features, width, rngs=rngs)
        self.bn1 = nnx.BatchNorm(width, rngs=rngs)
        self.l2 = nnx.Linear(width, width, rngs=rngs)
        self.bn2 = nnx.BatchNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, classes, rngs=rngs)

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        x = nnx.relu(self.bn1(self.l1(x)))
        x = nnx.relu(self.bn2(self.l2(x)))
        return self.head(x)


class EqxNet(eqx.Module):
    l1: eqx.nn.Linear
    bn1: eqx.nn.BatchNorm
    l2: eqx.nn.Linear
    bn2: eqx.nn.BatchNorm
    head: eqx.nn.Linear

    def __init__(self, features: int, width: int, classes: int, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.l1 = eqx.nn.Linear(features, width, key=k1)
        self.bn1 = eqx.nn.BatchNorm(width, axis_name="batch", mode="ema")
        self.l2 = eqx.nn.Linear(width, width, key=k2)
        self.bn2 = eqx.nn.BatchNorm(width, axis_name="batch", mode="ema")
        self.head = eqx.nn.Linear(width, classes, key=k3)

    def __call__(self, x, state):
        h, state = self.bn1(self.l1(x.reshape(-1)), state)
        h, state = self.bn2(self.l2(jax.nn.relu(h)), state)
        return self.head(jax.nn.relu(h)), state


def _make_nnx(ctx, width):
    return lambda rngs: NnxNet(math.prod(ctx.input_shape), width, ctx.num_classes, rngs=rngs)


def _make_eqx(ctx, width):
    return lambda key: eqx.nn.make_with_state(EqxNet)(math.prod(ctx.input_shape), width, ctx.num_classes, key)


def nnx_net(ctx: plugin.Context, *, width: int = 8) -> plugin.Network:
    return adapters.nnx(_make_nnx(ctx, width))


def eqx_net(ctx: plugin.Context, *, width: int = 8) -> plugin.Network:
    return adapters.equinox(_make_eqx(ctx, width))


class NnxConv(nnx.Module):
    """A 1-D conv net, channels last as Flax's are: conv, BatchNorm, ReLU, a head."""

    def __init__(self, length: int, channels: int, classes: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, channels, (5,), strides=(2,), rngs=rngs)
        self.bn = nnx.BatchNorm(channels, rngs=rngs)
        self.head = nnx.Linear(math.ceil(length / 2) * channels, classes, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.bn(self.conv(x.reshape(x.shape[0], -1, 1))))
        return self.head(h.reshape(h.shape[0], -1))


class EqxConv(eqx.Module):
    """The same net, channels first as Equinox's are."""

    conv: eqx.nn.Conv1d
    bn: eqx.nn.BatchNorm
    head: eqx.nn.Linear

    def __init__(self, length: int, channels: int, classes: int, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv1d(1, channels, 5, stride=2, padding=2, key=k1)
        self.bn = eqx.nn.BatchNorm(channels, axis_name="batch", mode="batch")
        self.head = eqx.nn.Linear(math.ceil(length / 2) * channels, classes, key=k2)

    def __call__(self, x, state):
        h, state = self.bn(self.conv(x.reshape(1, -1)), state)
        return self.head(jax.nn.relu(h).reshape(-1)), state


def _make_nnx_conv(ctx, channels):
    return lambda rngs: NnxConv(ctx.input_shape[0], channels, ctx.num_classes, rngs=rngs)


def _make_eqx_conv(ctx, channels):
    return lambda key: eqx.nn.make_with_state(EqxConv)(ctx.input_shape[0], channels, ctx.num_classes, key)


def nnx_conv(ctx: plugin.Context, *, channels: int = 6) -> plugin.Network:
    return adapters.nnx(_make_nnx_conv(ctx, channels))


def eqx_conv(ctx: plugin.Context, *, channels: int = 6) -> plugin.Network:
    return adapters.equinox(_make_eqx_conv(ctx, channels))


def own_training_forward(framework: str, ctx: plugin.Context, key, x, *, channels: int = 6):
    """The conv net's logits in training mode with the framework's own BatchNorm (batch statistics)."""
    if framework == "nnx":
        return _make_nnx_conv(ctx, channels)(nnx.Rngs(key))(x)
    model, state = _make_eqx_conv(ctx, channels)(key)
    return jax.vmap(lambda e: model(e, state)[0], axis_name="batch")(x)
