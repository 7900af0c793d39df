"""``bnbench report``: a results folder's summary, comparisons and figures, or two folders side by side;
and the report every sweep ends with."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bnbench import options
from bnbench.cli import terminal
from bnbench.cli.arguments import PlotFormat, check_plot_format
from bnbench.cli.streams import console, err_console, one_line_errors, say_notes
from bnbench.errors import BnbenchError


def show_report(results_dir: Path, *, fmt: str = "table", plots: bool = True, plot_dir: Optional[Path] = None,
                plot_format: str = "png", html: Optional[Path] = None, **report_options) -> None:
    """Prints a folder's report (:func:`bnbench.reporting.model.report`): its notes and plot paths on stderr,
    its tables on stdout; then writes its figures, and the HTML page ``html`` if given."""
    from bnbench.reporting import model, page  # here: pandas and matplotlib, which help does without

    result = model.report(results_dir, **report_options)
    say_notes(result.notes)
    terminal.print_report(console, result, fmt)
    figures = model.write_plots(results_dir, result.runs, result.metric, plot_dir, plot_format, result) if plots else []
    for path in figures:
        terminal.say(err_console, f"plot: {path}")
    if html is not None:
        terminal.say(err_console, f"page: {page.write_page(html, results_dir, result, figures)}")


def report(
    results_dirs: list[Path] = typer.Argument(
        ..., metavar="DIR [DIR2]", help="A folder written by `bnbench sweep` (finished, interrupted or merged); "
        "with a second folder, the two side by side: runs paired across them (a model's two versions, before and "
        "after a change), no plots."
    ),
    by: Optional[list[str]] = typer.Option(
        None, "--by", metavar="COLUMN", show_default="the swept axes", help="Group by this column (repeatable)."
    ),
    metric: str = typer.Option("test_acc", "--metric", metavar="COLUMN", help="Numeric runs.csv column to summarize."),
    compare: Optional[list[str]] = typer.Option(
        None,
        "--compare",
        metavar="AXIS=A,B",
        show_default="the spec's compare",
        help="Paired difference A − B over runs equal in every other field (seed too), with a paired Student-t "
        "95% interval, the difference it resolves, and the pairs an undecided one needs (an estimate); a "
        "direction is named only from 3 pairs up (repeatable).",
    ),
    fmt: str = typer.Option(
        "table", "--format", metavar="|".join(options.REPORT_FORMATS),
        help="table; markdown (to paste into a paper); csv (one table on stdout: the comparisons if any, else the summary).",
    ),
    no_plots: bool = typer.Option(False, "--no-plots", help="Do not write plots."),
    probe: Optional[str] = typer.Option(
        None, "--probe", metavar="NAME",
        help="Summarize this probe value (probes.csv: grad_norm, ics_distance, beta_smoothness, mean_gap, ...) "
        "per group and layer instead of --metric.",
    ),
    step: Optional[int] = typer.Option(
        None, "--step", metavar="N", show_default="the last step probed", help="With --probe: the step to summarize."
    ),
    plot_dir: Optional[Path] = typer.Option(
        None, "--plot-dir", metavar="DIR", show_default="DIR itself", help="Folder to write the plots into."
    ),
    plot_format: PlotFormat = "png",
    html: Optional[Path] = typer.Option(
        None, "--html", metavar="FILE", help="Also write the report as one self-contained HTML page (offline, no "
        "script): the question, verdicts, tables, every figure, claims and provenance."),
) -> None:
    """Summarize a results folder again: mean, std, 95% CI and n over seeds, paired comparisons, plots;
    or compare two folders."""
    from bnbench.reporting import model  # here: pandas and matplotlib, which help does without

    with one_line_errors():
        if fmt not in options.REPORT_FORMATS:
            raise BnbenchError(f"--format: must be one of {', '.join(options.REPORT_FORMATS)}, got {fmt!r}")
        check_plot_format(plot_format)
        if len(results_dirs) == 2:
            return _show_two(results_dirs, fmt, metric, by=by, compare=compare, probe=probe, step=step, html=html)
        if len(results_dirs) > 2:
            raise BnbenchError(f"report: takes one folder, or two to compare, got {len(results_dirs)}")
        comparisons = [model.parse_comparison(c) for c in compare] if compare else None
        show_report(results_dirs[0], fmt=fmt, plots=not no_plots, plot_dir=plot_dir, plot_format=plot_format, by=by,
                    metric=metric, comparisons=comparisons, probe=probe, step=step, html=html)


def _show_two(folders: list[Path], fmt: str, metric: str, **single_folder_options) -> None:
    """``report A B``: the two folders side by side (:func:`bnbench.reporting.model.report_folders`)."""
    from bnbench.reporting import model  # here: pandas and matplotlib, which help does without

    given = [f"--{name}" for name, value in single_folder_options.items() if value]
    if given:
        raise BnbenchError(f"{', '.join(given)}: applies to one folder; two are compared on their matching runs")
    result = model.report_folders(*folders, metric=metric)
    say_notes(result.notes)
    terminal.print_report(console, result, fmt)
