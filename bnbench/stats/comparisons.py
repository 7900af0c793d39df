"""Paired comparisons of a sweep's runs: the difference of a metric between two values of an axis
(or two folders) over runs equal in every other field, its interval, the difference it resolves, the
pairs an undecided one needs, and a verdict that names a direction only where the data support one.

They take a ``runs.csv`` DataFrame (as :func:`bnbench.load_runs` returns it), as
:mod:`bnbench.stats.summary` does.
"""

from __future__ import annotations

import math
import statistics
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from bnbench.training import context
from bnbench.results import metrics
from bnbench.options import MOST_PAIRS
from bnbench.stats.student_t import t_central, t_interval, t_quantile
from bnbench.stats.summary import SummaryError, check_metric, configuration_columns, context_axes, grouped, swept_axes

MIN_PAIRS_FOR_DIRECTION = 3


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


COMPARE_COLUMNS = ("pairs", "mean_diff", "std_diff", "ci_low", "ci_high", "ci_clipped", "ci_includes_zero",
                   "resolvable_diff", "pairs_needed", "decision", "verdict")


def compare(
    runs: pd.DataFrame,
    axis: str,
    a,
    b,
    *,
    metric: str = "test_acc",
    by: Sequence[str] | None = None,
    alpha: float = 0.05,
    margin: float | None = None,
) -> pd.DataFrame:
    """Paired difference ``metric(axis=a) - metric(axis=b)`` over runs equal in every other field.

    Runs pair when every run field but ``axis`` (seed included) is equal; pairs with a diverged run
    are left out. One row per combination of ``by`` (default: the swept axes other than ``axis``):
    ``pairs``; ``mean_diff`` and ``std_diff`` of the differences; the paired Student-t ``1 - alpha``
    interval ``ci_low``/``ci_high`` of the mean difference (NaN below 2 pairs, or when every difference
    is the same, which leaves no spread to estimate it from), clipped to the range a difference of the
    metric can take (``ci_clipped``); ``ci_includes_zero``; the power columns ``resolvable_diff`` (the
    interval's half-width: the smallest mean difference it would tell from 0 at this spread) and
    ``pairs_needed`` (where the interval includes 0: an estimate, from the observed mean and spread, of
    the pairs whose interval would exclude 0, :func:`pairs_needed`); ``decision``, which names a
    direction only when the interval excludes 0 over at least :data:`MIN_PAIRS_FOR_DIRECTION` pairs (a
    t interval from 2 pairs rests on one degree of freedom), or, given a ``margin``, says that the
    data rule out a difference larger than it when the interval lies within ``±margin``, in one word:
    ``higher``, ``lower`` (``a`` than ``b``), ``within_margin`` or ``undecided``; and ``verdict``, the
    same in the words the command line and the page show (:func:`verdict`: ``pre higher``,
    ``undecided``, ...).

    Raises :class:`SummaryError` if ``axis`` is not a swept axis of ``runs`` or ``a`` or ``b`` is not
    one of its values.
    """
    by = [c for c in swept_axes(runs) if c != axis] if by is None else list(by)
    return compare_pairs(paired(runs, axis, a, b, metric), by, (a, b), metric, alpha=alpha, margin=margin)


class FolderComparison(NamedTuple):
    """Two folders' runs side by side (:func:`compare_folders`): ``runs``, both folders' runs with a
    ``folder`` column; ``differing``, the configuration and context columns that tell the folders
    apart, each with both sides' values; ``by`` and ``table``, the paired comparison per group;
    ``unmatched``, why runs of one folder found no partner in the other."""

    runs: pd.DataFrame
    differing: dict[str, tuple[str, str]]
    by: list[str]
    table: pd.DataFrame
    unmatched: list[str]


