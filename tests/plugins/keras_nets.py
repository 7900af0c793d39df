"""Keras 3 networks run through bnbench.adapters.keras, a native plugin (bnbench.plugin) of the conv net
from the same initial weights, and the Keras models' own forward passes to compare the adapted ones with.

Every network takes the synthetic data set's 16 features as a 4x4 image of one channel."""

from bnbench import adapters, plugin  # before keras: bnbench selects Keras's JAX backend

import jax
import keras
import numpy as np
from keras import layers

IMAGE = (4, 4, 1)


def _image(ctx):
    return [keras.Input(ctx.input_shape), layers.Reshape(IMAGE)]


def _conv(ctx, channels, placement="post", norm=layers.BatchNormalization):
    """The conv net with its norm layer where ``placement`` puts it: after the ReLU fused into the
    convolution (``post``, as a tutorial writes it), between a linear convolution and an Activation
    layer (``pre``), or nowhere (``none``)."""
    fused = "linear" if placement == "pre" else "relu"
    block = [layers.Conv2D(channels, 3, padding="same", activation=fused)]
    block += [] if placement == "none" else [norm()]
    block += [layers.Activation("relu")] if placement == "pre" else []
    return keras.Sequential([*_image(ctx), *block, layers.Flatten(), layers.Dense(ctx.num_classes)])


def conv_net(ctx: plugin.Context, *, channels: int = 4) -> plugin.Network:
    return adapters.keras(lambda: _conv(ctx, channels))


def conv_native(ctx: plugin.Context, *, channels: int = 4) -> plugin.Network:
    """The conv net as a plugin: ``lax.conv_general_dilated`` and a matmul, from the adapted net's weights."""

    def init(key):
        kernel, bias, dense, dense_bias = conv_net(ctx, channels=channels).init(key)
        return {"conv": {"w": kernel, "b": bias}, "head": {"w": dense, "b": dense_bias}}

    def apply(params, x, norm, *, train, key):
        h = x.reshape(x.shape[0], *IMAGE)
        h = jax.lax.conv_general_dilated(h, params["conv"]["w"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["conv"]["b"]
        h = norm.act(h, jax.nn.relu)
        return h.reshape(h.shape[0], -1) @ params["head"]["w"] + params["head"]["b"]

    return plugin.Network(init, apply)


def _channels_first(ctx, channels):
    """A functional net whose BatchNormalization takes its channels on axis 1."""
    inputs, reshape = _image(ctx)
    h = layers.Conv2D(channels, 3, padding="same", activation="relu")(reshape(inputs))
    h = layers.Permute((3, 1, 2))(h)
    h = layers.BatchNormalization(axis=1)(h)
    h = layers.Permute((2, 3, 1))(h)
    return keras.Model(inputs, layers.Dense(ctx.num_classes)(layers.Flatten()(h)))


def _layer_norm(ctx, channels):
    """The conv net with a LayerNormalization over each example's every feature, as bnbench's is."""
    return _conv(ctx, channels, norm=lambda: layers.LayerNormalization(axis=[1, 2, 3]))


def _softmax_head(ctx, form):
    """An MLP with a softmax on its output: fused into the head, or a layer of its own."""
    head = {"fused": [layers.Dense(ctx.num_classes, activation="softmax")],
            "layer": [layers.Dense(ctx.num_classes), layers.Softmax()],
            "activation": [layers.Dense(ctx.num_classes), layers.Activation("softmax")],
            "logits": [layers.Dense(ctx.num_classes)]}[form]
    return keras.Sequential([keras.Input(ctx.input_shape), layers.Dense(8, activation="relu"),
                             layers.BatchNormalization(), *head])


class Subclassed(keras.Model):
    """A subclassed model: its ``call`` places the norm layer, after the ReLU."""

    def __init__(self, classes: int, channels: int = 4):
        super().__init__()
        self.conv = layers.Conv2D(channels, 3, padding="same")
        self.bn = layers.BatchNormalization()
        self.head = layers.Dense(classes)

    def call(self, x, training=False):
        h = self.bn(keras.ops.relu(self.conv(keras.ops.reshape(x, (-1, *IMAGE)))), training=training)
        return self.head(keras.ops.reshape(h, (-1, h.shape[1] * h.shape[2] * h.shape[3])))


def _subclassed(ctx, channels):
    model = Subclassed(ctx.num_classes, channels)
    model(np.zeros((1, *ctx.input_shape), np.float32))  # builds its layers
    return model


def _dropout(ctx, channels):
    return keras.Sequential([keras.Input(ctx.input_shape), layers.Dense(8, activation="relu"),
                             layers.BatchNormalization(), layers.Dropout(0.5), layers.Dense(ctx.num_classes)])


def _unbuilt(ctx, channels):
    return keras.Sequential([layers.Dense(ctx.num_classes)])


MAKERS = {"conv": _conv, "channels_first": _channels_first, "layer_norm": _layer_norm, "subclassed": _subclassed,
          "dropout": _dropout, "unbuilt": _unbuilt}


def adapted(ctx: plugin.Context, *, name: str = "conv", channels: int = 4) -> plugin.Network:
    return adapters.keras(lambda: MAKERS[name](ctx, channels))


def softmax_head(ctx: plugin.Context, *, form: str = "fused") -> plugin.Network:
    return adapters.keras(lambda: _softmax_head(ctx, form))


def with_weights(model: keras.Model, params: list) -> keras.Model:
    """``model`` with the adapted network's parameters (its trainable variables but the norm layers',
    in order) assigned to its variables."""
    norms = (layers.BatchNormalization, layers.LayerNormalization, layers.GroupNormalization)
    swapped = {id(v) for layer in model._flatten_layers() if isinstance(layer, norms) for v in layer.weights}
    for variable, value in zip([v for v in model.trainable_variables if id(v) not in swapped], params, strict=True):
        variable.assign(value)
    return model


def own_forward(model: keras.Model, params: list, x, *, training: bool = True):
    """The Keras model's own forward pass (its own norm layers, batch statistics in training) with
    ``params`` for weights."""
    return with_weights(model, params)(x, training=training)
