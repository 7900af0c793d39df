"""Where the command line writes: tables and results on stdout, notes on stderr, and an error as one
line on stderr with its exit status."""

from __future__ import annotations

import contextlib

import typer
from rich.console import Console

from bnbench.cli import terminal
from bnbench.errors import BnbenchError

console = Console()
err_console = Console(stderr=True)


def say_notes(notes: list[str]) -> None:
    """Prints each note as ``note: ...`` on stderr."""
    for note in notes:
        terminal.say(err_console, f"note: {note}")


def _fail(err: Exception, code: int = 2) -> typer.Exit:
    """Reports ``err`` in one line on stderr; the exit status to leave with."""
    # User text quoted in a message may hold line breaks or control characters: escape them.
    message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(err))
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=code)


@contextlib.contextmanager
def one_line_errors():
    """Turns a :class:`bnbench.errors.BnbenchError` into one line on stderr and its exit code (2 for
    bad input, 1 for a failure while running): every command runs inside this."""
    try:
        yield
    except BnbenchError as err:
        raise _fail(err, err.exit_code) from None
