"""The report's text cells: a :class:`bnbench.reporting.model.Report`'s tables and verdicts as plain
strings, the same in the terminal (:mod:`bnbench.cli.terminal`) and on the page
(:mod:`bnbench.reporting.page`).

Every function here turns data into text; none computes a statistic or knows how the text is shown.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bnbench import options
from bnbench.results import metrics

if TYPE_CHECKING:
    import pandas as pd

    from bnbench.reporting.model import Report

# The footnote of an interval cell that ends in "*" (clipped, see ``ci_clipped``).
CLIPPED_NOTE = "* interval clipped to the range the metric can take"


def plural(count: int, noun: str) -> str:
    """``1 run``, ``2 runs``: a count and its noun, the noun plural unless the count is 1."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def number(value, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; ``—`` for None or NaN (nothing to show)."""
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    return number(mean) if math.isnan(std) else f"{number(mean)} ± {number(std)}"


def _interval(low: float, high: float, clipped: bool) -> str:
    return "—" if math.isnan(low) else f"[{number(low)}, {number(high)}]" + ("*" if clipped else "")


def summary_cells(table: pd.DataFrame, by: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a :func:`bnbench.stats.summary.summarize` table."""
    header = [*by, "n", "diverged", "mean ± std", "95% CI"]
    rows = [
        [
            *(str(row[c]) for c in by),
            str(row["n"]),
            str(row["diverged"]),
            _mean_std(row["mean"], row["std"]),
            "no spread" if row["std"] == 0 else _interval(row["ci_low"], row["ci_high"], row.get("ci_clipped", False)),
        ]
        for row in table.to_dict("records")
    ]
    return header, rows


def compare_cells(table: pd.DataFrame, by: list[str], a: str, b: str, alpha: float = 0.05) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a :func:`bnbench.stats.comparisons.compare` table."""
    level = f"{100 * (1 - alpha):.4g}%"
    mean = f"mean {a} − {b}"  # the table's title names both sides: long names need not widen the column
    header = [*by, "pairs", mean if len(mean) <= 16 else "mean diff", f"{level} CI (paired t)", "resolves", "verdict"]
    rows = [
        [
            *(str(row[c]) for c in by),
            str(row["pairs"]),
            number(row["mean_diff"]),
            _interval(row["ci_low"], row["ci_high"], row["ci_clipped"]),
            "—" if math.isnan(row["resolvable_diff"]) else f"±{number(row['resolvable_diff'])}",
            row["verdict"],  # the one wording (bnbench.stats.comparisons.verdict), as in the API's tables
        ]
        for row in table.to_dict("records")
    ]
    return header, rows


def _needed(row: dict) -> str:
    needed = row["pairs_needed"]
    if math.isnan(needed):
        return ""
    if math.isinf(needed):
        return f"; more than {options.MOST_PAIRS} pairs would be needed to resolve a difference this small"
    return f"; ~{needed:.0f} pairs would resolve a difference this size (an estimate)"


def verdicts(result: Report) -> list[str]:
    """One plain sentence per comparison row of a report (its direction, a difference ruled out, or
    what it lacks), then how to decide the undecided ones."""
    lines, undecided = [], False
    for c in result.comparisons:
        for row in c.table.to_dict("records"):
            where = ", ".join(f"{axis}={row[axis]}" for axis in c.by)
            lines.append(f"verdict{f' ({where})' if where else ''}: {_sentence(c, row, result)}")
            undecided |= row["decision"] == "undecided"
    if undecided:
        lines.append("undecided rows need more seeds: `bnbench sweep SPEC --seeds N` extends this sweep; "
                     "`--seeds auto` adds seeds until every comparison is decided")
    return lines


def _sentence(c, row: dict, result: Report) -> str:
    """The sentence of one comparison row."""
    level = f"{100 * (1 - result.alpha):.4g}% CI"
    numbers = f"{number(row['mean_diff'])}, {level} [{number(row['ci_low'])}, {number(row['ci_high'])}] over " \
              f"{plural(row['pairs'], 'pair')}"
    if row["decision"] in ("higher", "lower"):
        return f"{c.axis}={c.a} gives {row['decision']} {result.metric} than {c.b}: {numbers}"
    if row["decision"] == "within_margin":
        return f"{c.axis}={c.a} and {c.b} differ by less than ±{result.margin:g} in {result.metric}: {numbers}"
    undecided = f"{c.axis}={c.a} vs {c.b} {row['verdict']}"
    return undecided if math.isnan(row["ci_low"]) else f"{undecided}: {numbers}{_needed(row)}"


def best_row(table: pd.DataFrame, metric: str) -> int | None:
    """The row with the best mean (:func:`bnbench.results.metrics.higher_is_better`: highest for accuracies,
    lowest for losses), if there are two rows or more to choose from and the metric has a better way."""
    better = metrics.higher_is_better(metric)
    if len(table) < 2 or not table["mean"].notna().any() or better is None:
        return None
    return int(table["mean"].idxmax() if better else table["mean"].idxmin())


def summary_title(name: str, metric: str, runs: int) -> str:
    """The summary table's title: the report's name, its metric and how many runs it is over."""
    return f"{name}: {metric} over seeds ({plural(runs, 'run')})"
