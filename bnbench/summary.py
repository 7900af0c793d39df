"""Statistics over a sweep's runs: per-group summaries over seeds and paired comparisons.

These are the numbers ``bnbench sweep`` and ``bnbench report`` print; they take a ``runs.csv``
DataFrame (as :func:`bnbench.load_runs` or ``pandas.read_csv`` returns it).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from bnbench.errors import BnbenchError
from bnbench.spec import RUN_FIELDS

CONFIG_COLUMNS = (*RUN_FIELDS, "seed")
# Run fields a spec may leave to be derived from others, in the order they are derived: the data set's
# size from the data set, steps from epochs and the batch size, eval_every from steps.
DERIVED_FIELDS = ("num_samples", "steps", "eval_every")
MIN_PAIRS_FOR_DIRECTION = 3


class SummaryError(BnbenchError):
    """A summary or comparison asked of columns or values that the runs do not have."""


def swept_axes(runs: pd.DataFrame) -> list[str]:
    """The run fields (seed aside) that the grid swept, in field order.

    A field is swept when it takes more than one value in ``runs``, unless it is one of
    :data:`DERIVED_FIELDS` and the other swept fields determine it (``steps`` of a spec that sets
    ``epochs`` and sweeps ``batch_size``; the default ``eval_every`` of a spec that sweeps ``steps``).
    """
    varying = [c for c in RUN_FIELDS if c in runs and runs[c].nunique(dropna=False) > 1]
    axes = [c for c in varying if c not in DERIVED_FIELDS]
    for field in DERIVED_FIELDS:
        if field in varying and not _determined_by(runs, field, axes):
            axes.append(field)
    return [c for c in RUN_FIELDS if c in axes]


def _determined_by(runs: pd.DataFrame, field: str, by: list[str]) -> bool:
    if not by:
        return False
    return bool((runs.groupby(by, dropna=False, observed=True)[field].nunique(dropna=False) <= 1).all())


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range a metric's values can take: [0, 1] for accuracies, [0, inf) for losses and times."""
    if "acc" in metric:
        return 0.0, 1.0
    if "loss" in metric or metric == "wall_s":
        return 0.0, math.inf
    return -math.inf, math.inf


def check_metric(runs: pd.DataFrame, metric: str) -> None:
    """Raises :class:`SummaryError` unless ``metric`` is a numeric column with a value in some run
    that did not diverge."""
    if metric not in runs:
        raise SummaryError(f"--metric: no column {metric!r} in runs.csv")
    if not pd.api.types.is_numeric_dtype(runs[metric]) or pd.api.types.is_bool_dtype(runs[metric]):
        numeric = [c for c in runs if "acc" in c or "loss" in c]
        raise SummaryError(f"--metric: {metric!r} is not a numeric metric; try one of {', '.join(numeric)}")
    if (runs["status"] == "ok").any() and runs[metric].isna().all():
        hint = " (eval_stats did not include it)" if metric.startswith("test_acc_") else ""
        raise SummaryError(f"--metric: no run recorded a value of {metric!r}{hint}")


def _groups(frame: pd.DataFrame, by: Sequence[str]):
    keys = list(by) or [frame.assign(_all=0)["_all"]]
    return frame.groupby(keys, sort=False, dropna=False, observed=True)


def _t_interval(mean, std, count, bounds: tuple[float, float]):
    """The 95% Student-t interval of a mean, clipped to ``bounds``: ``(low, high, clipped)``."""
    from scipy.special import stdtrit  # the Student-t quantile; imported here, where it is used (start-up)

    half = stdtrit(count - 1, 0.975) * std / np.sqrt(count)
    low, high = mean - half, mean + half
    clipped = (low < bounds[0]) | (high > bounds[1])
    return np.clip(low, *bounds), np.clip(high, *bounds), clipped


