"""Two networks of your own, for bnbench to sweep BN in (see ../docs/plugins.md).

`wide_net` is a fully connected network whose width and depth are model arguments; `signal_conv` is a
small 1-D convolutional network. bnbench injects the norm layer at every `norm` call: `norm.act(h, fn)`
places it before or after the nonlinearity as the run's `placement` says.
"""

import math

import jax
import jax.numpy as jnp

from bnbench import plugin


def wide_net(ctx: plugin.Context, *, width: int = 64, depth: int = 2) -> plugin.Network:
    """`depth` hidden layers of `width` units, a norm site and a GELU after each, a linear head."""
    features = math.prod(ctx.input_shape)
    sizes = [features] + [width] * depth + [ctx.num_classes]

    def init(key):
        keys = jax.random.split(key, len(sizes) - 1)
        return [{"w": jax.random.normal(k, (a, b)) * math.sqrt(2.0 / a), "b": jnp.zeros(b)}
                for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def apply(params, x, norm, *, train, key):
        h = x.reshape(x.shape[0], -1)
        for layer in params[:-1]:
            h = norm.act(h @ layer["w"].astype(h.dtype) + layer["b"].astype(h.dtype), jax.nn.gelu)
        return h @ params[-1]["w"].astype(h.dtype) + params[-1]["b"].astype(h.dtype)

    return plugin.Network(init, apply, weights=lambda params: [layer["w"] for layer in params])


def signal_conv(ctx: plugin.Context, *, channels: int = 16) -> plugin.Network:
    """Two stride-2 convolutions over a 1-D signal (kernel 5), a norm site and a ReLU after each, then a head."""
    length, inputs = ctx.input_shape if len(ctx.input_shape) == 2 else (*ctx.input_shape, 1)
    out_length = math.ceil(math.ceil(length / 2) / 2)

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return {"c1": jax.random.normal(k1, (5, inputs, channels)) * math.sqrt(2.0 / (5 * inputs)),
                "c2": jax.random.normal(k2, (5, channels, channels)) * math.sqrt(2.0 / (5 * channels)),
                "head": jax.random.normal(k3, (out_length * channels, ctx.num_classes)) / math.sqrt(out_length * channels)}

    def conv(h, w):
        return jax.lax.conv_general_dilated(h, w.astype(h.dtype), (2,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))

    def apply(params, x, norm, *, train, key):
        h = x.reshape(x.shape[0], length, inputs)
        h = norm.act(conv(h, params["c1"]), jax.nn.relu)
        h = norm.act(conv(h, params["c2"]), jax.nn.relu)
        return h.reshape(h.shape[0], -1) @ params["head"].astype(h.dtype)

    return plugin.Network(init, apply, weights=lambda p: [p["c1"], p["c2"], p["head"]])
