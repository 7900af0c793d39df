"""A results folder's report: its summary over seeds, paired comparisons, notes, and its figures; two
folders side by side.

:func:`report` computes what ``bnbench report`` and the end of ``bnbench sweep`` show, so Python users
get the same tables (``bnbench.report(dir)``); :func:`write_plots` writes the figures. Rendering is the
command line's (:mod:`bnbench.cli.terminal`) and the page's (:mod:`bnbench.reporting.page`), both from
the same cells (:mod:`bnbench.reporting.cells`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from bnbench.training import context
from bnbench.results import frames
from bnbench.stats import group_sequential
from bnbench.stats import summary
from bnbench.experiment import question
from bnbench.errors import BnbenchError, RunFailure
from bnbench.options import PLOT_FORMATS
from bnbench.stats.comparisons import compare, compare_folders
from bnbench.results.csv_files import ResultsError
from bnbench.results.folder import ResultsStore


class ReportError(BnbenchError):
    """A report asked of options that do not fit together."""


class PlotsNotWritten(RunFailure):
    """The report's figures could not be written."""


class Comparison(NamedTuple):
    """One paired comparison ``axis=a`` minus ``axis=b``: :func:`bnbench.stats.comparisons.compare`'s ``table``,
    one row per group of ``by``."""

    axis: str
    a: str
    b: str
    by: list[str]
    table: pd.DataFrame


class Report(NamedTuple):
    """What a results folder shows.

    ``summary``: one row per group of ``by`` (:func:`bnbench.stats.summary.summarize` of ``metric``, or of the
    probe value ``metric`` at ``probe_step`` per group and layer); ``comparisons``: the paired
    comparisons asked for, else the ones the spec states (its ``compare``), each at level ``1 - alpha``
    (0.95, or the level a ``--seeds auto`` sweep's last look spent, :mod:`bnbench.stats.group_sequential`) with the
    spec's ``margin``; ``notes``: what reading the folder left out, where its runs executed in several
    contexts, and comparisons of the spec these runs cannot answer.
    """

    name: str
    runs: pd.DataFrame
    metric: str
    by: list[str]
    summary: pd.DataFrame
    probe_step: int | None
    comparisons: list[Comparison]
    alpha: float
    margin: float | None
    notes: list[str]


def parse_comparison(text: str) -> tuple[str, str, str]:
    """``AXIS=A,B`` as ``(axis, a, b)``; raises :class:`ReportError` otherwise."""
    comparison = question.parse_comparison(text)
    if comparison is None:
        raise ReportError(f"--compare: expected AXIS=A,B, got {text!r}")
    return comparison


