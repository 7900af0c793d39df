"""The classic worked BN example, computed by the library's own :func:`bnbench.norm.bn.batch_norm`."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from bnbench.norm import bn
from bnbench.norm.settings import BNSettings


class WorkedExample(NamedTuple):
    """Every intermediate of one training-mode BN forward pass on a 10 x 2 batch."""

    x: np.ndarray  # (10, 2) input
    mean: np.ndarray  # (2,) batch mean
    var: np.ndarray  # (2,) biased batch variance
    x_hat: np.ndarray  # (10, 2) normalized input
    y: np.ndarray  # (10, 2) gamma * x_hat + beta
    gamma: float
    beta: float
    epsilon: float


def worked_example(gamma: float = 1.0, beta: float = 0.0, epsilon: float = BNSettings().epsilon) -> WorkedExample:
    """BN of x = [[1, 2], [3, 4], ..., [19, 20]] with scale ``gamma`` and offset ``beta``.

    The mean and variance are read from the running statistics after one update with momentum 0,
    which makes them exactly the batch statistics the forward pass used.
    """
    x = jnp.arange(1.0, 21.0).reshape(10, 2)
    identity, state = bn.init(2)
    x_hat, batch_state = bn.batch_norm(x, identity, state, train=True, momentum=0.0, epsilon=epsilon)
    affine = bn.BNParams(scale=jnp.full((2,), gamma), offset=jnp.full((2,), beta))
    y, _ = bn.batch_norm(x, affine, state, train=True, momentum=0.0, epsilon=epsilon)
    return WorkedExample(
        *(np.asarray(a) for a in (x, batch_state.mean, batch_state.var, x_hat, y)), gamma, beta, epsilon
    )
