"""Student's t distribution in closed form, and the t interval of a mean: every interval here has
integer degrees of freedom, and this keeps scipy, slow to import, out of the command line (`make bench-cli`)."""

from __future__ import annotations

import functools
import math

import numpy as np


def t_central(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with ``df >= 1`` (integer) degrees of freedom, in closed form
    (Abramowitz & Stegun 26.7.3 and 26.7.4)."""
    theta = math.atan(t / math.sqrt(df))
    cos2, term, total = math.cos(theta) ** 2, 1.0, 1.0
    first = 2 if df % 2 else 1  # the series' first power of cos^2
    for k in range(first, df - 1, 2):
        term *= cos2 * k / (k + 1)
        total += term
    if df % 2 == 0:
        return math.sin(theta) * total
    series = math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0
    return 2 / math.pi * (theta + series)


@functools.lru_cache(maxsize=4096)  # a comparison asks the same few (level, pairs) again per group
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (``0.5 < p < 1``) of Student's t with ``df >= 1`` degrees of freedom
    (12.706 for 0.975 and 1), by bisection on :func:`t_central` to double precision."""
    low, high = 0.0, 1.0
    while t_central(high, df) < 2 * p - 1:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if t_central(middle, df) < 2 * p - 1 else (low, middle)
        if high - low <= 1e-15 * high:
            break
    return (low + high) / 2


def t_interval(mean, std, count, bounds: tuple[float, float], alpha: float = 0.05):
    """The ``1 - alpha`` Student-t interval of a mean, clipped to ``bounds``: ``(low, high, clipped)``."""
    counts = np.atleast_1d(np.asarray(count, float))
    quantile = np.array([t_quantile(1 - alpha / 2, int(n) - 1) if n >= 2 else np.nan for n in counts])
    half = (quantile if np.ndim(count) else quantile[0]) * std / np.sqrt(count)
    low, high = mean - half, mean + half
    clipped = (low < bounds[0]) | (high > bounds[1])
    return np.clip(low, *bounds), np.clip(high, *bounds), clipped
