"""A Flax NNX and an Equinox MLP with their own BatchNorm layers, run through bnbench.adapters: their norm
layers must be gone (their conv nets: tests/plugins/conv_frameworks.py)."""

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
