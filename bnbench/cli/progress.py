"""Training an open sweep on the command line: a progress bar on a terminal, a line per finished run
with an ETA when output is piped or logged, and Ctrl-C that stops once the runs in progress are saved."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from bnbench.cli import terminal
from bnbench.cli.streams import console, say_notes
from bnbench.reporting import cells
from bnbench.reporting.progress import track

if TYPE_CHECKING:
    from bnbench.sweeping.session import RunRecord, Session


@contextlib.contextmanager
def _stop_on_interrupt(stop: threading.Event):
    """The first Ctrl-C sets ``stop`` (the sweep ends once the runs in progress are saved); a second
    one interrupts at once."""

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        typer.echo("stopping after the runs in progress are saved (Ctrl-C again to abort now)", err=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def show(records: Iterable[RunRecord], todo: int, axes: list[str], out: Console) -> None:
    """The ``todo`` runs of ``records`` as they finish, labelled by the swept fields ``axes``: a progress
    bar where ``out`` is a terminal, else one line per run with an ETA (a log follows the sweep as it goes)."""
    steps = track(records, todo, axes)
    if not out.is_terminal:
        for step in steps:
            terminal.say(out, str(step))
            out.file.flush()
        return
    with Progress(*_bar_columns(), console=out) as bar:
        task = bar.add_task("training", total=todo)
        for step in steps:
            result = step.record.result
            bar.update(task, advance=1, description=f"last: {step.label} {result.status} "
                                                    f"test_acc={cells.number(result.test_acc, 3)}")


class _LastRun(ProgressColumn):
    """The last finished run, on one line, cut short (``…``) to the width the other columns leave."""

    def render(self, task: Task) -> Text:
        return Text(task.description, no_wrap=True, overflow="ellipsis")


def _bar_columns() -> tuple[ProgressColumn, ...]:
    """The bar's columns: the last run's text is the only one rich may narrow (the others never wrap), so
    the count and the times stay whole on an 80-column terminal, however long the swept fields' names."""
    whole = dict(table_column=Column(no_wrap=True))
    return (_LastRun(), BarColumn(bar_width=20, **whole), MofNCompleteColumn(**whole), TimeElapsedColumn(**whole),
            TextColumn("ETA", **whole), TimeRemainingColumn(**whole))


def _train_with_progress(session: Session, stop: threading.Event, program_cache: Optional[Path]) -> None:
    """Trains the session's runs not yet done (:func:`bnbench.sweeping.session.execute`), shown by :func:`show`."""
    from bnbench.sweeping.session import execute  # here: it imports JAX, which help does without

    if session.todo:
        show(execute(session, stop, program_cache), session.todo, list(session.plan.spec.grid), console)


def train(session: Session, program_cache: Optional[Path]) -> None:
    """Trains an open sweep with progress; the first Ctrl-C stops once the runs in progress are saved."""
    plan = session.plan
    say_notes(session.notes)
    terminal.say(console, f"{plan.spec.name}: {cells.plural(len(plan.runs), 'run')}, {len(session.done)} already in "
                        f"{plan.store.out_dir}, {session.todo} to run")
    stop = threading.Event()
    resume_hint = f"finished runs are saved in {plan.store.out_dir}; run the same command again to resume"
    try:
        with _stop_on_interrupt(stop):
            _train_with_progress(session, stop, program_cache)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {resume_hint}", err=True)
        raise typer.Exit(code=130) from None
    if stop.is_set():
        typer.echo(f"stopped: {resume_hint}", err=True)
        raise typer.Exit(code=130)
    terminal.say(console, f"results: {plan.store.out_dir}/ (runs.csv, curves.csv; column meanings: bnbench columns)")
