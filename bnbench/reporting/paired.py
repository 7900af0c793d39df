"""The figure a paired comparison's verdicts rest on (:func:`paired_differences`), drawn as the other
figures are (:mod:`bnbench.reporting.figures` writes it; :mod:`bnbench.reporting.figure_layout`)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bnbench.reporting.figure_layout import axis_label, finish_figure, gid, legend_name, place_legend  # noqa: E402


def paired_differences(comparison, metric: str, alpha: float, margin: float | None, path: Path) -> Path:
    """One stated comparison's paired differences (:class:`bnbench.reporting.model.Comparison`), what its
    verdicts rest on: per group, the mean difference over its pairs with its paired-t interval at
    ``1 - alpha``, labelled with its verdict (a group without pairs has no row in the comparison's table);
    the zero line; ``±margin`` shaded where one is set."""
    rows = comparison.table.to_dict("records")
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.45 * len(rows)))
    labels = []
    for y, row in zip(range(len(rows) - 1, -1, -1), rows):
        group = {axis: row[axis] for axis in comparison.by}
        labels.append(f"{legend_name(group) or 'all runs'} ({row['pairs']} pairs)")
        no_interval = math.isnan(row["ci_low"])  # below 2 pairs, or no spread: the mean alone
        spread = None if no_interval else [[row["mean_diff"] - row["ci_low"]], [row["ci_high"] - row["mean_diff"]]]
        bars = ax.errorbar([row["mean_diff"]], [y], xerr=spread, fmt="o", color="C0", capsize=4)
        bars.lines[0].set_gid(gid(f"paired_{metric}", {comparison.axis: f"{comparison.a}-{comparison.b}", **group}))
        ax.annotate(row["verdict"], xy=(1.02, y), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    ax.axvline(0.0, color="black", linewidth=1, linestyle="--")
    if margin is not None:
        ax.axvspan(-margin, margin, color="grey", alpha=0.15, label=f"within ±{margin:g}: no difference that matters")
        place_legend(ax)
    ax.set_yticks(range(len(rows) - 1, -1, -1), labels)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(f"{axis_label(metric)}: {comparison.axis}={comparison.a} minus {comparison.b}, runs paired by seed")
    ax.grid(alpha=0.3, axis="x")
    title = (f"paired differences in {axis_label(metric)}, {comparison.a} − {comparison.b}: mean and "
             f"{100 * (1 - alpha):.4g}% CI (paired t) over pairs")
    return finish_figure(fig, path, title, [])


def paired_stem(comparison) -> str:
    """The file name (without suffix) of a comparison's paired-difference figure:
    ``paired_<axis>_<a>_vs_<b>``, any character but letters, digits, ``.``, ``-`` and ``_`` as ``-``."""
    text = f"paired_{comparison.axis}_{comparison.a}_vs_{comparison.b}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)
