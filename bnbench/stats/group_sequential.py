"""Seeds until decided: a group-sequential design for a spec's paired comparisons.

``bnbench sweep --seeds auto`` trains the grid at the design's looks (seed counts fixed before any run:
the first, then every ``step`` seeds more, up to the maximum) and stops at the first look where every
comparison row is decided: its interval excludes 0 (a direction) or lies within ``±margin`` (no
difference that matters). Looking at the data after every round and stopping when it looks good
inflates a fixed-sample test's error rate; here each look ``k`` spends its own share ``alpha_k`` of the
overall ``alpha`` (a linear spending function, ``alpha_k`` proportional to the seeds the look adds),
and its paired t interval has level ``1 - alpha_k``. The shares sum to ``alpha``, so by the union bound
the chance that some look names a direction for a comparison row with no difference is at most
``alpha``, whatever the stopping rule does; the union bound makes it conservative, the price of a
design that needs no simulation of its boundaries (docs/statistics.md; tests/test_sequential.py
measures both the error rate and the power).
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

from bnbench.stats.comparisons import MIN_PAIRS_FOR_DIRECTION, compare
from bnbench.errors import BnbenchError
from bnbench.options import DEFAULT_MAX_SEEDS

DEFAULT_STEP = 2
ALPHA = 0.05


class DesignError(BnbenchError):
    """A sequential design that cannot be run (too few seeds, nothing to decide)."""


class Design(NamedTuple):
    """The seeds at each look and the level ``alpha_k`` each look spends, and the ``margin`` below which a
    difference does not matter (None: only a direction decides)."""

    looks: tuple[int, ...]
    alphas: tuple[float, ...]
    margin: float | None = None

    def alpha_at(self, seeds: int) -> float | None:
        """The level the look at ``seeds`` seeds spends; None if no look has that many."""
        return dict(zip(self.looks, self.alphas)).get(seeds)

    def to_meta(self) -> dict:
        return {"looks": list(self.looks), "alphas": list(self.alphas), "margin": self.margin, "alpha": sum(self.alphas)}

    @classmethod
    def from_meta(cls, meta: dict) -> Design:
        return cls(tuple(meta["looks"]), tuple(meta["alphas"]), meta["margin"])


def design(first: int, maximum: int = DEFAULT_MAX_SEEDS, *, step: int = DEFAULT_STEP, alpha: float = ALPHA,
           margin: float | None = None) -> Design:
    """Looks at ``first`` seeds (at least :data:`bnbench.stats.comparisons.MIN_PAIRS_FOR_DIRECTION`), then every
    ``step`` seeds, the last at ``maximum``; look ``k`` spends ``alpha * (n_k - n_{k-1}) / maximum``
    (with ``n_0 = 0``). Raises :class:`DesignError` if ``maximum < first``."""
    first = max(first, MIN_PAIRS_FOR_DIRECTION)
    if maximum < first:
        raise DesignError(f"--max-seeds: must be at least {first} (the first look), got {maximum}")
    looks = [*range(first, maximum, step), maximum]
    alphas = [alpha * (n - previous) / maximum for previous, n in zip([0, *looks], looks)]
    return Design(tuple(looks), tuple(alphas), margin)


class Look(NamedTuple):
    """One look's comparisons, each ``((axis, a, b), table)`` (:func:`bnbench.stats.comparisons.compare` at the
    look's level), and how many of their rows are decided (:func:`decided`)."""

    seeds: int
    alpha: float
    tables: list[tuple[tuple[str, str, str], pd.DataFrame]]
    decided_rows: int
    rows: int

    @property
    def decided(self) -> bool:
        return self.decided_rows == self.rows


def decided(table: pd.DataFrame) -> pd.Series:
    """Which rows of a comparison name a direction, or rule out a difference beyond the margin."""
    return table["decision"] != "undecided"


def look(runs: pd.DataFrame, comparisons, plan: Design, metric: str = "test_acc") -> Look:
    """The comparisons of ``runs`` at the look their seed count is; raises :class:`DesignError` if it
    is none of the design's looks."""
    seeds = int(runs["seed"].nunique())
    alpha = plan.alpha_at(seeds)
    if alpha is None:
        raise DesignError(f"{seeds} seeds is not a look of this design ({', '.join(map(str, plan.looks))})")
    tables = [(c, compare(runs, *c, metric=metric, alpha=alpha, margin=plan.margin)) for c in comparisons]
    done = sum(int(decided(t).sum()) for _, t in tables)
    return Look(seeds, alpha, tables, done, sum(len(t) for _, t in tables))
