"""``bnbench.sweep``: a spec trained into its results folder from Python (a notebook, a script) the way
``bnbench sweep`` trains it, with the folder's results and report returned instead of printed.

It runs the command line's library functions, not a copy of them: the plan and its checks
(:func:`bnbench.sweeping.plan.plan_file`), the folder's lock, the engine and the records
(:func:`bnbench.sweeping.session.sweep`), so either one resumes, extends or reports on a folder the
other wrote, and a folder one of them is writing refuses the other.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, NamedTuple, Sequence, Union

import pandas as pd

from bnbench import data, engine
from bnbench.data import files
from bnbench.errors import BnbenchError
from bnbench.experiment.spec import Spec, numerics_of
from bnbench.reporting import cells, model
from bnbench.reporting.progress import SweepProgress, track
from bnbench.results import frames
from bnbench.sweeping import plan as plans
from bnbench.sweeping import session as sessions
from bnbench.training import numerics as numerics_lib

# progress=True logs here: a library leaves printing to its caller, and logging is how a caller chooses.
LOG = logging.getLogger(__name__)

ProgressOption = Union[bool, Callable[[SweepProgress], object]]


class SweepResult(NamedTuple):
    """A swept folder, read back. ``out``: the folder; ``runs``, ``curves``: its ``runs.csv`` and
    ``curves.csv`` as typed frames (:func:`bnbench.load_runs`: every run in the folder, earlier calls'
    too); ``comparisons``: the spec's (each a :class:`bnbench.reporting.model.Comparison` whose ``table``
    holds a ``decision`` and a ``verdict`` per row); ``verdicts``: one sentence per comparison row, the
    lines ``bnbench sweep`` ends with; ``report``: :func:`bnbench.report` of the folder; ``trained``: the
    ids of the runs this call trained, in the order they finished (empty when the folder held them all);
    ``notes``: what opening the folder and the compilation cache reported."""

    out: Path
    runs: pd.DataFrame
    curves: pd.DataFrame
    comparisons: list[model.Comparison]
    verdicts: list[str]
    report: model.Report
    trained: list[str]
    notes: list[str]


def sweep(spec: str | Path | Spec, *, out: str | Path | None = None, seeds: int | None = None,
          overrides: Sequence[str] | None = None, progress: ProgressOption = True,
          numerics: str | None = None) -> SweepResult:
    """Trains every run of ``spec`` not yet in ``out`` and returns the folder's results (:class:`SweepResult`).

    ``spec``: a spec file's path, or a :class:`bnbench.Spec` (``bnbench.load_spec(path)``). ``out``: the
    results folder, by default ``results/<spec name>`` as for ``bnbench sweep``. ``seeds``: a count of
    seeds ``0..N-1`` replacing the spec's, as ``--seeds N``. ``overrides``: ``--set`` pairs as the command
    line writes them, a list of ``"key=v1,v2"`` strings (``["epsilon=1e-5,1e-3", "widths=32-32,64"]``),
    read and checked by the same code, so a pair means here what it means there.

    ``numerics``: ``"portable"`` or ``"native"`` as ``--portable``/``--native`` (:mod:`bnbench.training.numerics`);
    by default the spec's, else portable where the process can compute portably: where JAX has not started
    yet, or started set up for it (``bnbench.prepare_numerics("portable")`` first), else native; each run
    records which.

    ``progress``: bnbench never prints. A function is called after each finished run with a
    :class:`bnbench.reporting.progress.SweepProgress` (the run's record, its place, the time spent and the
    time left), whose ``str()`` is the line ``bnbench sweep`` writes when piped: ``progress=print`` prints
    those lines. ``True`` (the default) logs each line at level INFO to the logger ``bnbench.reporting.sweep``
    (under ``bnbench``), which shows nothing until the caller asks for it
    (``logging.basicConfig(level=logging.INFO)``); ``False`` reports nothing.

    As ``bnbench sweep`` does, it holds the folder's lock while it trains, records each run as it
    finishes, resumes (runs already in the folder are not trained again: calling it twice trains nothing
    the second time, and more seeds extend the folder), downloads missing data sets, and uses the
    vectorized engine, the default block size and devices, and the compilation cache, so its rows equal
    the command line's but for ``wall_s``. An interrupted call keeps every finished run; calling it again
    resumes. It writes no figures and no ``report.html`` (``bnbench report DIR`` does), has no grid-size
    guard, shards or ``--seeds auto``.

    Raises a :class:`bnbench.errors.BnbenchError` with the command line's one-line message before
    training anything when the spec, an override or the folder cannot take the sweep (another spec's runs,
    another sweep holding its lock, named), and while training on a failure (every finished run kept).
    """
    if isinstance(overrides, str):
        raise BnbenchError(f"overrides: a list of 'key=v1,v2' strings, got one string {overrides!r}")
    numerics_lib.prepare(numerics or (spec.numerics if isinstance(spec, Spec) else numerics_of(spec)))
    planned = plans.plan_file(spec, sets=list(overrides or ()), seeds=seeds, out=out, max_runs=None)
    program_cache, cache_note = engine.caches()
    notes, trained, report_progress = [cache_note] if cache_note else [], [], _reporter(progress)

    def train(session: sessions.Session) -> None:
        notes.extend(session.notes)
        records = sessions.execute(session, program_cache=program_cache)
        for step in track(records, session.todo, list(session.plan.spec.grid)):
            trained.append(step.record.config.run_id)
            report_progress(step)

    sessions.sweep(planned, train, download=_download, numerics=numerics)
    folder = planned.store.out_dir
    report = model.report(folder)
    return SweepResult(folder, report.runs, frames.load_curves(folder), report.comparisons, cells.verdicts(report),
                       report, trained, notes)


def _reporter(progress: ProgressOption) -> Callable[[SweepProgress], object]:
    if callable(progress):
        return progress
    return (lambda step: LOG.info("%s", step)) if progress else (lambda step: None)


def _download(names: list[str], data_dir: Path | None) -> None:
    """The data sets among ``names`` whose files are not here, downloaded as ``bnbench sweep`` does, with
    no bar to show."""
    for name in data.to_download(names, data_dir):
        files.fetch(name, data.info(name).source, data_dir)
