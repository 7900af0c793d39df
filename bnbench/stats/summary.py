"""Per-group summaries of a sweep's runs over seeds: which fields were swept, and each group's mean,
spread and 95% interval of a metric or probe value.

These are the numbers ``bnbench sweep`` and ``bnbench report`` print; they take a ``runs.csv``
DataFrame (as :func:`bnbench.load_runs` or ``pandas.read_csv`` returns it). Paired comparisons are
:mod:`bnbench.stats.comparisons`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from bnbench.training import context
from bnbench.results import metrics
from bnbench.experiment.fields import ARGUMENT_FIELDS, DERIVED_FIELDS, RUN_FIELDS
from bnbench.errors import BnbenchError
from bnbench.experiment.runs import argument_key
from bnbench.stats.student_t import t_interval

# The configuration's columns, a field of keyword arguments aside: its "model_args.NAME" columns hold it.
CONFIG_COLUMNS = (*(f for f in RUN_FIELDS if f not in ARGUMENT_FIELDS), "seed")


def configuration_columns(runs: pd.DataFrame) -> list[str]:
    """The columns of ``runs`` that configure a run: the run fields, its keyword-argument columns
    (``model_args.NAME``), the seed."""
    return [c for c in (*CONFIG_COLUMNS, *(c for c in runs.columns if argument_key(c))) if c in runs]


class SummaryError(BnbenchError):
    """A summary or comparison asked of columns or values that the runs do not have."""


def swept_axes(runs: pd.DataFrame) -> list[str]:
    """The run fields (seed aside) that the grid swept, in field order, then the execution-context
    columns in which runs of one configuration differ (:func:`context_axes`).

    A field is swept when it takes more than one value in ``runs``, unless it is one of the fields a
    spec may leave to be derived (:data:`bnbench.experiment.fields.DERIVED_FIELDS`: the data set's size, a model's
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
    """The execution-context columns (:mod:`bnbench.training.context`) that the swept ``axes`` do not determine:
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
    # A run's probe values are NaN from its divergence step on (bnbench.training.outcomes.summarize_output).
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


def grouped(frame: pd.DataFrame, by: Sequence[str]):
    """``frame`` grouped by the ``by`` columns in the order their values first appear, NaN a value
    like any other; one group of every row where ``by`` is empty."""
    keys = list(by) or [frame.assign(_all=0)["_all"]]
    return frame.groupby(keys, sort=False, dropna=False, observed=True)


def summarize(runs: pd.DataFrame, by: Sequence[str] | None = None, metric: str = "test_acc") -> pd.DataFrame:
    """One row per combination of the ``by`` columns (default: :func:`swept_axes`).

    Columns: the ``by`` columns; ``n`` (runs); ``diverged`` (runs with status "diverged"); ``mean``,
    ``std`` (sample, ddof=1), ``ci_low`` and ``ci_high`` (95% Student-t interval of the mean) of
    ``metric`` over the runs that did not diverge; ``std`` is NaN below 2 runs, the interval also when
    every run gave the same value (no spread to estimate it from). The interval is clipped to the
    values the metric can take (:func:`bnbench.results.metrics.bounds`: an accuracy's to [0, 1]), and ``ci_clipped``
    says where that happened. Rows keep the order in which combinations first appear.
    """
    by = swept_axes(runs) if by is None else list(by)
    ok = runs["status"] == "ok"
    frame = runs.assign(_value=runs[metric].where(ok), _diverged=(~ok).astype(int))
    groups = grouped(frame, by)
    table = groups.agg(
        n=("status", "size"),
        diverged=("_diverged", "sum"),
        mean=("_value", "mean"),
        std=("_value", "std"),
        _count=("_value", "count"),
    )
    # Runs that all gave the same value (accuracies are multiples of 1/test size) leave no spread to
    # estimate an interval from: a zero-width "95% interval" would claim certainty the data lack.
    spread = table["std"].where(table["std"] > 0)
    table["ci_low"], table["ci_high"], table["ci_clipped"] = t_interval(
        table["mean"], spread, table["_count"], metrics.bounds(metric)
    )
    table = table.drop(columns="_count")
    return table.reset_index(drop=not by)
