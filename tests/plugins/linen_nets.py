"""Flax Linen networks with their own norm and dropout layers, run through bnbench.adapters.linen, a native
plugin (bnbench.plugin) of the conv net from the same initial weights, and the networks as Linen runs them
itself, to compare the adapted models with."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnbench import adapters, plugin


class ConvNet(nn.Module):
    """A 1-D conv net, channels last as Flax's are: conv, BatchNorm, ReLU, dense, LayerNorm, ReLU, a head."""

    classes: int
    channels: int = 6
    hidden: int = 8

    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.Conv(self.channels, (5,), strides=(2,))(x.reshape(x.shape[0], -1, 1))
        h = nn.relu(nn.BatchNorm(use_running_average=not train)(h))
        h = nn.relu(nn.LayerNorm()(nn.Dense(self.hidden)(h.reshape(h.shape[0], -1))))
        return nn.Dense(self.classes)(h)


def conv_net(ctx: plugin.Context) -> plugin.Network:
    return adapters.linen(ConvNet(ctx.num_classes), ctx.input_shape)


def conv_native(ctx: plugin.Context) -> plugin.Network:
    """The conv net as a plugin, its weights those of Linen's own initialization of it."""

    def init(key):
        params = ConvNet(ctx.num_classes).init(key, jnp.zeros((2, *ctx.input_shape)), train=False)["params"]
        return {name: params[name] for name in ("Conv_0", "Dense_0", "Dense_1")}

    def apply(params, x, norm, *, train, key):
        conv, hidden, head = params["Conv_0"], params["Dense_0"], params["Dense_1"]
        h = jax.lax.conv_general_dilated(x.reshape(x.shape[0], -1, 1), conv["kernel"], (2,), "SAME",
                                         dimension_numbers=("NWC", "WIO", "NWC")) + conv["bias"]
        h = jax.nn.relu(norm(h))
        h = jax.nn.relu(norm(h.reshape(h.shape[0], -1) @ hidden["kernel"] + hidden["bias"]))
        return h @ head["kernel"] + head["bias"]

    return plugin.Network(init, apply)


# layout: one norm layer of Linen's on the conv's output, (N, L, C), or (N, C, L) where it says "first"
NORM_LAYERS = {
    "last": lambda train: nn.BatchNorm(use_running_average=not train),
    "first": lambda train: nn.BatchNorm(use_running_average=not train, axis=1),
    "both": lambda train: nn.BatchNorm(use_running_average=not train, axis=(1, 2)),  # a feature per (L, C)
    "layer_first": lambda train: nn.LayerNorm(1e-5, reduction_axes=(1, 2), feature_axes=1),
    "position": lambda train: nn.LayerNorm(1e-5),  # per position, over C alone
    "group": lambda train: nn.GroupNorm(num_groups=2, epsilon=1e-5),
}


class OneNorm(nn.Module):
    """A conv, one norm layer (:data:`NORM_LAYERS`, epsilon 1e-5 as the runs'), ReLU, a head."""

    classes: int
    layout: str = "last"
    channels: int = 6

    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.Conv(self.channels, (5,), strides=(2,))(x.reshape(x.shape[0], -1, 1))
        if self.layout.endswith("first"):
            h = h.transpose(0, 2, 1)
        h = nn.relu(NORM_LAYERS[self.layout](train)(h))
        return nn.Dense(self.classes)(h.reshape(h.shape[0], -1))


def one_norm(ctx: plugin.Context, *, layout: str = "last") -> plugin.Network:
    return adapters.linen(OneNorm(ctx.num_classes, layout), ctx.input_shape)


def one_norm_own_training(ctx: plugin.Context, key, x, *, layout: str = "last"):
    """The logits of :class:`OneNorm` with Linen's own norm layer in training (batch statistics)."""
    module = OneNorm(ctx.num_classes, layout)
    variables = module.init(key, x, train=False)
    return module.apply(variables, x, train=True, mutable=["batch_stats"])[0]


def _dropping(x, classes: int, deterministic: bool):
    h = nn.Dropout(0.5, deterministic=deterministic)(nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1))))
    return nn.Dense(classes)(h)


class Dropping(nn.Module):
    """Dense, ReLU, dropout, a head; trains with ``train=True``."""

    classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        return _dropping(x, self.classes, not train)


