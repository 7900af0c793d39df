"""Networks people already have: a Flax NNX or an Equinox model with its own norm layers, run under
bnbench with every ``BatchNorm``, ``GroupNorm`` and ``LayerNorm`` swapped for a bnbench norm site.

A plugin function (:mod:`bnbench.models.plugin`) returns the adapted network::

    from bnbench.models import adapters

    def net(ctx, *, width: int = 64):                     # Flax NNX: make(rngs) -> nnx.Module
        return adapters.nnx(lambda rngs: MyNet(ctx.input_shape, width, ctx.num_classes, rngs=rngs))

    def net(ctx, *, width: int = 64):                     # Equinox: make(key) -> eqx.Module
        return adapters.equinox(lambda key: MyNet(width, ctx.num_classes, key=key))

Each site sits where the model's own norm layer was, as a bare site (``norm(h)``): the model's code
fixes the placement, so a spec cannot sweep ``placement``; everything else sweeps (``norm`` and BN's
variants, ``epsilon`` and ``momentum``, noisy BN, dropout before the norm layer, ``eval_stats``). An NNX
model is called on the batch, channels last as Flax's layers are; an Equinox model, written for one
example (channels first) as Equinox's are, is vmapped over the batch (``axis_name="batch"``), its sites
taking their statistics across that axis, over the example's first axis. What the
frameworks' own layers do differently is in ``docs/plugins.md``. Flax and Equinox are optional extras
(``pip install 'bnbench[flax]'``, ``'bnbench[equinox]'``).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import jax
import jax.numpy as jnp

from bnbench.models import plugin

# The norm of the forward pass in progress: the sites the adapted layers call.
_CURRENT: contextvars.ContextVar = contextvars.ContextVar("bnbench_norm")


@contextlib.contextmanager
def _norm_in_use(norm):
    token = _CURRENT.set(norm)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def _site(x):
    return _CURRENT.get()(x)


def nnx(make: Callable) -> plugin.Network:
    """A Flax NNX model ``make(nnx.Rngs(key))`` with its norm layers swapped for bnbench's. Its
    parameters are its ``nnx.Param`` variables; its other state (random-number streams, counters) is kept
    as built, so its own dropout draws the same masks every step: use the run's ``dropout`` instead."""
    from flax import nnx as flax_nnx

    norms = (flax_nnx.BatchNorm, flax_nnx.GroupNorm, flax_nnx.LayerNorm)

    class Site(flax_nnx.Module):
        def __call__(self, x, *args, **kwargs):
            return _site(x)

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
        with _norm_in_use(norm):
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


def equinox(make: Callable, *, stateful: bool | None = None) -> plugin.Network:
    """An Equinox model ``make(key)`` (or ``make(key) -> (model, state)``, as
    ``eqx.nn.make_with_state`` builds one) with its norm layers swapped for bnbench's, called per
    example under ``jax.vmap(axis_name="batch")``. ``stateful``: whether the model is called as
    ``model(x, state) -> (y, state)``, as Equinox's BatchNorm needs (default: if ``make`` returned a
    state)."""
    import equinox as eqx

    norms = (eqx.nn.BatchNorm, eqx.nn.GroupNorm, eqx.nn.LayerNorm)

    class Site(eqx.Module):
        def __call__(self, x, state=None, *, key=None, inference=None):
            # Equinox's norm layers take an example channels first, as its convolutions make it;
            # bnbench's sites take the channels last.
            out = jnp.moveaxis(_site(jnp.moveaxis(x, 0, -1)), -1, 0)
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
            per_example = norm.per_example("batch")
            with _norm_in_use(per_example):
                out = model(example, state0)[0] if calls_with_state else model(example)
            return out, per_example.new_states, per_example.preacts

        logits, states, preacts = jax.vmap(one, axis_name="batch", out_axes=(0, None, 0))(x)
        norm.absorb(states, preacts)
        return logits

    return plugin.Network(init, apply, placement_fixed=True)