def compare_folders(first: pd.DataFrame, second: pd.DataFrame, names: tuple[str, str], metric: str = "test_acc",
                    *, alpha: float = 0.05) -> FolderComparison:
    """Pairs the runs of two folders (two versions of a model, before and after a change) whose
    configurations match in every field but those that tell the folders apart, and the seed too, and
    compares ``metric`` of ``names[0]`` minus ``names[1]`` as :func:`compare` does.

    A field tells the folders apart where each folder's runs share one value of it and the values
    differ (a model's file, a learning rate), and so does an execution-context column
    (:mod:`bnbench.training.context`: versions, device); the other fields match runs, and values found in one
    folder only are reported in ``unmatched``.
    Raises :class:`SummaryError` if no run of one folder matches a run of the other.
    """
    for runs_of_one in (first, second):
        check_metric(runs_of_one, metric)
    runs = pd.concat([first.assign(folder=names[0]), second.assign(folder=names[1])], ignore_index=True)
    columns = [c for c in configuration_columns(runs) if c in first and c in second]
    values = {c: (_texts(first[c]), _texts(second[c])) for c in [*columns, *context.COLUMNS] if c in first and c in second}
    differing = {c: (", ".join(a), ", ".join(b)) for c, (a, b) in values.items()
                 if a != b and (c in context.COLUMNS or c != "seed" and len(a) == len(b) == 1)}
    keys = [c for c in columns if c not in differing]
    ok = runs[runs["status"] == "ok"]
    pairs = ok[ok["folder"] == names[0]].merge(ok[ok["folder"] == names[1]], on=keys, suffixes=("_a", "_b"))
    unmatched = _unmatched(values, keys, names)
    if pairs.empty:
        but = f" but {', '.join(differing)}" if differing else ""
        raise SummaryError(f"no run of {names[0]} matches one of {names[1]} in every field{but} and the seed"
                           + (f"; {unmatched[0]}" if unmatched else ""))
    pairs = pairs.assign(_diff=pairs[f"{metric}_a"] - pairs[f"{metric}_b"])
    by = [c for c in swept_axes(runs) if c in keys and c != "seed"]
    return FolderComparison(runs, differing, by, compare_pairs(pairs, by, names, metric, alpha=alpha), unmatched)


def _texts(column: pd.Series) -> list[str]:
    return sorted(set(column.astype(str)))


def _unmatched(values: dict[str, tuple[list[str], list[str]]], keys: list[str], names: tuple[str, str]) -> list[str]:
    """Values of the matching fields that only one folder's runs have."""
    notes = []
    for column in keys:
        a, b = values[column]
        for name, only in ((names[0], [v for v in a if v not in b]), (names[1], [v for v in b if v not in a])):
            if only:
                notes.append(f"only {name} has {column}={', '.join(only)}: those runs have no partner")
    return notes


def compare_pairs(pairs: pd.DataFrame, by: list[str], sides: tuple, metric: str, *, alpha: float = 0.05,
                  margin: float | None = None) -> pd.DataFrame:
    """:func:`compare`'s table of ``pairs`` (a ``_diff`` column, one row per pair), per group of ``by``;
    ``sides`` names the two sides ``(a, b)`` the differences are of, as the verdicts say them."""
    low_bound, high_bound = metrics.bounds(metric)
    bounds = (low_bound - high_bound, high_bound - low_bound)
    rows = []
    for key, group in grouped(pairs, by):
        labels = dict(zip(by, key if isinstance(key, tuple) else (key,))) if by else {}
        rows.append({**labels, **_paired_row(group["_diff"].to_numpy(), bounds, alpha)})
        rows[-1]["decision"] = _decision(rows[-1], margin)
        rows[-1]["verdict"] = verdict(rows[-1], *sides, margin)
    return pd.DataFrame(rows, columns=[*by, *COMPARE_COLUMNS])


def paired(runs: pd.DataFrame, axis: str, a, b, metric: str = "test_acc") -> pd.DataFrame:
    """The pairs of runs that :func:`compare` compares, one row each: the other fields' columns, the
    ``_a`` and ``_b`` columns of both runs, and ``_diff`` (``metric`` of ``a`` minus ``b``)."""
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
    keys = [c for c in (*configuration_columns(runs), *context_axes(runs, [])) if c != axis]
    ok = runs[runs["status"] == "ok"]
    pairs = ok[_matching(ok, axis, str(a))].merge(ok[_matching(ok, axis, str(b))], on=keys, suffixes=("_a", "_b"))
    if "trains_as_a" in pairs:  # one training recorded under both sides is no evidence of a difference
        pairs = pairs[pairs["trains_as_a"].isna() | (pairs["trains_as_a"] != pairs["trains_as_b"])]
    return pairs.assign(_diff=pairs[f"{metric}_a"] - pairs[f"{metric}_b"])


