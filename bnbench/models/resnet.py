"""The CIFAR ResNet of He et al. (2016): a 3x3 stem, three stages of residual units, global average
pooling and a linear head; every residual arrangement of "Identity Mappings in Deep Residual Networks".

``depth = 6n + 2``: ``n`` units per stage, two 3x3 convolutions per unit, stage channels ``widths``
(default 16, 32, 64); the first unit of stages 2 and 3 halves the resolution (stride 2, padding 1 as in
the paper's code). Inputs are 2-D images or 1-D signals (the same network with 1-D kernels).

``residual_unit`` (He et al. 2016, Fig. 4; ``norm`` is every norm layer below, ``act`` the activation,
``s(x)`` the shortcut)::

    "original"         out = act(s(x) + norm(conv(act(norm(conv(x))))))                 (a)
    "bn_after_add"     out = act(norm(s(x) + conv(act(norm(conv(x))))))                 (b)
    "relu_before_add"  out = s(x) + act(norm(conv(act(norm(conv(x))))))                 (c)
    "relu_preact"      out = s(x) + norm(conv(act(norm(conv(act(x))))))                 (d)
    "full_preact"      out = s(x) + conv(act(norm(conv(act(norm(x))))))                 (e)
    "none"             out = act(norm(conv(act(norm(conv(x))))))   (a plain net: no shortcut)

The stem is ``act(norm(conv(x)))``, except for the pre-activation units (d, e), whose stem is a bare
convolution and whose last unit is followed by ``act(norm(.))`` (the paper's extra activation).
``shortcut`` where a unit changes shape: ``"pad"`` (option A: every second position, zero channels
appended; no parameters) or ``"projection"`` (option B: a strided 1x1 convolution and a norm layer).
The shortcut takes the unit's input ``x``; elsewhere it is the identity.

``init``: ``"default"`` (He normal convolutions, LeCun normal head, zero biases); ``"skipinit"`` (De &
Smith 2020): each residual branch ends in a learned scalar ``alpha``, initialized to 0; ``"fixup"``
(Zhang et al. 2019): scalar biases before each convolution and activation of the branch, a scalar
multiplier (1) and bias at its end, and a scalar bias before the head; the branch's first convolution
scaled by ``L^(-1/(2m-2)) = L^(-1/2)`` (``L = 3n`` branches of ``m = 2`` layers), its last convolution
and the head initialized to zero. Fixup's scalars are in ``params["branch"]`` and
``params["head_bias"]``, where the training program gives them a tenth of the learning rate, as the
paper does. With
either, a unit at initialization passes its input through unchanged (up to the final activation of the
arrangements that have one). Both are meant for ``norm = "none"``, and keep any norm layers given.

With dropout, ``"after_activation"`` drops the branch's inner activation's output, ``"before_norm"`` the
input of the branch's second norm layer (where it has one; in the "bn_after_add" unit, the second
convolution's output).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from bnbench import bn
from bnbench.models.cnn import channels_last
from bnbench.models.layers import (
    ACTIVATION_FUNCTIONS, COMPUTE_DTYPES, Model, Normalization, Scalars, add_noise, conv, dropout, from_forward, he_std,
    normal_weights, normalize,
)
from bnbench.options import DEFAULT_WIDTHS, DROPOUT_PLACEMENTS, INITS, RESIDUAL_UNITS, SHORTCUTS

PREACTIVATION_UNITS = ("relu_preact", "full_preact")


class _Unit(NamedTuple):
    """One residual unit's static plan: its convolutions' and norm layers' indices."""

    channels_in: int
    channels_out: int
    stride: int
    convs: tuple[int, int]  # indices into params["layers"]
    norms: tuple[int, int]  # indices into params["norm"]
    projection: int | None  # params["layers"] index of the shortcut's 1x1 convolution
    projection_norm: int | None


