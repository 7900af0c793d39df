"""VGG for small images (Simonyan & Zisserman 2015, in its CIFAR form): stacks of 3x3 convolutions,
each stage closed by 2x2 max-pooling, then one linear classifier on the flattened features.

``depth`` 11 or 16 (configurations A and D: 8 or 13 convolutions, plus the classifier). The five
stages have ``widths`` channels (default 64, 128, 256, 512, 512). Each convolution is a hidden block of
:func:`bnbench.models.stack.stack`, so ``placement`` puts the norm layer before or after the activation,
or drops it, as for the other chains. Pooling pads odd sizes ('SAME'), so 28x28 inputs end at 1x1 like
32x32 ones.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import jax
import jax.numpy as jnp

from bnbench.models.cnn import channels_last
from bnbench.models.layers import Model, Normalization, conv
from bnbench.models.stack import LayerKind, stack
from bnbench.options import DEFAULT_WIDTHS

CONVS_PER_STAGE = {11: (1, 1, 2, 2, 2), 16: (2, 2, 3, 3, 3)}


def _max_pool(h: jax.Array) -> jax.Array:
    spatial = h.ndim - 2
    window = (1, *(2,) * spatial, 1)
    return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, window, window, "SAME")


def vgg(
    *,
    input_shape: tuple[int, ...],
    widths: Sequence[int] = DEFAULT_WIDTHS["vgg"],
    depth: int,
    num_classes: int,
    activation: str,
    placement: str,
    norm: Normalization = Normalization(),
    dropout_placement: str = "after_activation",
    dtype: str = "float32",
) -> Model:
    """VGG-``depth`` on ``input_shape`` (1-D signals or 2-D images, as the CNN's)."""
    if depth not in CONVS_PER_STAGE:
        raise ValueError(f"vgg depth must be one of {sorted(CONVS_PER_STAGE)}, got {depth}")
    if len(widths) != len(CONVS_PER_STAGE[depth]):
        raise ValueError(f"vgg takes one width per stage (5), got {list(widths)}")
    input_shape = channels_last(input_shape)
    spatial = len(input_shape) - 1
    layer_widths = [w for w, n in zip(widths, CONVS_PER_STAGE[depth]) for _ in range(n)]
    # A stage's pooling acts on its last block's output: on the next block's input, or before the head.
    stage_starts = set(itertools.accumulate(CONVS_PER_STAGE[depth][:-1]))
    out_spatial = list(input_shape[:-1])
    for _ in widths:
        out_spatial = [math.ceil(n / 2) for n in out_spatial]

    def apply(p, h, i):
        if i in stage_starts:
            h = _max_pool(h)
        return conv(h, p["w"]) + p["b"].astype(h.dtype)

    kind = LayerKind(
        weight_shape=lambda channels_in, width: (*(3,) * spatial, channels_in, width),
        apply=apply,
        prepare=lambda x: x.reshape(x.shape[0], *input_shape),
        flatten=lambda h: _max_pool(h).reshape(h.shape[0], -1),
        channels_in=input_shape[-1],
        head_features=lambda c: c * math.prod(out_spatial),
    )
    return stack(
        kind, layer_widths, num_classes, activation, placement, norm, dropout_placement=dropout_placement, dtype=dtype
    )
