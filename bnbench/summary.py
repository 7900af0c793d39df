"""Statistics over a sweep's runs: per-group summaries over seeds and paired comparisons.

These are the numbers ``bnbench sweep`` and ``bnbench report`` print; they take a ``runs.csv``
DataFrame (as :func:`bnbench.load_runs` or ``pandas.read_csv`` returns it).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from bnbench.spec import RUN_FIELDS

CONFIG_COLUMNS = (*RUN_FIELDS, "seed")


def swept_axes(runs: pd.DataFrame) -> list[str]:
    """The run fields (seed aside) that take more than one value in ``runs``, in field order."""
    return [c for c in RUN_FIELDS if c in runs and runs[c].nunique(dropna=False) > 1]


def _groups(frame: pd.DataFrame, by: Sequence[str]):
    keys = list(by) or [frame.assign(_all=0)["_all"]]
    return frame.groupby(keys, sort=False, dropna=False, observed=True)


def summarize(runs: pd.DataFrame, by: Sequence[str] | None = None, metric: str = "test_acc") -> pd.DataFrame:
    """One row per combination of the ``by`` columns (default: :func:`swept_axes`).

    Columns: the ``by`` columns; ``n`` (runs); ``diverged`` (runs with status "diverged"); ``mean``,
    ``std`` (sample, ddof=1), ``ci_low`` and ``ci_high`` (95% Student-t interval of the mean) of
    ``metric`` over the runs that did not diverge; ``std`` and the interval are NaN below 2 runs.
    Rows keep the order in which combinations first appear.
    """
    by = swept_axes(runs) if by is None else list(by)
    ok = runs["status"] == "ok"
    frame = runs.assign(_value=runs[metric].where(ok), _diverged=(~ok).astype(int))
    grouped = _groups(frame, by)
    table = grouped.agg(
        n=("status", "size"),
        diverged=("_diverged", "sum"),
        mean=("_value", "mean"),
        std=("_value", "std"),
        _count=("_value", "count"),
    )
    half = stats.t.ppf(0.975, table["_count"] - 1) * table["std"] / np.sqrt(table["_count"])
    table["ci_low"], table["ci_high"] = table["mean"] - half, table["mean"] + half
    table = table.drop(columns="_count")
    return table.reset_index(drop=not by)


def compare(
    runs: pd.DataFrame,
    axis: str,
    a,
    b,
    *,
    metric: str = "test_acc",
    by: Sequence[str] | None = None,
    resamples: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired difference ``metric(axis=a) - metric(axis=b)`` over runs equal in every other field.

    Runs pair when every run field but ``axis`` (seed included) is equal; pairs with a diverged run
    are left out. One row per combination of ``by`` (default: the swept axes other than ``axis``):
    ``pairs``, ``mean_diff``, and a percentile-bootstrap 95% interval ``ci_low``/``ci_high`` of the
    mean difference (``resamples`` resamples of the pairs, seeded; NaN below 2 pairs), and
    ``ci_includes_zero``.
    """
    by = [c for c in swept_axes(runs) if c != axis] if by is None else list(by)
    keys = [c for c in CONFIG_COLUMNS if c in runs and c != axis]
    ok = runs[runs["status"] == "ok"]
    left = ok[ok[axis].astype(str) == str(a)]
    right = ok[ok[axis].astype(str) == str(b)]
    pairs = left.merge(right, on=keys, suffixes=("_a", "_b"))
    pairs["_diff"] = pairs[f"{metric}_a"] - pairs[f"{metric}_b"]
    rng = np.random.default_rng(seed)
    rows = []
    for key, group in _groups(pairs, by):
        diffs = group["_diff"].to_numpy()
        low = high = np.nan
        if len(diffs) >= 2:
            means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
            low, high = np.percentile(means, [2.5, 97.5])
        labels = dict(zip(by, key if isinstance(key, tuple) else (key,))) if by else {}
        rows.append(
            {
                **labels,
                "pairs": len(diffs),
                "mean_diff": diffs.mean() if len(diffs) else np.nan,
                "ci_low": low,
                "ci_high": high,
                "ci_includes_zero": bool(low <= 0 <= high) if len(diffs) >= 2 else True,
            }
        )
    return pd.DataFrame(rows, columns=[*by, "pairs", "mean_diff", "ci_low", "ci_high", "ci_includes_zero"])
