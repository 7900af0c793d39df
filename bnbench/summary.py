"""Aggregating a sweep's runs over seeds, as the console summary shows them."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

METRICS = ("test_acc", "final_train_loss")


def summarize(runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """One row per combination of the ``by`` columns (all runs together if empty).

    Columns: the ``by`` columns, ``n`` (runs), ``diverged`` (runs with status "diverged"), and for each
    metric ``<metric>_mean`` and ``<metric>_std`` (sample standard deviation, ddof=1; NaN for a single
    run) over the runs that did not diverge. Rows keep the order in which combinations first appear.
    """
    ok = runs["status"] == "ok"
    frame = runs.assign(_all=0, _diverged=(~ok).astype(int))
    for m in metrics:
        frame[m] = frame[m].where(ok)
    keys = list(by) or ["_all"]
    grouped = frame.groupby(keys, sort=False, dropna=False)
    table = grouped.agg(n=("status", "size"), diverged=("_diverged", "sum"))
    for m in metrics:
        table[f"{m}_mean"] = grouped[m].mean()
        table[f"{m}_std"] = grouped[m].std(ddof=1)
    table = table.reset_index()
    return table.drop(columns="_all") if not by else table
