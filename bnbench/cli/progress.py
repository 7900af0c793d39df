"""Training an open sweep on the command line: a progress bar on a terminal, a line per finished run
when output is piped or logged, and Ctrl-C that stops once the runs in progress are saved."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bnbench.cli import terminal
from bnbench.cli.streams import console, say_notes
from bnbench.reporting import cells

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


def _lines(records: Iterator[RunRecord], todo: int, axes: list[str]) -> None:
    """One line per finished run, flushed at once (a log follows the sweep as it goes)."""
    for i, record in enumerate(records, 1):
        result, label = record.result, terminal.run_label(record.config, axes)
        terminal.say(console, terminal.run_line(i, todo, label, record.config.run_id, result.status, result.test_acc,
                                                result.wall_s))
        console.file.flush()


def _bar(records: Iterator[RunRecord], todo: int, axes: list[str]) -> None:
    """A progress bar that names the last finished run."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("training", total=todo)
        for record in records:
            result = record.result
            progress.update(task, advance=1, description=f"last: {terminal.run_label(record.config, axes)} {result.status} "
                                                          f"test_acc={cells.number(result.test_acc, 3)}")


def _train_with_progress(session: Session, stop: threading.Event, program_cache: Optional[Path]) -> None:
    """A progress bar on a terminal; one line per finished run when output is piped or logged."""
    from bnbench.sweeping.session import execute  # here: it imports JAX, which help does without

    todo = len(session.plan.runs) - len(session.done)
    if not todo:
        return
    show = _bar if console.is_terminal else _lines
    show(execute(session, stop, program_cache), todo, list(session.plan.spec.grid))


def train(session: Session, program_cache: Optional[Path]) -> None:
    """Trains an open sweep with progress; the first Ctrl-C stops once the runs in progress are saved."""
    plan = session.plan
    say_notes(session.notes)
    terminal.say(console, f"{plan.spec.name}: {cells.plural(len(plan.runs), 'run')}, {len(session.done)} already in "
                        f"{plan.store.out_dir}, {len(plan.runs) - len(session.done)} to run")
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