class DroppingTraining(nn.Module):
    """The same with its flag named ``training``."""

    classes: int

    @nn.compact
    def __call__(self, x, *, training: bool):
        return _dropping(x, self.classes, not training)


class DroppingDeterministic(nn.Module):
    """The same with the inverted flag of Flax's own examples, ``deterministic``."""

    classes: int

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        return _dropping(x, self.classes, deterministic)


class DroppingAlways(nn.Module):
    """The same with no flag: its dropout always on, as far as Linen knows."""

    classes: int

    @nn.compact
    def __call__(self, x):
        return _dropping(x, self.classes, False)


# flag: (the module, the adapter's keywords, the module's own keywords in training and in evaluation)
FLAGS = {
    "train": (Dropping, {}, {"train": True}, {"train": False}),
    "training": (DroppingTraining, {"train_arg": "training"}, {"training": True}, {"training": False}),
    "deterministic": (DroppingDeterministic, {"eval_arg": "deterministic"}, {"deterministic": False},
                      {"deterministic": True}),
    "none": (DroppingAlways, {}, {}, None),
}


def dropping(ctx: plugin.Context, *, flag: str = "train") -> plugin.Network:
    module, keywords, _, _ = FLAGS[flag]
    return adapters.linen(module(ctx.num_classes), ctx.input_shape, **keywords)


def dropping_own(ctx: plugin.Context, key, x, *, flag: str = "train", dropout_key=None):
    """Linen's own logits of the dropout net: in training with ``dropout_key``, else in evaluation."""
    module, _, training, evaluation = FLAGS[flag]
    params = module(ctx.num_classes).init({"params": key, "dropout": key}, x, **training)["params"]
    if dropout_key is not None:
        return module(ctx.num_classes).apply({"params": params}, x, rngs={"dropout": dropout_key}, **training)
    if evaluation is None:  # a net with no flag cannot evaluate: the same parameters in Dropping, dropout off
        module, evaluation = Dropping, {"train": False}
    return module(ctx.num_classes).apply({"params": params}, x, **evaluation)


class DigitsNet(nn.Module):
    """The user's report: an MLP as Linen code writes one, BatchNorm with the running average in evaluation."""

    classes: int
    width: int = 32

    @nn.compact
    def __call__(self, x, train: bool = True):
        h = x.reshape(x.shape[0], -1)
        for _ in range(2):
            h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Dense(self.width)(h)))
        return nn.Dense(self.classes)(h)


def digits_net(ctx: plugin.Context, *, width: int = 32) -> plugin.Network:
    return adapters.linen(DigitsNet(ctx.num_classes, width), ctx.input_shape)


def misnamed(ctx: plugin.Context) -> plugin.Network:
    return adapters.linen(Dropping(ctx.num_classes), ctx.input_shape, train_arg="is_training")


class Unmappable(nn.Module):
    """A norm layer no site can be: over the batch axis, masked, or with features it does not reduce."""

    classes: int
    case: str

    @nn.compact
    def __call__(self, x, train: bool):
        h = x.reshape(x.shape[0], 4, -1)
        if self.case == "over_the_batch":
            h = nn.BatchNorm(use_running_average=not train, axis=0)(h)
        elif self.case == "masked":
            h = nn.LayerNorm()(h, mask=h > 0)
        else:
            h = nn.LayerNorm(reduction_axes=1, feature_axes=2)(h)
        return nn.Dense(self.classes)(h.reshape(h.shape[0], -1))


class Counting(nn.Module):
    """A module with state of its own outside its parameters."""

    classes: int

    @nn.compact
    def __call__(self, x):
        calls = self.variable("counters", "calls", lambda: 0)
        calls.value += 1
        return nn.Dense(self.classes)(x)


def unmappable(ctx: plugin.Context, *, case: str) -> plugin.Network:
    return adapters.linen(Unmappable(ctx.num_classes, case), ctx.input_shape)


def counting(ctx: plugin.Context) -> plugin.Network:
    return adapters.linen(Counting(ctx.num_classes), ctx.input_shape)


def a_factory(ctx: plugin.Context) -> plugin.Network:
    return adapters.linen(lambda: ConvNet(ctx.num_classes), ctx.input_shape)
