"""Flax NNX models under bnbench (:func:`nnx`)."""

from __future__ import annotations

from typing import Callable

import jax

from bnbench.models import plugin
from bnbench.models.adapters.sites import norm_in_use, site


def nnx(make: Callable) -> plugin.Network:
    """A Flax NNX model ``make(nnx.Rngs(key))`` with its norm layers swapped for bnbench's. Its
    parameters are its ``nnx.Param`` variables; its other state (random-number streams, counters) is kept
    as built, so its own dropout draws the same masks every step: use the run's ``dropout`` instead."""
    from flax import nnx as flax_nnx

    norms = (flax_nnx.BatchNorm, flax_nnx.GroupNorm, flax_nnx.LayerNorm)

    class Site(flax_nnx.Module):
        def __call__(self, x, *args, **kwargs):
            return site(x)

    def build(key):
        module = make(flax_nnx.Rngs(key))
        for path, node in list(flax_nnx.iter_graph(module)):
            if isinstance(node, norms) and path:
                _replace(module, path, Site())
        return flax_nnx.split(module, flax_nnx.Param, ...)

    graphdef, _, rest = build(jax.random.PRNGKey(0))

    def init(key):
        return build(key)[1]

    def apply(params, x, norm, *, train, key):
        module = flax_nnx.merge(graphdef, params, rest)
        module.train() if train else module.eval()
        with norm_in_use(norm):
            return module(x)

    return plugin.Network(init, apply, placement_fixed=True)


def _replace(root, path: tuple, new) -> None:
    """Sets the node at ``path`` (attribute names and indices) under ``root`` to ``new``."""
    parent = root
    for step in path[:-1]:
        parent = parent[step] if isinstance(step, int) else getattr(parent, step)
    if isinstance(path[-1], int):
        parent[path[-1]] = new
    else:
        setattr(parent, path[-1], new)
