"""Rich renderings of the library's results for the command line: summaries, comparisons, profiles.

Every function here turns data into text or rich renderables and prints them on a given console; none
of them computes a statistic, and a report's cells are :mod:`bnbench.reporting.cells`'s, the same as
on the page. Text that can hold brackets (paths, package extras, user values) is escaped so that rich
never reads it as markup.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

from bnbench.reporting.cells import (
    CLIPPED_NOTE, best_row, compare_cells, plural, summary_cells, summary_title, verdicts,
)
from bnbench.experiment.rules import csv_value

if TYPE_CHECKING:
    import pandas as pd

    from bnbench.reporting.model import Report


def say(console: Console, text: str) -> None:
    """Prints plain text (never markup), wrapped only where the terminal wraps it, so that a path is
    never broken mid-word."""
    console.print(escape(text), soft_wrap=True)


# Columns whose cells stay on one line (numbers, intervals); the others wrap between words.
_NO_WRAP = ("n", "diverged", "pairs", "mean ± std", "95% CI", "resolves")


def _no_wrap(column: str) -> bool:
    return column in _NO_WRAP or column.endswith("CI (paired t)")


def print_table(
    console: Console, header: list[str], rows: list[list[str]], title: str, fmt: str, best: int | None = None
) -> None:
    """Prints a table as a rich table (``fmt="table"``) or as Markdown (``"markdown"``).

    ``best`` is highlighted: bold green on a colour terminal (the title says so), bold in Markdown.
    """
    footnotes = [CLIPPED_NOTE] if any(cell.endswith("]*") for cells in rows for cell in cells) else []
    if fmt == "markdown":
        caption = title + ("; best mean in bold" if best is not None else "")
        marked = [[f"**{c}**" if i == best and j == header.index("mean ± std") else c for j, c in enumerate(cells)]
                  for i, cells in enumerate(rows)] if best is not None else rows
        lines = [f"**{caption}**", ""] + ["| " + " | ".join(cells) + " |" for cells in (header, ["---"] * len(header), *marked)]
        lines += ["", *footnotes] if footnotes else []
        console.print("\n".join(lines) + "\n", markup=False, soft_wrap=True, highlight=False)
        return
    colour = best is not None and console.color_system is not None
    # No outer box and one space between columns: an 80-column terminal fits the numbers unbroken.
    table = Table(title=escape(title + ("; best in bold green" if colour else "")), box=box.SIMPLE_HEAD,
                  show_edge=False, padding=(0, 1, 0, 0))
    # Numbers and intervals never wrap; text wraps between words. Where even that does not fit, a
    # field name breaks after its underscores, never mid-word: no column is narrower than its longest
    # unbreakable piece.
    def longest_piece(j: int, header_text: str) -> int:
        cells = [c for row in rows for c in ([row[j]] if _no_wrap(header[j]) or not row[j] else row[j].split())]
        return max(len(piece) for piece in [*header_text.split("\n"), *cells])

    # Each column takes its width, one space of padding and one of the divider after it.
    natural = sum(longest_piece(j, column) + 2 for j, column in enumerate(header))
    narrowest = 0
    for j, column in enumerate(header):
        shown = column.replace("_", "_\n") if natural > console.width else column
        table.add_column(escape(shown), no_wrap=_no_wrap(column), min_width=longest_piece(j, shown))
        narrowest += longest_piece(j, shown) + 2
    for i, cells in enumerate(rows):
        table.add_row(*map(escape, cells), style="bold green" if colour and i == best else None)
    # A table that cannot fit is printed whole, wider than the terminal (which wraps its lines), never
    # with a column cut off: a cropped interval reads as a different number.
    width = console.width
    console.width = max(width, narrowest)  # print(width=...) cannot exceed the console's own width
    try:
        console.print(table)
    finally:
        console.width = width
    for note in footnotes:
        say(console, note)


def dry_run_table(spec, runs) -> Table:
    """The runs of a plan, one row each, with the swept fields and the seed."""
    axes = list(spec.grid)
    table = Table(title=escape(f"{spec.name}: {plural(len(runs), 'run')} (dry run, nothing executed)"))
    for column in ("#", "run_id", *axes, "seed"):
        table.add_column(column)
    for i, run in enumerate(runs):
        values = [str(csv_value(getattr(run, a))) for a in axes]
        table.add_row(str(i + 1), run.run_id, *map(escape, values), str(run.seed))
    return table


def columns_table(title: str, columns: dict[str, str]) -> Table:
    table = Table(title=escape(title))
    table.add_column("column", no_wrap=True)
    table.add_column("meaning")
    for name, meaning in columns.items():
        table.add_row(name, escape(meaning))
    return table


def profile_tables(console: Console, rows: list, notes: list[str]) -> None:
    """The profile rows, one table per shape and dtype, a verdict under each, then the notes."""
    for shape, dtype in dict.fromkeys((r.shape, r.dtype) for r in rows):
        group_rows = [r for r in rows if (r.shape, r.dtype) == (shape, dtype)]
        table = Table(title=escape(f"BN kernels, {shape} {dtype} ({rows[0].device_kind}, {rows[0].backend})"),
                      box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
        for column in ("mode", "impl", "ms", "spread", "GB/s", "%copy", "×ew", "var", "out"):
            table.add_column(column, justify="left" if column in ("mode", "impl") else "right", no_wrap=True)
        for mode in dict.fromkeys(r.mode for r in group_rows):
            group = [r for r in group_rows if r.mode == mode]
            fastest = min(group, key=lambda r: r.median_ms)
            for r in group:
                table.add_row(
                    r.mode, r.impl, f"{r.median_ms:.3g}", f"{100 * (r.p90_ms - r.p10_ms) / r.median_ms:.0f}%", f"{r.gbps:.3g}",
                    f"{r.pct_copy_bw:.0f}%", f"{r.rel_to_elementwise:.3g}", _error_text(r.var_rel_err),
                    _error_text(r.out_rel_err), style="bold green" if r is fastest else None,
                )
            table.add_section()
        console.print(table)
        say(console, _profile_verdict(group_rows))
    say(console, "ms: median time per kernel call; spread: (p90 - p10) / median; %copy: GB/s of minimum traffic over the"
                 " copy's GB/s; ×ew: time over x*a+b's; var, out: relative error of the variance and the output against"
                 " float64 at mean/std = 3000 (train mode)")
    for note in notes:
        say(console, f"note: {note}")


def _error_text(error: float) -> str:
    return "" if math.isnan(error) else f"{error:.0e}"


def _profile_verdict(rows: list) -> str:
    """The fastest accurate implementation in training mode, and where bnbench stands."""
    train = [r for r in rows if r.mode == "train"]
    if not train:
        return "verdict: no train rows"
    accurate = [r for r in train if r.var_rel_err <= 1e-5] or train
    best = min(accurate, key=lambda r: r.median_ms)
    fastest = min(train, key=lambda r: r.median_ms)
    ours = next((r for r in train if r.impl == "bnbench"), None)
    text = f"verdict: train, fastest with variance error ≤ 1e-5: {best.impl} ({best.median_ms:.3g} ms, {best.pct_copy_bw:.0f}% of copy)"
    if fastest is not best:
        text += f"; {fastest.impl} is faster ({fastest.median_ms:.3g} ms) but off by {fastest.var_rel_err:.0e} in variance"
    if ours is not None and ours is not best:
        text += f"; bnbench {ours.median_ms:.3g} ms ({ours.median_ms / best.median_ms:.2f}x)"
    return text


def print_report(console: Console, result: Report, fmt: str) -> None:
    """A :class:`bnbench.reporting.model.Report`'s tables: the summary, the comparisons, then one verdict
    line per comparison row; with ``fmt="csv"`` one table alone: the comparisons, one after another
    (column ``compared`` names each), when there are any, else the summary."""
    if fmt == "csv":
        console.file.write(csv_table(result).to_csv(index=False))
        return
    if result.probe_step is not None:
        title = f"{result.name}: {result.metric} at step {result.probe_step} over seeds ({plural(len(result.runs), 'run')})"
        best = None
    else:
        title, best = summary_title(result.name, result.metric, len(result.runs)), best_row(result.summary, result.metric)
    header, rows = summary_cells(result.summary, result.by)
    print_table(console, header, rows, title, fmt, best=best)
    for c in result.comparisons:
        header, rows = compare_cells(c.table, c.by, c.a, c.b, result.alpha)
        print_table(console, header, rows, f"paired differences in {result.metric}: {c.axis}={c.a} minus {c.b}", fmt)
    for line in verdicts(result):
        say(console, f"- {line}" if fmt == "markdown" else line)


def look_line(look, design) -> str:
    """Where ``--seeds auto`` stands after a look (:class:`bnbench.stats.group_sequential.Look`)."""
    head = (f"seeds auto: {look.seeds} seeds, intervals at level {1 - look.alpha:.4g}: {look.decided_rows} of "
            f"{look.rows} comparison rows decided")
    if look.decided:
        return f"{head}; stopping"
    if look.seeds == design.looks[-1]:
        return f"{head}; stopping at --max-seeds {look.seeds}, undecided rows stay undecided"
    return f"{head}; next look at {design.looks[design.looks.index(look.seeds) + 1]} seeds"


def csv_table(result: Report) -> pd.DataFrame:
    """The one table ``--format csv`` writes (see :func:`print_report`)."""
    import pandas as pd  # here: pandas, which help does without

    if not result.comparisons:
        return result.summary
    tables = [c.table.assign(compared=f"{c.axis}={c.a},{c.b}") for c in result.comparisons]
    table = pd.concat(tables, ignore_index=True)
    return table[["compared", *(c for c in table.columns if c != "compared")]]


def models_table(rows: list) -> Group:
    """The networks a spec resolves to (:func:`bnbench.training.inventory.resolve`), then where each model and
    data set comes from."""
    table = Table(title="networks of the spec")
    for column in ("model", "arguments", "dataset", "input", "classes", "parameters", "norm sites"):
        table.add_column(column, justify="right" if column in ("classes", "parameters", "norm sites") else "left",
                         overflow="fold")
    sources: dict[str, str] = {}
    for r in rows:
        arguments = " ".join(f"{k}={v}" for k, v in r.model_args)
        table.add_row(*(escape(str(v)) for v in (r.model, arguments, r.dataset, "×".join(map(str, r.input_shape)),
                                                 r.num_classes, f"{r.num_params:,}", r.norm_sites)))
        sources.update({r.model: r.model_from, r.dataset: r.data_from})
    origins = Table(title="where they come from")
    origins.add_column("name", overflow="fold")
    origins.add_column("code or data (file@digest)", overflow="fold")
    for name, origin in sources.items():
        origins.add_row(escape(name), escape(origin))
    return Group(table, origins)


def datasets_table(rows: list) -> Table:
    """The data sets: ``rows`` of ``(registry entry, local folder or None, checksum problem or None)``."""
    table = Table(title="data sets (spec field `dataset`)")
    for column in ("name", "description", "train", "test", "input", "available"):
        table.add_column(column, justify="right" if column in ("train", "test") else "left", overflow="fold")
    for entry, found, problem in rows:
        if entry.source is None:
            where = "generated locally"
        elif found is None:
            where = f"[yellow]no[/]: {entry.source.download_size / 1e6:.0f} MB download on first use"
        elif problem:
            where = f"[red]corrupt[/]: {escape(problem)}"
        else:
            where = f"[green]yes[/] (MD5 checked): {escape(str(found.resolve()))}"
        shape = "×".join(map(str, entry.input_shape))
        table.add_row(entry.name, escape(entry.description), f"{entry.split[0]:,}", f"{entry.split[1]:,}", shape, where)
    return table


def explanation(console: Console, ex, gamma: float, beta: float) -> None:
    """BN's training-mode forward pass on the worked example ``ex`` (:mod:`bnbench.norm.worked_example`), step by step."""
    console.print(
        "Batch Normalization, training mode: per feature, mean and [bold]biased[/] variance over the batch, "
        f"x̂ = (x − mean) / √(var + ε) with ε = {ex.epsilon:g}, then y = γ·x̂ + β with γ = {gamma:g}, β = {beta:g}."
    )
    stats = Table(title="Step 1–2: batch statistics per feature")
    stats.add_column("statistic")
    stats.add_column("feature 0", justify="right")
    stats.add_column("feature 1", justify="right")
    stats.add_row("mean = Σx / 10", *(f"{v:g}" for v in ex.mean))
    stats.add_row("var = Σ(x − mean)² / 10", *(f"{v:g}" for v in ex.var))
    console.print(stats)
    steps = Table(title="Step 3–4: normalize, then scale and shift")
    for column in ("x₀", "x₁", "x̂₀", "x̂₁", "y₀", "y₁"):
        steps.add_column(column, justify="right")
    for x, x_hat, y in zip(ex.x, ex.x_hat, ex.y):
        steps.add_row(*(f"{v:g}" for v in x), *(f"{v:+.4f}" for v in (*x_hat, *y)))
    console.print(steps)
