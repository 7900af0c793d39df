"""Statistics over a sweep's runs: per-group summaries over seeds and paired comparisons.

These are the numbers ``bnbench sweep`` and ``bnbench report`` print; they take a ``runs.csv``
DataFrame (as :func:`bnbench.load_runs` or ``pandas.read_csv`` returns it).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from bnbench import context, metrics
from bnbench.config import ARGUMENT_FIELDS, DERIVED_FIELDS, RUN_FIELDS
from bnbench.errors import BnbenchError
from bnbench.runs import argument_key

# The configuration's columns, a field of keyword arguments aside: its "model_args.NAME" columns hold it.
CONFIG_COLUMNS = (*(f for f in RUN_FIELDS if f not in ARGUMENT_FIELDS), "seed")


def configuration_columns(runs: pd.DataFrame) -> list[str]:
    """The columns of ``runs`` that configure a run: the run fields, its keyword-argument columns
    (``model_args.NAME``), the seed."""
    return [c for c in (*CONFIG_COLUMNS, *(c for c in runs.columns if argument_key(c))) if c in runs]
MIN_PAIRS_FOR_DIRECTION = 3


class SummaryError(BnbenchError):
    """A summary or comparison asked of columns or values that the runs do not have."""


def swept_axes(runs: pd.DataFrame) -> list[str]:
    """The run fields (seed aside) that the grid swept, in field order, then the execution-context
    columns in which runs of one configuration differ (:func:`context_axes`).

    A field is swept when it takes more than one value in ``runs``, unless it is one of the fields a
    spec may leave to be derived (:data:`bnbench.config.DERIVED_FIELDS`: the data set's size, a model's
    widths and depth, steps from epochs, eval_every from steps) and the other swept fields determine it
    (``steps`` of a spec that sets ``epochs`` and sweeps ``batch_size``; the default ``eval_every`` of a
    spec that sweeps ``steps``).
    """
    fields = [c for c in configuration_columns(runs) if c != "seed"]
    varying = [c for c in fields if runs[c].nunique(dropna=False) > 1]
    axes = [c for c in varying if c not in DERIVED_FIELDS]
    for field in DERIVED_FIELDS:
        if field in varying and not _determined_by(runs, field, axes):
            axes.append(field)
    axes = [c for c in fields if c in axes]
    return axes + context_axes(runs, axes)


def context_axes(runs: pd.DataFrame, axes: list[str]) -> list[str]:
    """The execution-context columns (:mod:`bnbench.context`) that the swept ``axes`` do not determine:
    runs of one configuration executed in several contexts (folders merged with ``--mixed-context``),
    whose numbers are then shown apart. One sweep's context varies only with its programs (a conv net
    stepwise beside a vmapped MLP), which the axes determine."""
    varying = [c for c in context.COLUMNS if c in runs and runs[c].nunique(dropna=False) > 1]
    return [c for c in varying if not _determined_by(runs, c, axes)]


def _determined_by(runs: pd.DataFrame, field: str, by: list[str]) -> bool:
    if not by:
        return False
    return bool((runs.groupby(by, dropna=False, observed=True)[field].nunique(dropna=False) <= 1).all())


def summarize_probe(
    runs: pd.DataFrame, probes: pd.DataFrame, probe: str, step: int | None = None, by: Sequence[str] | None = None
) -> tuple[pd.DataFrame, int]:
    """The probe value ``probe`` at ``step`` (default: the last step probed) per group of ``by`` (default:
    the swept axes) and layer, as :func:`summarize` summarizes a metric; returns the table and the step.

    Runs that diverged at or before ``step`` count as diverged. Raises :class:`SummaryError` if no run
    recorded ``probe`` or none was probed at ``step``.
    """
    names = sorted(set(probes["probe"].astype(str)))
    if probe not in names:
        raise SummaryError(f"--probe: no run recorded {probe!r}; recorded: {', '.join(names) or 'no probe'}")
    chosen = probes[probes["probe"].astype(str) == probe]
    steps = sorted(set(chosen["step"]))
    step = steps[-1] if step is None else step
    if step not in steps:
        raise SummaryError(f"--step: {probe} was recorded at steps {', '.join(map(str, steps))}, not {step}")
    by = swept_axes(runs) if by is None else list(by)
    at_step = chosen[chosen["step"] == step][["run_id", "layer", "value"]].rename(columns={"value": probe})
    frame = runs[["run_id", "status", "diverged_step", *by]].merge(at_step, on="run_id")
    # A run's probe values are NaN from its divergence step on (bnbench.outcomes.summarize_output).
    diverged = frame["diverged_step"].notna() & (frame["diverged_step"] <= step)
    frame["status"] = np.where(diverged, "diverged", "ok")
    return summarize(frame, [*by, "layer"], probe), step


def check_metric(runs: pd.DataFrame, metric: str) -> None:
    """Raises :class:`SummaryError` unless ``metric`` is a numeric column with a value in some run
    that did not diverge."""
    if metric not in runs:
        raise SummaryError(f"--metric: no column {metric!r} in runs.csv")
    if not pd.api.types.is_numeric_dtype(runs[metric]) or pd.api.types.is_bool_dtype(runs[metric]):
        numeric = [c for c in runs if c in metrics.RUN_METRICS]
        raise SummaryError(f"--metric: {metric!r} is not a numeric metric; try one of {', '.join(numeric)}")
    if (runs["status"] == "ok").any() and runs[metric].isna().all():
        hint = " (eval_stats did not include it)" if metric.startswith("test_acc_") else ""
        raise SummaryError(f"--metric: no run recorded a value of {metric!r}{hint}")


def _groups(frame: pd.DataFrame, by: Sequence[str]):
    keys = list(by) or [frame.assign(_all=0)["_all"]]
    return frame.groupby(keys, sort=False, dropna=False, observed=True)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df >= 1`` degrees of freedom (12.706 for 1).

    Bisection on the closed-form ``P(|T| <= t)`` for integer degrees of freedom (Abramowitz & Stegun
    26.7.3 and 26.7.4), to double precision: every interval here has integer degrees of freedom, and
    this keeps scipy (a second of import) out of the command line.
    """

    def central(t: float) -> float:
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

    low, high = 0.0, 1.0
    while central(high) < 0.95:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if central(middle) < 0.95 else (low, middle)
        if high - low <= 1e-15 * high:
            break
    return (low + high) / 2