def units_per_stage(depth: int) -> int:
    """``n`` of ``depth = 6n + 2``; raises ``ValueError`` for other depths."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
    return (depth - 2) // 6


def resnet(
    *,
    input_shape: tuple[int, ...],
    widths: Sequence[int] = DEFAULT_WIDTHS["resnet"],
    depth: int,
    num_classes: int,
    activation: str = "relu",
    norm: Normalization = Normalization(),
    residual_unit: str = "original",
    shortcut: str = "pad",
    init: str = "default",
    dropout_placement: str = "after_activation",
    dtype: str = "float32",
) -> Model:
    """ResNet-``depth`` on ``input_shape`` (see the module docstring)."""
    for value, allowed, what in (
        (residual_unit, RESIDUAL_UNITS, "residual unit"), (shortcut, SHORTCUTS, "shortcut"),
        (init, INITS, "init"), (dropout_placement, DROPOUT_PLACEMENTS, "dropout placement"),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}")
    if len(widths) != 3:
        raise ValueError(f"resnet takes one width per stage (3), got {list(widths)}")
    if init != "default" and residual_unit == "none":
        raise ValueError(f"init {init!r} scales residual branches; residual_unit 'none' has none")
    n = units_per_stage(depth)
    input_shape = channels_last(input_shape)
    spatial = len(input_shape) - 1
    act = ACTIVATION_FUNCTIONS[activation]
    compute_dtype = COMPUTE_DTYPES[dtype]
    use_norm = norm.kind != "none"
    has_state = norm.kind == "batch"
    preact = residual_unit in PREACTIVATION_UNITS
    gain = 2.0 if activation == "relu" else 1.0

    # The static plan: layer and norm indices in forward order.
    conv_shapes = [(*(3,) * spatial, input_shape[-1], widths[0])]
    norm_channels = [] if preact else [widths[0]]
    units: list[_Unit] = []
    c = widths[0]
    for stage, width in enumerate(widths):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            first, second = len(conv_shapes), len(conv_shapes) + 1
            conv_shapes += [(*(3,) * spatial, c, width), (*(3,) * spatial, width, width)]
            # full_preact normalizes the unit's input (c channels); bn_after_add the sum.
            norm_channels += [c if residual_unit == "full_preact" else width, width]
            norm_ids = (len(norm_channels) - 2, len(norm_channels) - 1)
            projection = projection_norm = None
            if (stride != 1 or c != width) and shortcut == "projection" and residual_unit != "none":
                projection = len(conv_shapes)
                conv_shapes.append((*(1,) * spatial, c, width))
                norm_channels.append(width)
                projection_norm = len(norm_channels) - 1
            units.append(_Unit(c, width, stride, (first, second), norm_ids, projection, projection_norm))
            c = width
    if preact:
        norm_channels.append(c)
    num_branches = 3 * n

    def init_fn(key):
        stds = [he_std(s, gain) for s in conv_shapes] + [he_std((c, num_classes), 1.0)]
        if init == "fixup":
            for u in units:
                stds[u.convs[0]] *= num_branches ** -0.5
                stds[u.convs[1]] = 0.0
            stds[-1] = 0.0
        weights = normal_weights(key, [*conv_shapes, (c, num_classes)], stds)
        norm_pairs = [bn.init(ch) for ch in norm_channels] if use_norm else []
        params = {
            "layers": [{"w": w} for w in weights[:-1]],
            "norm": [p for p, _ in norm_pairs],
            "head": {"w": weights[-1], "b": jnp.zeros((num_classes,), jnp.float32)},
        }
        zero = jnp.zeros((), jnp.float32)
        if init == "skipinit":
            params["branch"] = [{"alpha": zero} for _ in units]
        elif init == "fixup":
            params["branch"] = [
                {"bias_in1": zero, "bias_out1": zero, "bias_in2": zero, "scale": jnp.ones((), jnp.float32),
                 "bias_out2": zero}
                for _ in units
            ]
            params["head_bias"] = zero
        return params, [s for _, s in norm_pairs] if has_state else []

    def forward(params, state, x, train, eval_stats, scalars: Scalars):
        new_state = [None] * len(norm_channels)
        preacts = []

        def norm_at(h, j):
            if use_norm:
                h, new_state[j] = normalize(
                    h, params["norm"][j], state[j] if has_state else None, norm, train=train,
                    eval_stats=eval_stats, scalars=scalars,
                )
            if train and scalars.noise_key is not None:
                h = add_noise(h, jax.random.fold_in(scalars.noise_key, j), scalars.noise_strength)
            return h

        def activate(h):
            preacts.append(h)
            return act(h)

        def dropped(h, u_index, where):
            if not train or scalars.dropout_key is None or where != dropout_placement:
                return h
            return dropout(h, jax.random.fold_in(scalars.dropout_key, u_index), scalars.dropout_rate)

        def conv_at(h, j, stride=1):
            kernel = params["layers"][j]["w"]
            padding = [((kernel.shape[0] - 1) // 2,) * 2] * spatial
            return conv(h, kernel, stride, padding)

        def skip(h, u: _Unit):
            if u.projection is not None:
                return norm_at(conv_at(h, u.projection, u.stride), u.projection_norm)
            if u.stride == 1 and u.channels_in == u.channels_out:
                return h
            h = h[(slice(None), *(slice(None, None, u.stride),) * spatial)]
            return jnp.pad(h, [(0, 0)] * (spatial + 1) + [(0, u.channels_out - u.channels_in)])

        def unit(h, u: _Unit, index):
            branch = params.get("branch", [{}] * len(units))[index]
            fix = init == "fixup"
            first, second = u.convs
            n1, n2 = u.norms

            def scalar(name, like):  # float32 parameters, cast so that bfloat16 stays bfloat16
                return branch[name].astype(like.dtype)

            def conv1(z):
                z = conv_at(z + scalar("bias_in1", z) if fix else z, first, u.stride)
                return z + scalar("bias_out1", z) if fix else z

            def conv2(z):
                return conv_at(z + scalar("bias_in2", z) if fix else z, second)

            def finish(z):
                if fix:
                    return z * scalar("scale", z) + scalar("bias_out2", z)
                return z * scalar("alpha", z) if init == "skipinit" else z

            if residual_unit == "relu_preact":
                z = norm_at(conv1(activate(h)), n1)
                z = dropped(activate(z), index, "after_activation")
                z = norm_at(dropped(conv2(z), index, "before_norm"), n2)
                return skip(h, u) + finish(z)
            if residual_unit == "full_preact":
                z = conv1(activate(norm_at(h, n1)))
                z = dropped(z, index, "before_norm")
                z = dropped(activate(norm_at(z, n2)), index, "after_activation")
                return skip(h, u) + finish(conv2(z))
            z = dropped(activate(norm_at(conv1(h), n1)), index, "after_activation")
            z = dropped(conv2(z), index, "before_norm")
            if residual_unit == "bn_after_add":
                return activate(norm_at(skip(h, u) + finish(z), n2))
            z = norm_at(z, n2)
            if residual_unit == "relu_before_add":
                return skip(h, u) + finish(activate(z))
            if residual_unit == "none":
                return activate(z)
            return activate(skip(h, u) + finish(z))

        h = x.reshape(x.shape[0], *input_shape).astype(compute_dtype)
        h = conv_at(h, 0)
        if not preact:
            h = activate(norm_at(h, 0))
        for index, u in enumerate(units):
            h = unit(h, u, index)
        if preact:
            h = activate(norm_at(h, len(norm_channels) - 1))
        features = h.mean(axis=tuple(range(1, spatial + 1)))
        if init == "fixup":
            features = features + params["head_bias"].astype(features.dtype)
        head = params["head"]
        logits = features @ head["w"].astype(compute_dtype) + head["b"].astype(compute_dtype)
        return logits.astype(jnp.float32), new_state if has_state else [], preacts

    return from_forward(init_fn, forward, len(conv_shapes), len(norm_channels) if has_state else 0)

