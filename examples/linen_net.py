"""A Flax Linen conv net with its own BatchNorm and dropout layers, run under bnbench through the adapter:
bnbench answers each nn.BatchNorm call with its own norm site, so the spec sweeps BN's settings over it;
the module's `train` flag follows bnbench's training and evaluation, and its dropout draws from the
run's key."""

import flax.linen as nn

from bnbench import adapters, plugin


class SignalNet(nn.Module):
    """Two stride-2 1-D convolutions (kernel 5, channels last as Flax's are), each with BatchNorm and ReLU,
    dropout, a head."""

    classes: int
    channels: int = 16

    @nn.compact
    def __call__(self, x, train: bool):
        h = x.reshape(x.shape[0], -1, 1)
        for _ in range(2):
            h = nn.Conv(self.channels, (5,), strides=(2,))(h)
            h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))
        h = nn.Dropout(0.1, deterministic=not train)(h.reshape(h.shape[0], -1))
        return nn.Dense(self.classes)(h)


def net(ctx: plugin.Context, *, channels: int = 16) -> plugin.Network:
    return adapters.linen(SignalNet(ctx.num_classes, channels), ctx.input_shape)
