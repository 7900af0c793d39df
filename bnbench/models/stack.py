"""Chains of hidden blocks and a linear head: the shared builder of the MLP, the CNN and VGG.

Every hidden block is one of (``placement``)::

    "pre":  linear/conv -> norm -> activation
    "post": linear/conv -> activation -> norm
    "none": linear/conv -> activation           (the no-normalization baseline)

followed at the end by a linear classification head. The norm layer is BN by default, or one of its
variants or replacements (:class:`bnbench.models.layers.Normalization`); ``norm="none"`` is the same as
``placement="none"``. With ``dropout``, each block applies dropout at ``dropout_placement``:
``"before_norm"``, on the norm layer's input (where a "pre" norm layer would be without one), or
``"after_activation"``, on the block's output. Parameters and normalization state are pytrees; the
weights of a given seed do not depend on ``placement``, the norm or dropout (they add parameters but
consume no random numbers), so runs that differ only in those start from the same weights. Weights are
normal with variance ``gain / fan_in`` (He for the rectifiers' hidden layers, LeCun otherwise); biases start at
zero.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from bnbench.norm import bn
from bnbench.models.layers import (
    ACTIVATION_FUNCTIONS, COMPUTE_DTYPES, INIT_GAINS, BlockNorm, Model, Normalization, Scalars, from_forward, he_std, normal_weights,
)
from bnbench.options import DROPOUT_PLACEMENTS, NORMS, PLACEMENTS


class LayerKind(NamedTuple):
    """What distinguishes the families built on :func:`stack`: how hidden layers are made and data flows."""

    weight_shape: Callable[[int, int], tuple[int, ...]]  # (channels_in, width) -> weight shape (fan-in first)
    apply: Callable[[dict, jax.Array, int], jax.Array]  # (layer params {"w", "b"}, h, layer index) -> h
    prepare: Callable[[jax.Array], jax.Array]  # raw batch -> first layer's input
    flatten: Callable[[jax.Array], jax.Array]  # last hidden output -> (N, features) for the head
    channels_in: int
    head_features: Callable[[int], int]  # last width -> number of features the head sees


class _Chain(NamedTuple):
    """A chain of hidden blocks and a head: its init and forward pass (see the module docstring)."""

    kind: LayerKind
    widths: tuple[int, ...]
    num_classes: int
    activation: str
    placement: str
    norm: Normalization
    dropout_placement: str
    dtype: str

    @property
    def use_norm(self) -> bool:
        return self.placement != "none" and self.norm.kind != "none"

    @property
    def has_state(self) -> bool:
        return self.use_norm and self.norm.kind == "batch"

    def init(self, key):
        shapes, c = [], self.kind.channels_in
        for width in self.widths:
            shapes.append(self.kind.weight_shape(c, width))
            c = width
        shapes.append((self.kind.head_features(c), self.num_classes))
        # He initialization keeps ReLU pre-activations at unit scale; LeCun suits sigmoid/tanh and the head.
        gains = [INIT_GAINS[self.activation]] * len(self.widths) + [1.0]
        weights = normal_weights(key, shapes, [he_std(s, g) for s, g in zip(shapes, gains)])
        layers = [{"w": w, "b": jnp.zeros((w.shape[-1],), jnp.float32)} for w in weights]
        norm_pairs = [bn.init(width) for width in self.widths] if self.use_norm else []
        state = [s for _, s in norm_pairs] if self.has_state else []
        return {"layers": layers[:-1], "norm": [p for p, _ in norm_pairs], "head": layers[-1]}, state

    def forward(self, params, state, x, train, eval_stats, scalars: Scalars):
        act, compute_dtype = ACTIVATION_FUNCTIONS[self.activation], COMPUTE_DTYPES[self.dtype]
        blocks = BlockNorm(self.norm, self.placement, self.dropout_placement, train, eval_stats, scalars)
        h = self.kind.prepare(x).astype(compute_dtype)
        new_state, preacts = [], []
        for i, layer in enumerate(params["layers"]):
            norm_params = params["norm"][i] if self.use_norm else None
            h, pre, s = blocks.block(self.kind.apply(layer, h, i), i, act, norm_params, state[i] if self.has_state else None)
            preacts.append(pre)
            if self.has_state:
                new_state.append(s)
        head = params["head"]
        logits = self.kind.flatten(h) @ head["w"].astype(compute_dtype) + head["b"].astype(compute_dtype)
        return logits.astype(jnp.float32), new_state, preacts


def stack(
    kind: LayerKind,
    widths: Sequence[int],
    num_classes: int,
    activation: str,
    placement: str,
    norm: Normalization,
    *,
    dropout_placement: str = "after_activation",
    dtype: str = "float32",
) -> Model:
    """Builds a model of ``len(widths)`` hidden blocks of one layer kind and a linear head."""
    if activation not in ACTIVATION_FUNCTIONS:
        raise ValueError(f"unknown activation {activation!r}")
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}")
    if norm.kind not in NORMS:
        raise ValueError(f"unknown norm {norm.kind!r}")
    if dropout_placement not in DROPOUT_PLACEMENTS:
        raise ValueError(f"unknown dropout placement {dropout_placement!r}")
    chain = _Chain(kind, tuple(widths), num_classes, activation, placement, norm, dropout_placement, dtype)
    return from_forward(chain.init, chain.forward, len(widths), len(widths) if chain.has_state else 0)
