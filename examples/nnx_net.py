"""A Flax NNX conv net with its own BatchNorm layers, run under bnbench through the adapter: bnbench
swaps each nnx.BatchNorm for its own norm site, so the spec sweeps BN's settings over it."""

import math

from flax import nnx

from bnbench import adapters, plugin


class SignalNet(nnx.Module):
    """Two stride-2 1-D convolutions (kernel 5, channels last as Flax's are), each with BatchNorm and ReLU."""

    def __init__(self, length: int, channels: int, classes: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, channels, (5,), strides=(2,), rngs=rngs)
        self.norm1 = nnx.BatchNorm(channels, rngs=rngs)
        self.conv2 = nnx.Conv(channels, channels, (5,), strides=(2,), rngs=rngs)
        self.norm2 = nnx.BatchNorm(channels, rngs=rngs)
        self.head = nnx.Linear(math.ceil(math.ceil(length / 2) / 2) * channels, classes, rngs=rngs)

    def __call__(self, x):
        h = x.reshape(x.shape[0], -1, 1)
        h = nnx.relu(self.norm1(self.conv1(h)))
        h = nnx.relu(self.norm2(self.conv2(h)))
        return self.head(h.reshape(h.shape[0], -1))


def net(ctx: plugin.Context, *, channels: int = 16) -> plugin.Network:
    return adapters.nnx(lambda rngs: SignalNet(math.prod(ctx.input_shape), channels, ctx.num_classes, rngs=rngs))
