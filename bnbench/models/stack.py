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
normal with variance ``gain / fan_in`` (He for ReLU hidden layers, LeCun otherwise); biases start at
zero.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from bnbench import bn
from bnbench.models.layers import (
    ACTIVATION_FUNCTIONS, COMPUTE_DTYPES, Model, Normalization, Scalars, add_noise, dropout, from_forward, he_std, normal_weights,
    normalize,
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
    act = ACTIVATION_FUNCTIONS[activation]
    compute_dtype = COMPUTE_DTYPES[dtype]
    use_norm = placement != "none" and norm.kind != "none"
    has_state = use_norm and norm.kind == "batch"

    def init(key):
        shapes, c = [], kind.channels_in
        for width in widths:
            shapes.append(kind.weight_shape(c, width))
            c = width
        shapes.append((kind.head_features(c), num_classes))
        # He initialization keeps ReLU pre-activations at unit scale; LeCun suits sigmoid/tanh and the head.
        gains = [2.0 if activation == "relu" else 1.0] * len(widths) + [1.0]
        weights = normal_weights(key, shapes, [he_std(s, g) for s, g in zip(shapes, gains)])
        layers = [{"w": w, "b": jnp.zeros((w.shape[-1],), jnp.float32)} for w in weights]
        norm_pairs = [bn.init(width) for width in widths] if use_norm else []
        state = [s for _, s in norm_pairs] if has_state else []
        return {"layers": layers[:-1], "norm": [p for p, _ in norm_pairs], "head": layers[-1]}, state

    def forward(params, state, x, train, eval_stats, scalars: Scalars):
        def noisy(z, i):
            if not train or scalars.noise_key is None:
                return z
            return add_noise(z, jax.random.fold_in(scalars.noise_key, i), scalars.noise_strength)

        def dropped(z, i, where):
            if not train or scalars.dropout_key is None or where != dropout_placement:
                return z
            return dropout(z, jax.random.fold_in(scalars.dropout_key, i), scalars.dropout_rate)

        def normalize_at(z, i):
            z = dropped(z, i, "before_norm")
            if not use_norm:  # noise goes where a "pre" norm layer would be (noise alone)
                return noisy(z, i), None
            out, s = normalize(
                z, params["norm"][i], state[i] if has_state else None, norm, train=train, eval_stats=eval_stats,
                scalars=scalars,
            )
            return noisy(out, i), s

        h = kind.prepare(x).astype(compute_dtype)
        new_state, preacts = [], []
        for i, layer in enumerate(params["layers"]):
            pre = kind.apply(layer, h, i)
            s = None
            if placement == "post" and use_norm:
                h, s = normalize_at(act(pre), i)
            else:
                pre, s = normalize_at(pre, i)
                h = act(pre)
            h = dropped(h, i, "after_activation")
            preacts.append(pre)
            if has_state:
                new_state.append(s)
        head = params["head"]
        logits = kind.flatten(h) @ head["w"].astype(compute_dtype) + head["b"].astype(compute_dtype)
        return logits.astype(jnp.float32), new_state, preacts

    return from_forward(init, forward, len(widths), len(widths) if has_state else 0)
