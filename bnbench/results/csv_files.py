"""Append-only CSV files that survive interruption: whole rows or nothing, on write and on read.

A row is appended with one ``write`` (:func:`append_whole`), so a killed process leaves whole rows; a
whole file is replaced atomically (:func:`write_atomic`, :func:`write_csv`). Every reader (resume,
merge, :mod:`bnbench.results.frames`) reads whole rows only (:func:`read_rows`): a last row cut off
mid-way is not a row.
"""

from __future__ import annotations

import csv
import errno
import io
import os
from pathlib import Path
from typing import Iterable

from bnbench.errors import BnbenchError, RunFailure

# Columns in which two records of one run may differ: its time. Every other column is its result.
TIMING_COLUMNS = ("wall_s",)


class ResultsError(BnbenchError):
    """The output folder cannot be used as asked."""


class WriteFailed(RunFailure, ResultsError):
    """A results file could not be written (a full disk, a folder gone read-only)."""


def csv_text(columns: Iterable[str], rows: Iterable[dict], header: bool) -> str:
    """``rows`` as CSV text in the order of ``columns``, each line ending in ``\\n``; with the header
    line first if ``header``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to a temporary file renamed over ``path``; on failure nothing is left behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise WriteFailed(f"{path}: cannot write ({err.strerror})") from None


def append_whole(path: Path, text: str) -> None:
    """Appends ``text`` whole or not at all.

    One ``write()`` on an ``O_APPEND`` descriptor, so a killed process leaves whole rows; if the write
    fails or is cut short (a full disk), the file is truncated back to its previous length.
    """
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        except OSError as err:
            os.ftruncate(fd, size)
            raise WriteFailed(f"{path}: cannot write results ({err.strerror}); every run saved before is kept") from None
    finally:
        os.close(fd)


def whole_rows_text(path: Path) -> tuple[str, bool]:
    """The file's text up to its last line break, and whether a row after it was cut off mid-way (a
    full disk, an interrupted copy, a writer still writing): such a row is not a row."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not UTF-8 text, so not a file bnbench wrote; move it away or pass --no-resume") from None
    whole = text[: text.rfind("\n") + 1]
    return whole, len(whole) < len(text)


def read_rows(path: Path) -> tuple[list[dict], list[str]]:
    """The whole rows of a CSV file (none if it does not exist), and a note if a last row cut off
    mid-way was left out."""
    if not path.exists():
        return [], []
    text, cut = whole_rows_text(path)
    notes = [f"{path}: left out a last row that was cut off mid-way"] if cut else []
    return list(csv.DictReader(io.StringIO(text, newline=""))), notes


def first_result_difference(a: dict, b: dict) -> str | None:
    """The first column (timings aside) in which two records of one run differ, as ``column (a vs b)``."""
    for column in dict.fromkeys([*a, *b]):
        if column not in TIMING_COLUMNS and a.get(column) != b.get(column):
            return f"{column} ({a.get(column)!r} vs {b.get(column)!r})"
    return None


def unique_runs(rows: list[dict], source: Path) -> tuple[list[dict], list[str]]:
    """``rows`` with each run once, and a note on the copies left out.

    A run recorded twice with the same results (two sweeps wrote the folder) keeps its first row;
    recorded with different results it is an error naming the run and the first differing column,
    since either copy could be the one to keep.
    """
    first: dict[str, dict] = {}
    copies = 0
    for row in rows:
        kept = first.setdefault(row["run_id"], row)
        if kept is row:
            continue
        difference = first_result_difference(kept, row)
        if difference:
            raise ResultsError(f"{source}: run {row['run_id']} is recorded twice with different results (first "
                               f"difference: {difference}); keep one of its rows")
        copies += 1
    notes = [f"{source}: left out {copies} duplicate row{'s' * (copies != 1)} of runs recorded twice with the "
             "same results"] if copies else []
    return list(first.values()), notes


def drop_partial_row(path: Path) -> bool:
    """Truncates a file that does not end with a line break to its last whole row; True if it did."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    whole, cut = whole_rows_text(path)
    if cut:
        with path.open("r+b") as f:
            f.truncate(len(whole.encode("utf-8")))
    return cut


def write_csv(path: Path, columns: Iterable[str], rows: Iterable[dict]) -> None:
    """Writes a whole CSV file atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, csv_text(columns, rows, header=True))
