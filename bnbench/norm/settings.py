"""BN's traced settings, declared once: :class:`BNSettings`.

Free of JAX, so that the run fields (:mod:`bnbench.experiment.fields`) take their defaults from here
while ``bnbench --help`` imports no JAX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import jax


class BNSettings(NamedTuple):
    """The settings of :func:`bnbench.norm.bn.batch_norm` that may be traced scalars, so that runs
    differing only in them share one compilation. Each is the run field of its name; a run builds them
    once (:attr:`bnbench.training.signature.HParams.bn_settings`) and its norm layers pass them on whole.

    ``momentum``: the EMA decay of the running statistics, in the flax/keras convention::

        running = momentum * running + (1 - momentum) * batch

    so ``0.99`` keeps 99% of the old value per step; PyTorch's ``momentum`` weighs the batch instead
    (PyTorch ``0.1`` is ``0.9`` here). ``epsilon``: added to the variance before the square root (also
    GroupNorm's and LayerNorm's). ``renorm_rmax`` (>= 1) and ``renorm_dmax`` (>= 0): Batch
    Renormalization's fixed bounds on ``r`` and ``d``.
    """

    momentum: float | jax.Array = 0.99
    epsilon: float | jax.Array = 1e-5
    renorm_rmax: float | jax.Array = 3.0
    renorm_dmax: float | jax.Array = 5.0
