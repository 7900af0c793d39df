"""A sweep's progress as it trains: each finished run with its place in the sweep, the time spent and
an estimate of the time left, and the line that says so, the same from ``bnbench sweep`` piped or
logged (:mod:`bnbench.cli.progress`) and from ``bnbench.sweep`` in Python (:mod:`bnbench.reporting.sweep`).

Every function here turns records into numbers and text; none prints.
"""

from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple

from bnbench.experiment.rules import csv_value
from bnbench.reporting.cells import number

if TYPE_CHECKING:
    from bnbench.sweeping.session import RunRecord


class SweepProgress(NamedTuple):
    """Run ``index`` of the ``total`` runs this sweep trains (those already in the folder left out) has
    finished: its ``record`` (:class:`bnbench.sweeping.session.RunRecord`: config, result, ``runs.csv``
    row), its ``label`` (the swept fields and the seed), the seconds since training began, and an estimate
    of the seconds left (the mean time per run so far, times the runs left). ``str()`` gives the line
    ``bnbench sweep`` writes per run when piped: ``progress=print`` in :func:`bnbench.sweep` prints it."""

    index: int
    total: int
    label: str
    record: RunRecord
    elapsed_s: float
    eta_s: float

    def __str__(self) -> str:
        result = self.record.result
        return (f"run {self.index}/{self.total} {self.label} {result.status} test_acc={number(result.test_acc)} "
                f"wall={result.wall_s:.2f}s eta={clock_time(self.eta_s)} (id {self.record.config.run_id})")


def track(records: Iterable[RunRecord], total: int, axes: list[str],
          clock: Callable[[], float] = time.monotonic) -> Iterator[SweepProgress]:
    """Each of ``records`` (:func:`bnbench.sweeping.session.execute`, ``total`` of them) as a
    :class:`SweepProgress`, labelled by the swept fields ``axes``. Time counts from the first record asked
    for, when training begins (compilation included, as in the runs' ``wall_s``)."""
    start = clock()
    for index, record in enumerate(records, 1):
        elapsed = clock() - start
        yield SweepProgress(index, total, run_label(record.config, axes), record, elapsed,
                            elapsed / index * (total - index))


def run_label(config, axes: list[str]) -> str:
    """What sets a run apart in its grid: the swept fields ``axes`` and the seed."""

    def value(axis: str):
        field, _, argument = axis.partition(".")  # "model_args.NAME": one keyword argument
        return dict(getattr(config, field)).get(argument) if argument else getattr(config, axis)

    return " ".join([*(f"{a}={csv_value(value(a))}" for a in axes), f"seed={config.seed}"])


def clock_time(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS``, the way the progress bar shows its times."""
    return str(datetime.timedelta(seconds=round(seconds)))