def _paired_row(diffs: np.ndarray, bounds: tuple[float, float], alpha: float) -> dict:
    count = len(diffs)
    mean = diffs.mean() if count else np.nan
    std = diffs.std(ddof=1) if count >= 2 else np.nan
    low = high = half = np.nan
    clipped = False
    if count >= 2 and std > 0:
        low, high, clipped = t_interval(mean, std, count, bounds, alpha)
        half = t_quantile(1 - alpha / 2, count - 1) * std / math.sqrt(count)
    includes_zero = bool(np.isnan(low) or low <= 0 <= high)
    return {
        "pairs": count, "mean_diff": mean, "std_diff": std, "ci_low": low, "ci_high": high,
        "ci_clipped": bool(clipped), "ci_includes_zero": includes_zero, "resolvable_diff": half,
        "pairs_needed": pairs_needed(mean, std, alpha) if includes_zero and not np.isnan(half) else np.nan,
    }


def pairs_needed(mean: float, std: float, alpha: float = 0.05) -> float:
    """An estimate of the pairs whose paired t interval (level ``1 - alpha``) would exclude 0, were
    the mean difference and its spread what was observed: the smallest ``n >= 2`` with
    ``t(1 - alpha/2, n - 1) * std / sqrt(n) < |mean|``; ``inf`` for a zero mean or beyond
    :data:`MOST_PAIRS`. An estimate only: the observed difference is itself uncertain (docs/statistics.md).
    """
    if not std > 0 or mean == 0:
        return math.inf

    def resolves(n: int) -> bool:  # the half-width falls as n grows: bisect for the first n
        return t_central(abs(mean) * math.sqrt(n) / std, n - 1) > 1 - alpha

    # The normal quantile's answer is a lower bound (t's quantile is larger); the answer lies within
    # a few doublings of it, which keeps each series short.
    low = max(1, math.floor((statistics.NormalDist().inv_cdf(1 - alpha / 2) * std / abs(mean)) ** 2))
    if low > MOST_PAIRS:
        return math.inf
    high = low + 1
    while not resolves(high):
        low, high = high, 2 * high
        if low > MOST_PAIRS:
            return math.inf
    while high - low > 1:  # not resolves(low) (or low is the bound), resolves(high)
        middle = (low + high) // 2
        low, high = (low, middle) if resolves(middle) else (middle, high)
    return float(high)


def _decision(row: dict, margin: float | None) -> str:
    if row["pairs"] < MIN_PAIRS_FOR_DIRECTION or np.isnan(row["ci_low"]):
        return "undecided"
    if not row["ci_includes_zero"]:
        return "higher" if row["mean_diff"] > 0 else "lower"
    if margin is not None and -margin < row["ci_low"] and row["ci_high"] < margin:
        return "within_margin"
    return "undecided"


def verdict(row: dict, a, b, margin: float | None = None) -> str:
    """A comparison row's verdict in words, the one wording of a verdict: the ``verdict`` column, the
    terminal's tables and the HTML page all show this text. ``A higher`` or ``A lower`` (than ``b``)
    where the row names a direction; ``A ≈ B (within ±D)`` where its interval lies within the margin;
    else ``undecided``, with what keeps the interval from counting in parentheses (no pairs, fewer
    than :data:`MIN_PAIRS_FOR_DIRECTION`, or no spread to estimate it from)."""
    count, decision = row["pairs"], row["decision"]
    if decision in ("higher", "lower"):
        return f"{a} {decision}"
    if decision == "within_margin":
        return f"{a} ≈ {b} (within ±{margin:g})"
    if count == 0:
        return "undecided (no pairs)"
    if count < MIN_PAIRS_FOR_DIRECTION:
        return f"undecided ({count} pairs; needs {MIN_PAIRS_FOR_DIRECTION})"
    if not row["std_diff"] > 0:
        return f"undecided (all {count} differences equal {row['mean_diff']:+.4g}: no spread)"
    return "undecided"
