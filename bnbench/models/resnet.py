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

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from bnbench.norm import bn
from bnbench.models.cnn import channels_last
from bnbench.models.layers import (
    ACTIVATION_FUNCTIONS, COMPUTE_DTYPES, INIT_GAINS, Model, Normalization, Scalars, add_noise, conv, dropout, from_forward,
    he_std, normal_weights, normalize,
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


class Plan(NamedTuple):
    """The static layout of a ResNet: every convolution's kernel shape and every norm layer's channels,
    in forward order (the stem first; the pre-activation units' final norm layer last), and the units."""

    conv_shapes: list[tuple[int, ...]]
    norm_channels: list[int]
    units: list[_Unit]
    preact: bool

    @property
    def channels(self) -> int:
        """The channels of the last unit's output: the head's input features."""
        return self.units[-1].channels_out


def units_per_stage(depth: int) -> int:
    """``n`` of ``depth = 6n + 2``; raises ``ValueError`` for other depths."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}")
    return (depth - 2) // 6


def plan_units(input_shape: tuple[int, ...], widths: Sequence[int], depth: int, residual_unit: str, shortcut: str) -> Plan:
    """The :class:`Plan` of ResNet-``depth`` with stage channels ``widths`` on channels-last ``input_shape``."""
    n, spatial = units_per_stage(depth), len(input_shape) - 1
    preact = residual_unit in PREACTIVATION_UNITS
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
    return Plan(conv_shapes, norm_channels, units, preact)


def init_params(plan: Plan, key, *, num_classes: int, init: str, norm: Normalization, gain: float):
    """``(params, state)`` of a ResNet of ``plan`` (see the module docstring for ``init``)."""
    num_branches = len(plan.units)
    c = plan.channels
    stds = [he_std(s, gain) for s in plan.conv_shapes] + [he_std((c, num_classes), 1.0)]
    if init == "fixup":
        for u in plan.units:
            stds[u.convs[0]] *= num_branches ** -0.5
            stds[u.convs[1]] = 0.0
        stds[-1] = 0.0
    weights = normal_weights(key, [*plan.conv_shapes, (c, num_classes)], stds)
    norm_pairs = [bn.init(ch) for ch in plan.norm_channels] if norm.kind != "none" else []
    params = {
        "layers": [{"w": w} for w in weights[:-1]],
        "norm": [p for p, _ in norm_pairs],
        "head": {"w": weights[-1], "b": jnp.zeros((num_classes,), jnp.float32)},
    }
    zero = jnp.zeros((), jnp.float32)
    if init == "skipinit":
        params["branch"] = [{"alpha": zero} for _ in plan.units]
    elif init == "fixup":
        params["branch"] = [
            {"bias_in1": zero, "bias_out1": zero, "bias_in2": zero, "scale": jnp.ones((), jnp.float32), "bias_out2": zero}
            for _ in plan.units
        ]
        params["head_bias"] = zero
    return params, [s for _, s in norm_pairs] if norm.kind == "batch" else []


class _Trace(NamedTuple):
    """What layers report besides their output: the norm layers' new states (by index) and the inputs
    to the nonlinearities, in forward order."""

    states: tuple[tuple[int, Any], ...] = ()
    preacts: tuple[jax.Array, ...] = ()

    def then(self, *later: _Trace) -> _Trace:
        return _Trace(sum((t.states for t in later), self.states), sum((t.preacts for t in later), self.preacts))


class _Pass(NamedTuple):
    """The fixed inputs of one forward pass, and the layers every residual unit is made of. Each layer
    returns its output and a :class:`_Trace`."""

    params: dict
    state: list
    train: bool
    eval_stats: str
    scalars: Scalars
    norm: Normalization
    activation: str
    init: str
    dropout_placement: str
    spatial: int

    def normalize(self, h, j: int) -> tuple[jax.Array, _Trace]:
        trace = _Trace()
        if self.norm.kind != "none":
            state = self.state[j] if self.norm.kind == "batch" else None
            h, new = normalize(h, self.params["norm"][j], state, self.norm, train=self.train,
                               eval_stats=self.eval_stats, scalars=self.scalars)
            trace = _Trace(((j, new),))
        if self.train and self.scalars.noise_key is not None:
            h = add_noise(h, jax.random.fold_in(self.scalars.noise_key, j), self.scalars.noise_strength)
        return h, trace

    def activate(self, h) -> tuple[jax.Array, _Trace]:
        return ACTIVATION_FUNCTIONS[self.activation](h), _Trace(preacts=(h,))

    def dropped(self, h, unit_index: int, where: str):
        if not self.train or self.scalars.dropout_key is None or where != self.dropout_placement:
            return h
        return dropout(h, jax.random.fold_in(self.scalars.dropout_key, unit_index), self.scalars.dropout_rate)

    def conv(self, h, j: int, stride: int = 1):
        kernel = self.params["layers"][j]["w"]
        return conv(h, kernel, stride, [((kernel.shape[0] - 1) // 2,) * 2] * self.spatial)

    def skip(self, h, u: _Unit) -> tuple[jax.Array, _Trace]:
        if u.projection is not None:
            return self.normalize(self.conv(h, u.projection, u.stride), u.projection_norm)
        if u.stride == 1 and u.channels_in == u.channels_out:
            return h, _Trace()
        h = h[(slice(None), *(slice(None, None, u.stride),) * self.spatial)]
        return jnp.pad(h, [(0, 0)] * (self.spatial + 1) + [(0, u.channels_out - u.channels_in)]), _Trace()

    def _scalar(self, index: int, name: str, like):  # float32 parameters, cast so that bfloat16 stays bfloat16
        return self.params["branch"][index][name].astype(like.dtype)

    def conv1(self, z, u: _Unit, index: int):
        fix = self.init == "fixup"
        z = self.conv(z + self._scalar(index, "bias_in1", z) if fix else z, u.convs[0], u.stride)
        return z + self._scalar(index, "bias_out1", z) if fix else z

    def conv2(self, z, u: _Unit, index: int):
        return self.conv(z + self._scalar(index, "bias_in2", z) if self.init == "fixup" else z, u.convs[1])

    def finish(self, z, index: int):
        """The branch's end: Fixup's scalar multiplier and bias, SkipInit's alpha, or nothing."""
        if self.init == "fixup":
            return z * self._scalar(index, "scale", z) + self._scalar(index, "bias_out2", z)
        return z * self._scalar(index, "alpha", z) if self.init == "skipinit" else z


def _relu_preact(p: _Pass, h, u: _Unit, i: int):
    z, t1 = p.activate(h)
    z, t2 = p.normalize(p.conv1(z, u, i), u.norms[0])
    z, t3 = p.activate(z)
    z = p.dropped(z, i, "after_activation")
    z, t4 = p.normalize(p.dropped(p.conv2(z, u, i), i, "before_norm"), u.norms[1])
    s, t5 = p.skip(h, u)
    return s + p.finish(z, i), t1.then(t2, t3, t4, t5)


def _full_preact(p: _Pass, h, u: _Unit, i: int):
    z, t1 = p.normalize(h, u.norms[0])
    z, t2 = p.activate(z)
    z = p.dropped(p.conv1(z, u, i), i, "before_norm")
    z, t3 = p.normalize(z, u.norms[1])
    z, t4 = p.activate(z)
    z = p.dropped(z, i, "after_activation")
    s, t5 = p.skip(h, u)
    return s + p.finish(p.conv2(z, u, i), i), t1.then(t2, t3, t4, t5)


def _branch(p: _Pass, h, u: _Unit, i: int):
    """conv -> norm -> act -> conv, the branch of the post-activation units (its second norm layer apart)."""
    z, t1 = p.normalize(p.conv1(h, u, i), u.norms[0])
    z, t2 = p.activate(z)
    z = p.dropped(z, i, "after_activation")
    return p.dropped(p.conv2(z, u, i), i, "before_norm"), t1.then(t2)


def _bn_after_add(p: _Pass, h, u: _Unit, i: int):
    z, t1 = _branch(p, h, u, i)
    s, t2 = p.skip(h, u)
    z, t3 = p.normalize(s + p.finish(z, i), u.norms[1])
    z, t4 = p.activate(z)
    return z, t1.then(t2, t3, t4)


def _relu_before_add(p: _Pass, h, u: _Unit, i: int):
    z, t1 = _branch(p, h, u, i)
    z, t2 = p.normalize(z, u.norms[1])
    s, t3 = p.skip(h, u)
    z, t4 = p.activate(z)
    return s + p.finish(z, i), t1.then(t2, t3, t4)


def _plain(p: _Pass, h, u: _Unit, i: int):
    z, t1 = _branch(p, h, u, i)
    z, t2 = p.normalize(z, u.norms[1])
    z, t3 = p.activate(z)
    return z, t1.then(t2, t3)


def _original(p: _Pass, h, u: _Unit, i: int):
    z, t1 = _branch(p, h, u, i)
    z, t2 = p.normalize(z, u.norms[1])
    s, t3 = p.skip(h, u)
    z, t4 = p.activate(s + p.finish(z, i))
    return z, t1.then(t2, t3, t4)


UNITS = {"original": _original, "bn_after_add": _bn_after_add, "relu_before_add": _relu_before_add,
         "relu_preact": _relu_preact, "full_preact": _full_preact, "none": _plain}


def _forward(plan: Plan, options: dict, params, state, x, train, eval_stats, scalars: Scalars):
    """The forward pass of :func:`bnbench.models.layers.from_forward`: ``(logits, new state, preactivations)``."""
    unit = UNITS[options["residual_unit"]]
    p = _Pass(params, state, train, eval_stats, scalars, options["norm"], options["activation"], options["init"],
              options["dropout_placement"], len(options["input_shape"]) - 1)
    compute_dtype = COMPUTE_DTYPES[options["dtype"]]
    h = x.reshape(x.shape[0], *options["input_shape"]).astype(compute_dtype)
    h, trace = p.conv(h, 0), _Trace()
    if not plan.preact:
        h, t = p.normalize(h, 0)
        h, a = p.activate(h)
        trace = trace.then(t, a)
    for index, u in enumerate(plan.units):
        h, t = unit(p, h, u, index)
        trace = trace.then(t)
    if plan.preact:
        h, t = p.normalize(h, len(plan.norm_channels) - 1)
        h, a = p.activate(h)
        trace = trace.then(t, a)
    features = h.mean(axis=tuple(range(1, p.spatial + 1)))
    if options["init"] == "fixup":
        features = features + params["head_bias"].astype(features.dtype)
    head = params["head"]
    logits = features @ head["w"].astype(compute_dtype) + head["b"].astype(compute_dtype)
    new_state = dict(trace.states)
    states = [new_state[j] for j in range(len(plan.norm_channels))] if options["norm"].kind == "batch" else []
    return logits.astype(jnp.float32), states, list(trace.preacts)


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
    input_shape = channels_last(input_shape)
    plan = plan_units(input_shape, widths, depth, residual_unit, shortcut)
    gain = INIT_GAINS[activation]
    options = dict(input_shape=input_shape, norm=norm, activation=activation, init=init, residual_unit=residual_unit,
                   dropout_placement=dropout_placement, dtype=dtype)

    def init_fn(key):
        return init_params(plan, key, num_classes=num_classes, init=init, norm=norm, gain=gain)

    def forward(params, state, x, train, eval_stats, scalars):
        return _forward(plan, options, params, state, x, train, eval_stats, scalars)

    bn_layers = len(plan.norm_channels) if norm.kind == "batch" else 0
    return from_forward(init_fn, forward, len(plan.conv_shapes), bn_layers)
