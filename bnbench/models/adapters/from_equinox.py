"""Equinox models under bnbench (:func:`equinox`)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from bnbench.models import plugin
from bnbench.models.adapters.sites import norm_in_use, site


def equinox(make: Callable, *, stateful: bool | None = None) -> plugin.Network:
    """An Equinox model ``make(key)`` (or ``make(key) -> (model, state)``, as
    ``eqx.nn.make_with_state`` builds one) with its norm layers swapped for bnbench's, called per
    example under ``jax.vmap(axis_name="batch")``. Each example comes channels first, as Equinox's
    layers take it: an image of ``ctx.input_shape == (H, W, C)`` as ``(C, H, W)``, a signal of
    ``(L, C)`` as ``(C, L)``; a feature vector of ``(F,)`` as it is. ``stateful``: whether the model is
    called as ``model(x, state) -> (y, state)``, as Equinox's BatchNorm needs (default: if ``make``
    returned a state)."""
    import equinox as eqx

    norms = (eqx.nn.BatchNorm, eqx.nn.GroupNorm, eqx.nn.LayerNorm)

    class Site(eqx.Module):
        def __call__(self, x, state=None, *, key=None, inference=None):
            # Equinox's norm layers take an example channels first, as its convolutions make it;
            # bnbench's sites take the channels last.
            out = jnp.moveaxis(site(jnp.moveaxis(x, 0, -1)), -1, 0)
            return out if state is None else (out, state)

    def build(key):
        made = make(key)
        model, state = made if isinstance(made, tuple) else (made, None)
        model = jax.tree_util.tree_map(lambda n: Site() if isinstance(n, norms) else n, model,
                                       is_leaf=lambda n: isinstance(n, norms))
        return model, state

    model0, state0 = build(jax.random.PRNGKey(0))
    calls_with_state = state0 is not None if stateful is None else stateful
    _, static = eqx.partition(model0, eqx.is_inexact_array)

    def init(key):
        return eqx.filter(build(key)[0], eqx.is_inexact_array)

    def apply(params, x, norm, *, train, key):
        model = eqx.combine(params, static)

        def one(example):
            # bnbench's examples come channels last, Equinox's layers take them first (1-D: a no-op)
            example = jnp.moveaxis(example, -1, 0)
            per_example = norm.per_example("batch")
            with norm_in_use(per_example):
                out = model(example, state0)[0] if calls_with_state else model(example)
            return out, per_example.new_states, per_example.preacts

        logits, states, preacts = jax.vmap(one, axis_name="batch", out_axes=(0, None, 0))(x)
        norm.absorb(states, preacts)
        return logits

    return plugin.Network(init, apply, placement_fixed=True)
