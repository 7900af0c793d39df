"""bnbench's built-in MLP and CNN written again as plugins (bnbench.plugin), using nothing of bnbench's
but the contract: a spec that names these must give the runs of model = "mlp" and model = "cnn"."""

import math

import jax
import jax.numpy as jnp

from bnbench import plugin


def _weights(key, shapes, gains):
    # bnbench's initialization: one normal draw for every weight, variance gain / fan_in, zero biases.
    noise = jax.random.normal(key, (sum(math.prod(s) for s in shapes),), jnp.float32)
    layers, offset = [], 0
    for shape, gain in zip(shapes, gains):
        w = noise[offset : offset + math.prod(shape)].reshape(shape) * math.sqrt(gain / math.prod(shape[:-1]))
        layers.append({"w": w, "b": jnp.zeros((shape[-1],), jnp.float32)})
        offset += math.prod(shape)
    return layers


def _chain(shapes, hidden, apply_layer, prepare, flatten):
    def init(key):
        layers = _weights(key, shapes, [2.0] * hidden + [1.0])
        return {"layers": layers[:-1], "head": layers[-1]}

    def apply(params, x, norm, *, train, key):
        h = prepare(x)
        for layer in params["layers"]:
            h = norm.act(apply_layer(layer, h), jax.nn.relu)
        head = params["head"]
        return flatten(h) @ head["w"].astype(h.dtype) + head["b"].astype(h.dtype)

    return plugin.Network(init, apply, weights=lambda p: [layer["w"] for layer in p["layers"]] + [p["head"]["w"]])


def mlp(ctx: plugin.Context, *, widths=(100, 100, 100)) -> plugin.Network:
    sizes = [math.prod(ctx.input_shape), *widths, ctx.num_classes]
    return _chain(list(zip(sizes[:-1], sizes[1:])), len(widths),
                  lambda p, h: h @ p["w"].astype(h.dtype) + p["b"].astype(h.dtype),
                  lambda x: x.reshape(x.shape[0], -1).astype(ctx.dtype), lambda h: h)


def cnn(ctx: plugin.Context, *, widths=(16, 32)) -> plugin.Network:
    """1-D signals only: kernel 5, stride 2, 'SAME', one convolution per width."""
    length, channels = ctx.input_shape if len(ctx.input_shape) == 2 else (*ctx.input_shape, 1)
    out_length, shapes, c = length, [], channels
    for width in widths:
        shapes.append((5, c, width))
        c, out_length = width, math.ceil(out_length / 2)
    shapes.append((c * out_length, ctx.num_classes))

    def conv(p, h):
        y = jax.lax.conv_general_dilated(h, p["w"].astype(h.dtype), (2,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
        return y + p["b"].astype(h.dtype)

    return _chain(shapes, len(widths), conv, lambda x: x.reshape(x.shape[0], length, channels).astype(ctx.dtype),
                  lambda h: h.reshape(h.shape[0], -1))
