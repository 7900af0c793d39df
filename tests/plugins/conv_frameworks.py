"""One 2-D conv net three ways, on images of ``ctx.input_shape == (H, W, 1)``: a Flax NNX model (channels
last) and an Equinox model (channels first, one example at a time), each with its own BatchNorm (run
through bnbench.adapters), and native plugins (bnbench.plugin) of the same network from the same initial
weights, written with ``jax.lax.conv_general_dilated``. The adapted models must train as their twins do,
and their norm sites normalize as the frameworks' own BatchNorm does.

The net: a 3x3 convolution of stride 2 and padding 1, its bias, a norm site, ReLU, a linear head.
"""

import math

import equinox as eqx
import jax
from flax import nnx

from bnbench import adapters, plugin

STRIDE, PADDING = (2, 2), ((1, 1), (1, 1))


def _features(ctx, channels: int) -> int:
    """The head's inputs: the convolution's output, ``ceil(H / 2) * ceil(W / 2) * channels``."""
    return math.ceil(ctx.input_shape[0] / 2) * math.ceil(ctx.input_shape[1] / 2) * channels


class NnxConv2d(nnx.Module):
    def __init__(self, features: int, channels: int, classes: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, channels, (3, 3), strides=STRIDE, padding=PADDING, rngs=rngs)
        self.bn = nnx.BatchNorm(channels, rngs=rngs)
        self.head = nnx.Linear(features, classes, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.bn(self.conv(x)))
        return self.head(h.reshape(h.shape[0], -1))


class EqxConv2d(eqx.Module):
    """As the user wrote it: Equinox's layers, one example channels first, BN across ``"batch"``."""

    conv: eqx.nn.Conv2d
    bn: eqx.nn.BatchNorm
    head: eqx.nn.Linear

    def __init__(self, features: int, channels: int, classes: int, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(1, channels, 3, stride=STRIDE, padding=PADDING, key=k1)
        self.bn = eqx.nn.BatchNorm(channels, axis_name="batch", mode="batch")
        self.head = eqx.nn.Linear(features, classes, key=k2)

    def __call__(self, x, state):
        h, state = self.bn(self.conv(x), state)
        return self.head(jax.nn.relu(h).reshape(-1)), state


def _make_nnx(ctx, channels):
    return lambda rngs: NnxConv2d(_features(ctx, channels), channels, ctx.num_classes, rngs=rngs)


def _make_eqx(ctx, channels):
    return lambda key: eqx.nn.make_with_state(EqxConv2d)(_features(ctx, channels), channels, ctx.num_classes, key)


def nnx_conv2d(ctx: plugin.Context, *, channels: int = 4) -> plugin.Network:
    return adapters.nnx(_make_nnx(ctx, channels))


def eqx_conv2d(ctx: plugin.Context, *, channels: int = 4) -> plugin.Network:
    return adapters.equinox(_make_eqx(ctx, channels))


def own_training_forward(framework: str, ctx: plugin.Context, key, x, *, channels: int = 4):
    """The conv net's logits on the batch ``x`` (channels last) in training mode with the framework's
    own BatchNorm (batch statistics); Equinox's model gets each example channels first by hand."""
    if framework == "nnx":
        return _make_nnx(ctx, channels)(nnx.Rngs(key))(x)
    return _own_per_example(_make_eqx(ctx, channels)(key), x)


def _own_per_example(made, x):
    """An Equinox ``(model, state)``'s training-mode logits of the batch ``x`` (channels last), each
    example handed channels first by hand, its BN's statistics across ``"batch"``."""
    model, state = made
    return jax.vmap(lambda e: model(e, state)[0], axis_name="batch")(jax.numpy.moveaxis(x, -1, 1))


def _native(init, flatten_channels_first: bool):
    """The net as a plugin, channels last; the head reads the features in the framework's order
    (Equinox flattens ``(C, H, W)``, NNX ``(H, W, C)``)."""

    def apply(params, x, norm, *, train, key):
        h = jax.lax.conv_general_dilated(x, params["conv"]["w"], STRIDE, PADDING,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = norm.act(h + params["conv"]["b"], jax.nn.relu)
        h = h.transpose(0, 3, 1, 2) if flatten_channels_first else h
        return h.reshape(h.shape[0], -1) @ params["head"]["w"] + params["head"]["b"]

    return plugin.Network(init, apply)


def nnx_conv2d_native(ctx: plugin.Context, *, channels: int = 4) -> plugin.Network:
    def init(key):
        net = _make_nnx(ctx, channels)(nnx.Rngs(key))
        return {name: {"w": getattr(net, name).kernel[...], "b": getattr(net, name).bias[...]} for name in ("conv", "head")}

    return _native(init, flatten_channels_first=False)


def eqx_conv2d_native(ctx: plugin.Context, *, channels: int = 4) -> plugin.Network:
    def init(key):
        net, _ = _make_eqx(ctx, channels)(key)
        return {"conv": {"w": net.conv.weight.transpose(2, 3, 1, 0), "b": net.conv.bias.reshape(-1)},  # OIHW -> HWIO
                "head": {"w": net.head.weight.T, "b": net.head.bias}}

    return _native(init, flatten_channels_first=True)


class EqxFirstLayer(eqx.Module):
    """A net whose first layer takes one example only as Equinox's layers do, channels first: a Conv2d
    of an ``(H, W, C)`` image as ``(C, H, W)``, a Conv1d of an ``(L, C)`` signal as ``(C, L)`` (handed
    channels last, either would convolve ``H`` or ``L`` channels and fail), a Linear of an ``(F,)``
    vector; then BatchNorm, ReLU and a head."""

    first: eqx.Module
    bn: eqx.nn.BatchNorm
    head: eqx.nn.Linear

    def __init__(self, input_shape: tuple, classes: int, key, width: int = 4):
        k1, k2 = jax.random.split(key)
        *spatial, channels = input_shape
        self.first = (eqx.nn.Conv(len(spatial), channels, width, 3, padding=1, key=k1) if spatial
                      else eqx.nn.Linear(channels, width, key=k1))
        self.bn = eqx.nn.BatchNorm(width, axis_name="batch", mode="batch")
        self.head = eqx.nn.Linear(width * math.prod(spatial), classes, key=k2)

    def __call__(self, x, state):
        h, state = self.bn(self.first(x), state)
        return self.head(jax.nn.relu(h).reshape(-1)), state


def _make_first_layer(ctx):
    return lambda key: eqx.nn.make_with_state(EqxFirstLayer)(ctx.input_shape, ctx.num_classes, key)


def eqx_first_layer(ctx: plugin.Context) -> plugin.Network:
    return adapters.equinox(_make_first_layer(ctx))


def eqx_first_layer_own(ctx: plugin.Context, key, x):
    """Equinox's own training-mode logits of the batch ``x`` (channels last), each example handed
    channels first by hand."""
    return _own_per_example(_make_first_layer(ctx)(key), x)