def summarize(runs: pd.DataFrame, by: Sequence[str] | None = None, metric: str = "test_acc") -> pd.DataFrame:
    """One row per combination of the ``by`` columns (default: :func:`swept_axes`).

    Columns: the ``by`` columns; ``n`` (runs); ``diverged`` (runs with status "diverged"); ``mean``,
    ``std`` (sample, ddof=1), ``ci_low`` and ``ci_high`` (95% Student-t interval of the mean) of
    ``metric`` over the runs that did not diverge; ``std`` and the interval are NaN below 2 runs. The
    interval is clipped to the values the metric can take (:func:`metric_bounds`: an accuracy's to
    [0, 1]), and ``ci_clipped`` says where that happened. Rows keep the order in which combinations
    first appear.
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
    table["ci_low"], table["ci_high"], table["ci_clipped"] = _t_interval(
        table["mean"], table["std"], table["_count"], metric_bounds(metric)
    )
    table = table.drop(columns="_count")
    return table.reset_index(drop=not by)


def _matching(runs: pd.DataFrame, axis: str, value: str) -> pd.Series:
    """The rows whose ``axis`` equals ``value`` as written on the command line (``1e-5`` matches 1e-05)."""
    column = runs[axis]
    if pd.api.types.is_bool_dtype(column):
        return column == (value.lower() == "true")
    if pd.api.types.is_numeric_dtype(column):
        try:
            return column == float(value)
        except ValueError:
            return pd.Series(False, index=runs.index)
    return column.astype(str) == value


def compare(
    runs: pd.DataFrame,
    axis: str,
    a,
    b,
    *,
    metric: str = "test_acc",
    by: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Paired difference ``metric(axis=a) - metric(axis=b)`` over runs equal in every other field.

    Runs pair when every run field but ``axis`` (seed included) is equal; pairs with a diverged run
    are left out. One row per combination of ``by`` (default: the swept axes other than ``axis``):
    ``pairs``; ``mean_diff`` and ``std_diff`` of the differences; the paired Student-t 95% interval
    ``ci_low``/``ci_high`` of the mean difference (NaN below 2 pairs, or when every difference is the
    same, which leaves no spread to estimate it from), clipped to the range a difference of the metric
    can take (``ci_clipped``); ``ci_includes_zero``; and ``verdict``, which names a direction only
    when the interval excludes 0 over at least :data:`MIN_PAIRS_FOR_DIRECTION` pairs (a t interval from
    2 pairs rests on one degree of freedom).

    Raises :class:`SummaryError` if ``axis`` is not a swept axis of ``runs`` or ``a`` or ``b`` is not
    one of its values.
    """
    check_metric(runs, metric)
    if axis not in runs:
        raise SummaryError(f"--compare: no column {axis!r} in runs.csv")
    values = list(dict.fromkeys(runs[axis].astype(str)))
    if axis not in swept_axes(runs):
        raise SummaryError(f"--compare: {axis} was not swept here (every run has {axis}={values[0]}); swept: "
                           f"{', '.join(swept_axes(runs)) or 'nothing'}")
    for value in (a, b):
        if not _matching(runs, axis, str(value)).any():
            raise SummaryError(f"--compare: no run has {axis}={value}; its values are {', '.join(values)}")
    by = [c for c in swept_axes(runs) if c != axis] if by is None else list(by)
    keys = [c for c in CONFIG_COLUMNS if c in runs and c != axis]
    ok = runs[runs["status"] == "ok"]
    left = ok[_matching(ok, axis, str(a))]
    right = ok[_matching(ok, axis, str(b))]
    pairs = left.merge(right, on=keys, suffixes=("_a", "_b"))
    pairs["_diff"] = pairs[f"{metric}_a"] - pairs[f"{metric}_b"]
    low_bound, high_bound = metric_bounds(metric)
    bounds = (low_bound - high_bound, high_bound - low_bound)
    rows = []
    for key, group in _groups(pairs, by):
        diffs = group["_diff"].to_numpy()
        count = len(diffs)
        mean = diffs.mean() if count else np.nan
        std = diffs.std(ddof=1) if count >= 2 else np.nan
        low = high = np.nan
        clipped = False
        if count >= 2 and std > 0:
            low, high, clipped = _t_interval(mean, std, count, bounds)
        labels = dict(zip(by, key if isinstance(key, tuple) else (key,))) if by else {}
        rows.append(
            {
                **labels,
                "pairs": count,
                "mean_diff": mean,
                "std_diff": std,
                "ci_low": low,
                "ci_high": high,
                "ci_clipped": bool(clipped),
                "ci_includes_zero": bool(np.isnan(low) or low <= 0 <= high),
                "verdict": _verdict(axis, a, count, mean, std, low, high),
            }
        )
    columns = [*by, "pairs", "mean_diff", "std_diff", "ci_low", "ci_high", "ci_clipped", "ci_includes_zero", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def _verdict(axis: str, a, count: int, mean: float, std: float, low: float, high: float) -> str:
    if count == 0:
        return "no pairs"
    if count < MIN_PAIRS_FOR_DIRECTION:
        return f"too few pairs for a direction ({count}; needs {MIN_PAIRS_FOR_DIRECTION})"
    if not std > 0:
        return f"all {count} differences equal {mean:+.4g}: no spread to estimate an interval from"
    if low <= 0 <= high:
        return f"no evidence of a difference over {count} pairs (CI includes 0)"
    return f"{axis}={a} {'higher' if mean > 0 else 'lower'} over {count} pairs"
