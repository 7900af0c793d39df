"""A Keras 3 conv net written as a Keras tutorial writes one (a ReLU fused into each convolution, then
BatchNormalization, a softmax head), run under bnbench through the adapter: bnbench swaps each
BatchNormalization for its own norm site, separates the fused ReLU so that `placement` sweeps over the
model, and trains on the logits before the softmax."""

from bnbench import adapters, plugin  # before keras: bnbench selects Keras's JAX backend

import keras
from keras import layers


def signal_net(length: int, channels: int, classes: int) -> keras.Model:
    """Two stride-2 1-D convolutions (kernel 5), each with a ReLU and BatchNormalization, and a softmax head."""
    return keras.Sequential([
        keras.Input((length,)),
        layers.Reshape((length, 1)),
        layers.Conv1D(channels, 5, strides=2, padding="same", activation="relu"),
        layers.BatchNormalization(),
        layers.Conv1D(channels, 5, strides=2, padding="same", activation="relu"),
        layers.BatchNormalization(),
        layers.Flatten(),
        layers.Dense(classes, activation="softmax"),
    ])


def net(ctx: plugin.Context, *, channels: int = 16) -> plugin.Network:
    return adapters.keras(lambda: signal_net(ctx.input_shape[0], channels, ctx.num_classes))