def _t_interval(mean, std, count, bounds: tuple[float, float]):
    """The 95% Student-t interval of a mean, clipped to ``bounds``: ``(low, high, clipped)``."""
    counts = np.atleast_1d(np.asarray(count, float))
    quantile = np.array([t_quantile_975(int(n) - 1) if n >= 2 else np.nan for n in counts])
    half = (quantile if np.ndim(count) else quantile[0]) * std / np.sqrt(count)
    low, high = mean - half, mean + half
    clipped = (low < bounds[0]) | (high > bounds[1])
    return np.clip(low, *bounds), np.clip(high, *bounds), clipped


def summarize(runs: pd.DataFrame, by: Sequence[str] | None = None, metric: str = "test_acc") -> pd.DataFrame:
    """One row per combination of the ``by`` columns (default: :func:`swept_axes`).

    Columns: the ``by`` columns; ``n`` (runs); ``diverged`` (runs with status "diverged"); ``mean``,
    ``std`` (sample, ddof=1), ``ci_low`` and ``ci_high`` (95% Student-t interval of the mean) of
    ``metric`` over the runs that did not diverge; ``std`` is NaN below 2 runs, the interval also when
    every run gave the same value (no spread to estimate it from). The interval is clipped to the
    values the metric can take (:func:`bnbench.metrics.bounds`: an accuracy's to [0, 1]), and ``ci_clipped``
    says where that happened. Rows keep the order in which combinations first appear.
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
    # Runs that all gave the same value (accuracies are multiples of 1/test size) leave no spread to
    # estimate an interval from: a zero-width "95% interval" would claim certainty the data lack.
    spread = table["std"].where(table["std"] > 0)
    table["ci_low"], table["ci_high"], table["ci_clipped"] = _t_interval(
        table["mean"], spread, table["_count"], metrics.bounds(metric)
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
    keys = [c for c in (*configuration_columns(runs), *context_axes(runs, [])) if c != axis]
    ok = runs[runs["status"] == "ok"]
    left = ok[_matching(ok, axis, str(a))]
    right = ok[_matching(ok, axis, str(b))]
    pairs = left.merge(right, on=keys, suffixes=("_a", "_b"))
    pairs["_diff"] = pairs[f"{metric}_a"] - pairs[f"{metric}_b"]
    low_bound, high_bound = metrics.bounds(metric)
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
