"""Mechanism probes: measurements of *why* BN helps, taken inside the compiled training program.

A run with ``probes`` in its spec evaluates them at step 0 (the initialization) and at every evaluation
point, on a fixed probe batch: the first ``batch_size`` examples of the training split, with the loss in
training mode (batch statistics, no noise, no weight decay). Layers are numbered 1..L for the hidden
layers and L+1 for the classification head; ``W_i`` is layer i's weight matrix (or kernel), biases
and norm parameters aside; ``lr`` is the learning rate of the next update as the run's schedule sets
it (warm-up and decay included). Every value is a float32 scalar; ``probes.csv`` holds one row per run, step,
layer and value name.

``grad_norm``
    ``grad_norm``: ``||dL/dW_i||_2`` per layer (Yang et al. 2019 study how it grows with depth at
    initialization, with and without BN).
``weight_norm``
    ``weight_norm``: ``||W_i||_2`` per layer; with a norm layer after the hidden layers also
    ``effective_lr``: ``lr / ||W_i||_2^2`` per hidden layer (van Laarhoven 2017: BN makes a layer's
    output invariant to the scale of ``W_i``, so weight decay only changes this effective rate).
``ics``
    Internal covariate shift as Santurkar et al. (2018, Definition 2.1) define it: ``G`` is
    ``dL/dW_i`` at the current parameters, ``G'`` the same gradient after every layer before ``i``
    (weights, biases and norm parameters) has taken this step's optimizer update, computed from the
    probe batch's gradient (layers ``i`` and after unchanged), on the same batch. Per layer:
    ``ics_distance`` ``||G - G'||_2`` and ``ics_cosine`` ``cos(G, G')``.
``smoothness``
    The loss landscape along the gradient (Santurkar et al. 2018, §3.1): with ``g`` the gradient of
    every parameter and step sizes ``eta = lr * f`` for ``f`` in :data:`STEP_FACTORS`, ``loss_min`` and
    ``loss_max`` of ``L(w - eta g)``, ``grad_predictiveness`` ``max ||g - grad L(w - eta g)||_2`` and
    ``beta_smoothness`` ``max ||g - grad L(w - eta g)||_2 / ||eta g||_2``. Layer 0: the whole network.
``stats_gap``
    Per BN layer, how far the running (EMA) statistics are from the population statistics of the
    training data under the current weights (Wu & Johnson 2021), the latter computed as PreciseBN does
    over ``precise_batches`` training batches: ``mean_gap`` ``||mu_run - mu_pop||_2 / ||sigma_pop||_2``
    (in units of the population's spread) and ``var_gap`` ``||var_run - var_pop||_2 / ||var_pop||_2``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from bnbench.models.layers import layer_weights

STEP_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)  # smoothness: step sizes as multiples of the learning rate


def labels(probes: tuple[str, ...], hidden_layers: int, norm_layers: bool, bn_layers: int) -> tuple[tuple[int, str], ...]:
    """The ``(layer, value name)`` of every value :func:`values` returns, in its order."""
    every_layer = range(1, hidden_layers + 2)
    out: list[tuple[int, str]] = []
    for probe in probes:
        if probe == "grad_norm":
            out += [(layer, "grad_norm") for layer in every_layer]
        elif probe == "weight_norm":
            out += [(layer, "weight_norm") for layer in every_layer]
            out += [(layer, "effective_lr") for layer in range(1, hidden_layers + 1)] if norm_layers else []
        elif probe == "ics":
            out += [(layer, name) for layer in every_layer for name in ("ics_distance", "ics_cosine")]
        elif probe == "smoothness":
            out += [(0, name) for name in ("loss_min", "loss_max", "grad_predictiveness", "beta_smoothness")]
        elif probe == "stats_gap":
            out += [(layer, name) for layer in range(1, bn_layers + 1) for name in ("mean_gap", "var_gap")]
        else:
            raise ValueError(f"unknown probe {probe!r}")
    return tuple(out)


def _norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(tree)))


def _updated_before(params, updates, layer: int):
    """``params`` with every hidden layer before ``layer`` (1-based) and its norm parameters updated."""

    def before(key):
        pairs = enumerate(zip(params[key], updates[key]))
        return [jax.tree_util.tree_map(jnp.add, p, u) if j < layer - 1 else p for j, (p, u) in pairs]

    return {**params, "layers": before("layers"), "norm": before("norm")}


def values(
    probes: tuple[str, ...],
    loss: Callable,
    params,
    grads,
    updates,
    lr: jax.Array,
    norm_layers: bool,
    bn_state=None,
    population: Callable | None = None,
    weights: Callable = layer_weights,
) -> jax.Array:
    """Every probe value, in the order of :func:`labels` (see the module docstring).

    ``weights(params)`` lists ``W_1 .. W_L`` and the head's weight in layer order (a model's
    ``weights``). ``loss(params) -> scalar`` is the probe batch's training-mode loss and ``grads`` its gradient at
    ``params``; ``updates`` is this step's optimizer update (a pytree like ``params``); ``bn_state`` the
    running statistics and
    ``population() -> [BNState, ...]`` their population counterpart (``stats_gap`` only).
    """
    out: list[jax.Array] = []
    for probe in probes:
        if probe == "grad_norm":
            out += [_norm(g) for g in weights(grads)]
        elif probe == "weight_norm":
            norms = [_norm(w) for w in weights(params)]
            out += norms + ([lr / n**2 for n in norms[:-1]] if norm_layers else [])
        elif probe == "ics":
            for layer, g in enumerate(weights(grads), start=1):
                shifted = weights(jax.grad(loss)(_updated_before(params, updates, layer)))[layer - 1]
                out += [_norm(g - shifted), jnp.sum(g * shifted) / (_norm(g) * _norm(shifted))]
        elif probe == "smoothness":
            out += _smoothness(loss, params, grads, lr)
        elif probe == "stats_gap":
            for running, pop in zip(bn_state, population()):
                out += [
                    _norm(running.mean - pop.mean) / jnp.sqrt(jnp.sum(pop.var)),
                    _norm(running.var - pop.var) / _norm(pop.var),
                ]
    return jnp.stack(out).astype(jnp.float32) if out else jnp.zeros((0,), jnp.float32)


def _smoothness(loss: Callable, params, grads, lr: jax.Array) -> list[jax.Array]:
    g_norm = _norm(grads)
    losses, distances, ratios = [], [], []
    for factor in STEP_FACTORS:
        eta = lr * factor
        moved = jax.tree_util.tree_map(lambda p, g: p - eta * g, params, grads)
        value, moved_grads = jax.value_and_grad(loss)(moved)
        distance = _norm(jax.tree_util.tree_map(jnp.subtract, grads, moved_grads))
        losses.append(value)
        distances.append(distance)
        ratios.append(distance / (eta * g_norm))
    losses = jnp.stack(losses)
    return [losses.min(), losses.max(), jnp.stack(distances).max(), jnp.stack(ratios).max()]
