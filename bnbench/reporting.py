"""A results folder's report: its summary over seeds, a paired comparison, notes, and its figures.

:func:`report` computes what ``bnbench report`` and the end of ``bnbench sweep`` show, so Python users
get the same tables (``bnbench.report(dir)``); :func:`write_plots` writes the figures. Rendering is the
command line's (:mod:`bnbench.render`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pandas as pd

from bnbench import context, frames, summary
from bnbench.errors import BnbenchError, RunFailure


class ReportError(BnbenchError):
    """A report asked of options that do not fit together."""


class PlotsNotWritten(RunFailure):
    """The report's figures could not be written."""


class Report(NamedTuple):
    """What a results folder shows.

    ``summary``: one row per group of ``by`` (:func:`bnbench.summary.summarize` of ``metric``, or of the
    probe value ``metric`` at ``probe_step`` per group and layer); ``compared``: the paired comparison
    (:func:`bnbench.summary.compare`) of ``comparison = (axis, a, b)`` per group of ``compared_by``, or
    None; ``notes``: what reading the folder left out, and where its runs executed in several contexts.
    """

    name: str
    runs: pd.DataFrame
    metric: str
    by: list[str]
    summary: pd.DataFrame
    probe_step: int | None
    comparison: tuple[str, str, str] | None
    compared: pd.DataFrame | None
    compared_by: list[str]
    notes: list[str]


def parse_comparison(text: str) -> tuple[str, str, str]:
    """``AXIS=A,B`` as ``(axis, a, b)``; raises :class:`ReportError` otherwise."""
    axis, _, values = text.partition("=")
    pair = values.split(",")
    if not axis or len(pair) != 2 or not all(pair):
        raise ReportError(f"--compare: expected AXIS=A,B, got {text!r}")
    return axis, pair[0], pair[1]


def report(
    results_dir: str | Path,
    *,
    by: list[str] | None = None,
    metric: str = "test_acc",
    comparison: tuple[str, str, str] | None = None,
    probe: str | None = None,
    step: int | None = None,
) -> Report:
    """The report of a results folder (see :class:`Report`): grouped by ``by`` (default: the swept
    axes), of ``metric``, with the paired ``comparison`` if given, or of the probe value ``probe`` at
    ``step`` (default: the last step probed). Raises a :class:`bnbench.errors.BnbenchError` on options
    the folder cannot answer, before anything is computed."""
    results_dir = Path(results_dir)
    if probe and comparison:
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
    compared = summary.compare(runs, *comparison, metric=metric) if comparison else None
    notes = list(runs.attrs["notes"])
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
    compared_by = [c for c in axes if comparison and c != comparison[0]]
    return Report(name, runs, metric, by, table, probe_step, comparison, compared, compared_by, notes)


def write_plots(results_dir: str | Path, runs: pd.DataFrame, metric: str, plot_dir: str | Path | None = None) -> list[Path]:
    """Writes the figures of a results folder into ``plot_dir`` (default: the folder itself) and returns
    their paths; raises :class:`PlotsNotWritten` if they cannot be written there."""
    from bnbench import plots
    from bnbench.store import ResultsError, ResultsStore

    results_dir = Path(results_dir)
    target = Path(plot_dir) if plot_dir is not None else results_dir
    hint = "the tables are complete; pass --plot-dir DIR to write the plots elsewhere, or --no-plots"
    try:
        ResultsStore(target).check_writable()
        target.mkdir(parents=True, exist_ok=True)
        curves, activations = frames.load_curves(results_dir), frames.load_activations(results_dir)
        return plots.write_plots(target, runs, curves, activations, metric, frames.load_probes(results_dir))
    except ResultsError as err:
        raise PlotsNotWritten(f"{err}: cannot write plots there; {hint}") from None
    except OSError as err:
        raise PlotsNotWritten(f"{target}: cannot write plots ({err.strerror or err}); {hint}") from None
