"""The small convolutional network: one stride-2 convolution per width, then a linear head."""

from __future__ import annotations

import math
from typing import Sequence

from bnbench.models.layers import Model, Normalization, conv
from bnbench.models.stack import LayerKind, stack

# Spatial kernel size by number of spatial dimensions: 1-D signals (MNIST-1D) and 2-D images.
_KERNEL_SIZE = {1: 5, 2: 3}


def channels_last(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``input_shape`` with a channel axis: ``(L,)`` becomes ``(L, 1)``; ``(L, C)`` and ``(H, W, C)`` stay."""
    shape = (*input_shape, 1) if len(input_shape) == 1 else tuple(input_shape)
    if len(shape) - 1 not in _KERNEL_SIZE:
        raise ValueError(f"convolutional models take 1-D signals or 2-D images, got input shape {input_shape}")
    return shape


def cnn(
    *,
    input_shape: tuple[int, ...],
    widths: Sequence[int],
    num_classes: int,
    activation: str,
    placement: str,
    norm: Normalization = Normalization(),
    dropout_placement: str = "after_activation",
    dtype: str = "float32",
) -> Model:
    """Convolutional network: one stride-2 'SAME' convolution per width, then flatten and a linear head.

    ``input_shape`` is ``(L,)`` or ``(L, C)`` for 1-D signals (kernel 5) and ``(H, W, C)`` for images
    (kernel 3x3); a missing channel axis is added. BN normalizes per channel over batch and space.
    """
    input_shape = channels_last(input_shape)
    spatial = len(input_shape) - 1
    kernel = (_KERNEL_SIZE[spatial],) * spatial
    out_spatial = list(input_shape[:-1])
    for _ in widths:
        out_spatial = [math.ceil(n / 2) for n in out_spatial]

    kind = LayerKind(
        weight_shape=lambda channels_in, width: (*kernel, channels_in, width),
        apply=lambda p, h, _: conv(h, p["w"], 2) + p["b"].astype(h.dtype),
        prepare=lambda x: x.reshape(x.shape[0], *input_shape),
        flatten=lambda h: h.reshape(h.shape[0], -1),
        channels_in=input_shape[-1],
        head_features=lambda c: c * math.prod(out_spatial),
    )
    return stack(
        kind, widths, num_classes, activation, placement, norm, dropout_placement=dropout_placement, dtype=dtype
    )
