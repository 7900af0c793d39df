"""Your own network under bnbench: the contract a model plugin implements.

A spec names a plugin with ``model = "./nets/wide.py:wide_net"`` (a file relative to the spec),
``"package.module:function"``, or the name of an entry point in the ``bnbench.models`` group, and
passes it static keyword arguments in ``[model_args]`` (sweepable as ``"model_args.width" = [32, 64]``).
The function builds the network for one run::

    from bnbench.models import plugin

    def wide_net(ctx: plugin.Context, *, width: int = 64) -> plugin.Network:
        def init(key):                                   # any pytree of float arrays; no norm parameters
            ...
        def apply(params, x, norm, *, train, key):       # x: (batch, *ctx.input_shape) -> (batch, classes)
            h = norm.act(x @ params["w1"], jax.nn.relu)  # a placement-aware site
            h = norm(h @ params["w2"])                   # a bare norm site
            return h @ params["head"]
        return plugin.Network(init, apply)

bnbench owns every normalization layer and injects it: each call of ``norm`` is a site, whose
parameters and running state bnbench creates and trains with the run's settings (``norm``, its
variants, ``epsilon`` and ``momentum`` traced, ``noisy_bn``, ``dropout`` and ``dropout_placement``,
``track_activations``), so every BN field sweeps over your network and runs stay vmappable. Sites are
found by tracing ``apply`` abstractly when the run is planned; they must not depend on ``train`` or on
the data.

* ``norm(h)``: normalizes ``h`` over every axis but the last (dropout before it with
  ``dropout_placement = "before_norm"``, noise after it with ``noisy_bn``). With ``placement = "none"``
  or ``norm = "none"`` it is the identity (noise and dropout aside).
* ``norm.act(h, fn)``: the norm layer and the nonlinearity ``fn`` in the run's ``placement``: ``pre``
  is ``fn(N(h))``, ``post`` is ``N(fn(h))``, ``none`` is ``fn(h)``; then dropout with
  ``dropout_placement = "after_activation"``. The input to ``fn`` is what ``track_activations``
  records.

``key`` is a PRNG key for the network's own randomness in training (a fresh one every step, from the
run's seed) and None in evaluation. Logits are cast to float32.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

import jax


class Context(NamedTuple):
    """What the run tells the plugin: one example's shape (channels last), the classes, the dtype the
    network computes in (``jnp.float32`` or ``jnp.bfloat16``; parameters stay float32)."""

    input_shape: tuple[int, ...]
    num_classes: int
    dtype: Any


class Network(NamedTuple):
    """A plugin network: ``init(key) -> params`` and ``apply(params, x, norm, *, train, key) -> logits``.

    ``weights(params)``, if given, lists the weight matrices and kernels in forward order, the last
    being the classifier's: the probes report per layer by it (``grad_norm``, ``weight_norm``). By
    default they are the parameters of two or more dimensions, in the order ``jax.tree_util`` flattens
    them. ``placement_fixed``: the network's own code places its norm layers (bare sites, as the
    adapters of :mod:`bnbench.models.adapters` make), so a spec cannot sweep ``placement``.
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[..., jax.Array]
    weights: Callable[[Any], list[jax.Array]] | None = None
    placement_fixed: bool = False


class Norm(Protocol):
    """The ``norm`` argument of ``apply`` (see the module docstring)."""

    def __call__(self, h: jax.Array) -> jax.Array: ...

    def act(self, h: jax.Array, fn: Callable[[jax.Array], jax.Array]) -> jax.Array: ...
