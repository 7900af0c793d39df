"""The fully connected network (:func:`bnbench.models.stack.stack` of dense layers)."""

from __future__ import annotations

import math
from typing import Sequence

from bnbench.models.layers import Model, Normalization, dense
from bnbench.models.stack import LayerKind, stack


def mlp(
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
    """Fully connected network; inputs of any shape are flattened per example."""

    def flatten(x):
        return x.reshape(x.shape[0], -1)

    kind = LayerKind(
        weight_shape=lambda fan_in, width: (fan_in, width),
        apply=lambda p, h, _: dense(h, p),
        prepare=flatten,
        flatten=lambda h: h,
        channels_in=math.prod(input_shape),
        head_features=lambda c: c,
    )
    return stack(
        kind, widths, num_classes, activation, placement, norm, dropout_placement=dropout_placement, dtype=dtype
    )