def stated_question(results_dir: str | Path) -> tuple[list[tuple[str, str, str]], float | None]:
    """The comparisons and margin the folder's ``spec.toml`` states (none if it has none, or cannot
    be read: a question is optional, and ``report`` must read any folder ``sweep`` wrote)."""
    try:
        raw = tomllib.loads((Path(results_dir) / "spec.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return [], None
    texts = raw.get("compare", [])
    comparisons = [question.parse_comparison(t) for t in texts if isinstance(t, str)] if isinstance(texts, list) else []
    margin = raw.get("margin")
    return [c for c in comparisons if c], margin if isinstance(margin, (int, float)) else None


def _design(results_dir: Path, runs: pd.DataFrame, margin: float | None, notes: list[str]) -> tuple[float, float | None]:
    """The level and margin of the spec's comparisons: 0.05 and the spec's ``margin``, or those of the
    last look of a ``--seeds auto`` sweep (meta.json's design)."""
    meta = ResultsStore(results_dir).read_meta().get("sequential")
    if not meta:
        return group_sequential.ALPHA, margin
    design = group_sequential.Design.from_meta(meta)
    seeds = int(runs["seed"].nunique())
    alpha = design.alpha_at(seeds)
    if alpha is None:
        notes.append(f"--seeds auto chose these seeds, but {seeds} is none of its looks: fixed-sample 95% intervals")
        return group_sequential.ALPHA, margin
    notes.append(f"seeds chosen by --seeds auto: intervals at level {1 - alpha:.4g}, the share of 5% its look {seeds} spent")
    return alpha, design.margin


def report(
    results_dir: str | Path,
    *,
    by: list[str] | None = None,
    metric: str = "test_acc",
    comparisons: list[tuple[str, str, str]] | None = None,
    probe: str | None = None,
    step: int | None = None,
) -> Report:
    """The report of a results folder (see :class:`Report`): grouped by ``by`` (default: the swept
    axes), of ``metric``, with the paired ``comparisons`` (default: the spec's), or of the probe value
    ``probe`` at ``step`` (default: the last step probed). Raises a :class:`bnbench.errors.BnbenchError`
    on options the folder cannot answer, before anything is computed."""
    results_dir = Path(results_dir)
    if probe and comparisons:
        raise ReportError("--probe and --compare: pass one of them (a comparison is of a runs.csv metric)")
    if step is not None and not probe:
        raise ReportError("--step: applies to --probe only")
    runs = frames.load_runs(results_dir)
    if runs.empty:
        raise frames.LoadError(f"{results_dir / 'runs.csv'}: holds no finished run yet")
    for column in by or []:
        if column not in runs:
            raise frames.LoadError(f"--by: no column {column!r} in {results_dir / 'runs.csv'}")
    summary.check_metric(runs, metric)
    axes = summary.swept_axes(runs)
    notes = list(runs.attrs["notes"])
    stated, margin = stated_question(results_dir)
    alpha, margin = _design(results_dir, runs, margin, notes) if comparisons is None and stated else (group_sequential.ALPHA, margin)
    compared = _compare_all(runs, comparisons, stated, metric, alpha, margin, notes) if not probe else []
    mixed = [a for a in axes if a in context.COLUMNS]
    if mixed and by is None:
        notes.append(f"these runs executed in several contexts ({', '.join(mixed)}): shown apart")
    by = axes if by is None else list(by)
    name = ", ".join(runs["spec"].astype(str).unique()) or results_dir.name
    probe_step = None
    if probe:
        table, probe_step = summary.summarize_probe(runs, frames.load_probes(results_dir), probe, step, by)
        by, metric = [*by, "layer"], probe
    else:
        table = summary.summarize(runs, by, metric)
    return Report(name, runs, metric, by, table, probe_step, compared, alpha, margin, notes)


def report_folders(first_dir: str | Path, second_dir: str | Path, *, metric: str = "test_acc") -> Report:
    """Two folders side by side (:func:`bnbench.stats.comparisons.compare_folders`): the summary per folder and
    group, the paired comparison of the first minus the second, and notes saying what tells the
    folders apart and which runs found no partner. Raises a :class:`bnbench.errors.BnbenchError` if a
    folder cannot be read or no run of one matches a run of the other."""
    first_dir, second_dir = Path(first_dir), Path(second_dir)
    names = (first_dir.name, second_dir.name) if first_dir.name != second_dir.name else (str(first_dir), str(second_dir))
    loaded = []
    for folder in (first_dir, second_dir):
        runs = frames.load_runs(folder)
        if runs.empty:
            raise frames.LoadError(f"{folder / 'runs.csv'}: holds no finished run yet")
        loaded.append(runs)
    side = compare_folders(*loaded, names, metric)
    notes = [note for runs in loaded for note in runs.attrs["notes"]]
    notes += [f"the folders differ in {c}: {a} in {names[0]}, {b} in {names[1]}" for c, (a, b) in side.differing.items()]
    notes += side.unmatched
    by = ["folder", *side.by]
    table = summary.summarize(side.runs, by, metric)
    compared = [Comparison("folder", names[0], names[1], side.by, side.table)]
    return Report(f"{names[0]} vs {names[1]}", side.runs, metric, by, table, None, compared, group_sequential.ALPHA, None, notes)


def _compare_all(runs, asked, stated, metric, alpha, margin, notes: list[str]) -> list[Comparison]:
    """The comparisons asked for (an error if the runs cannot answer one), else the spec's (a note)."""
    axes = summary.swept_axes(runs)
    results = []
    for axis, a, b in asked if asked is not None else stated:
        try:
            table = compare(runs, axis, a, b, metric=metric, alpha=alpha, margin=margin)
        except summary.SummaryError as err:
            if asked is not None:
                raise
            notes.append(f"the spec's comparison {axis}={a},{b} is left out: {str(err).removeprefix('--compare: ')}")
            continue
        results.append(Comparison(axis, a, b, [c for c in axes if c != axis], table))
    return results


def write_plots(
    results_dir: str | Path, runs: pd.DataFrame, metric: str, plot_dir: str | Path | None = None, plot_format: str = "png",
    question: Report | None = None,
) -> list[Path]:
    """Writes the figures of a results folder into ``plot_dir`` (default: the folder itself) as
    ``plot_format`` files (:data:`bnbench.options.PLOT_FORMATS`: png at 300 dpi, pdf, svg) and returns
    their paths, every file of every figure (:func:`bnbench.reporting.figures.write_plots`: a figure with many
    panels is several files), with the paired differences of the comparisons of ``question`` (its report)
    where given; raises :class:`ReportError` on another format, before writing anything,
    and :class:`PlotsNotWritten` if they cannot be written there."""
    from bnbench.reporting import figures  # here: matplotlib is slow to import and the tables need none of it

    if plot_format not in PLOT_FORMATS:
        raise ReportError(f"--plot-format: must be one of {', '.join(PLOT_FORMATS)}, got {plot_format!r}")
    results_dir = Path(results_dir)
    target = Path(plot_dir) if plot_dir is not None else results_dir
    hint = "the tables are complete; pass --plot-dir DIR to write the plots elsewhere, or --no-plots"
    try:
        ResultsStore(target).check_writable()
        target.mkdir(parents=True, exist_ok=True)
        curves, activations = frames.load_curves(results_dir), frames.load_activations(results_dir)
        probes = frames.load_probes(results_dir)
        asked = dict(comparisons=question.comparisons, alpha=question.alpha, margin=question.margin) if question else {}
        return figures.write_plots(target, runs, curves, activations, metric, probes, plot_format=plot_format, **asked)
    except ResultsError as err:
        raise PlotsNotWritten(f"{err}: cannot write plots there; {hint}") from None
    except OSError as err:
        raise PlotsNotWritten(f"{target}: cannot write plots ({err.strerror or err}); {hint}") from None
