"""A sweep's output folder: its files, one writer at a time, and resuming into it.

Layout of ``<out>/``: ``runs.csv``, ``curves.csv``, ``activations.csv`` when a spec tracks
activations, ``probes.csv`` when it has probes (columns in :mod:`bnbench.results.schema`), ``spec.toml`` (the
resolved spec), ``meta.json`` (versions, backend, device, engine, start and end time) and
``.bnbench-lock``, the file a sweep or merge holds an OS lock on while it writes the folder
(:meth:`ResultsStore.lock`). :func:`bnbench.results.merging.merge` combines the folders of one spec's shards.

Each finished run is appended with one ``write`` per file (curves and activations first, then the
run's row, :mod:`bnbench.results.csv_files`), so a run listed in ``runs.csv`` has all its detail rows;
detail rows of a run that never reached ``runs.csv`` are dropped when the sweep resumes.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from bnbench.errors import BnbenchError
from bnbench.experiment.fields import LATER_FIELDS, RunConfig
from bnbench.experiment.rules import csv_value
from bnbench.experiment.runs import argument_key
from bnbench.experiment.extension import first_difference
from bnbench.experiment.spec import Spec, load_spec
from bnbench.training import context
from bnbench.results import provenance
from bnbench.results.csv_files import (
    ResultsError, append_whole, csv_text, drop_partial_row, read_rows, write_atomic, write_csv,
)
from bnbench.results.schema import ACTIVATION_COLUMNS, CURVE_COLUMNS, PROBE_COLUMNS, RUN_COLUMNS

# The files bnbench.reporting.figures writes (in every format, split into NAME_1, NAME_2, ...) and the page.
PLOT_FILES = tuple(f"{stem}{part}.{fmt}" for stem in ("*_vs_*", "learning_curves", "activations", "probes")
                   for part in ("", "_[0-9]*") for fmt in ("png", "pdf", "svg")) + ("report.html",)
LOCK_FILE = ".bnbench-lock"
# Columns a runs.csv may lack because it was written before they existed (filled in on resume).
LATER_COLUMNS = (*LATER_FIELDS, "num_params", "trains_as", *(c for c in context.COLUMNS if c != "backend"))

# How to resume onto runs whose context differs from this sweep's, by the field that differs.
_CONTEXT_HINTS = {
    "runs_per_device": "pass --runs-per-device {runs_per_device} to match them, ",
    "numerics": "pass --{numerics} to match them, ",
    "convolution": "resume where their convolutions' kernel ({convolution}) is the one this sweep gets (docs/engine.md), ",
    "model_source": "restore the code they ran, ",
    "data_source": "restore the data they ran on, ",
}


class ResultsStore:
    """The files of one sweep's output folder; ``runs.csv`` has :data:`bnbench.results.schema.RUN_COLUMNS` and then
    the spec's ``arguments`` columns (``model_args.NAME``, :attr:`bnbench.experiment.spec.Spec.argument_columns`)."""

    def __init__(self, out_dir: str | Path, arguments: tuple[str, ...] = ()):
        self.out_dir = Path(out_dir)
        self.columns = (*RUN_COLUMNS, *arguments)
        self.runs_path = self.out_dir / "runs.csv"
        self.curves_path = self.out_dir / "curves.csv"
        self.activations_path = self.out_dir / "activations.csv"
        self.probes_path = self.out_dir / "probes.csv"
        self.spec_path = self.out_dir / "spec.toml"
        self.meta_path = self.out_dir / "meta.json"
        self.lock_path = self.out_dir / LOCK_FILE

    @property
    def detail_files(self) -> dict[Path, tuple[str, ...]]:
        """The per-run detail files (curves, activation statistics, probes) and their columns."""
        return {
            self.curves_path: tuple(CURVE_COLUMNS),
            self.activations_path: tuple(ACTIVATION_COLUMNS),
            self.probes_path: tuple(PROBE_COLUMNS),
        }

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Holds an exclusive OS lock (``flock``) on the folder's lock file while the block runs,
        creating the folder if needed; raises :class:`ResultsError` at once, naming the process and host
        that hold it, if another process does.

        The OS releases the lock when its holder exits, however it ends, so a killed sweep never
        blocks the next one. Across hosts it works where the shared file system supports ``flock``
        (NFSv4, and Lustre or GPFS mounted with it). A folder this creates and leaves holding only the
        lock file (the block failed before writing) is removed again.
        """
        created = not self.out_dir.exists()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ResultsError(f"{self.out_dir}: cannot create its lock file ({err.strerror})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ResultsError(f"{self.out_dir}: in use by {self._holder()}; wait for it to finish, or pass "
                                   "--out to write elsewhere") from None
            holder = {"command": command, "pid": os.getpid(), "host": socket.gethostname(), "since": provenance.now()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            yield
        finally:
            os.close(fd)
            if created and [p.name for p in self.out_dir.iterdir()] == [LOCK_FILE]:
                self.lock_path.unlink()
                self.out_dir.rmdir()

    def _holder(self) -> str:
        try:
            holder = json.loads(self.lock_path.read_text(encoding="utf-8"))
            return f"`bnbench {holder['command']}` (process {holder['pid']} on host {holder['host']}, since {holder['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another bnbench process"

    def check_usable(self, spec: Spec, *, resume: bool) -> None:
        """Raises :class:`ResultsError` if the folder cannot take this sweep; creates nothing.

        Resuming into a folder needs every run recorded there to be a run of ``spec``: the same
        spec, or one that extends it (more seeds, more values of an axis, a fixed field turned into an
        axis that keeps its value). The error names the first field that differs.
        """
        self.check_writable()
        if not resume:
            return
        problem = None
        if self.spec_path.exists() and self.spec_path.read_text(encoding="utf-8") != spec.to_toml():
            try:
                stored = load_spec(self.spec_path)
            except BnbenchError:
                problem = "its spec.toml cannot be read as a spec"
            else:
                problem = first_difference(stored, spec, superset_ok=True)
        rows = read_rows(self.runs_path)[0]
        if problem is None:
            run_ids = {run.run_id for run in spec.expand()}
            foreign = [row["run_id"] for row in rows if row.get("run_id") not in run_ids]
            if foreign:
                problem = f"{len(foreign)} of the runs in runs.csv, e.g. {foreign[0]}, are not runs of this spec"
        if problem:
            kept = f"the {len(rows)} runs there" if rows else "the files there"
            raise ResultsError(
                f"{self.out_dir}: holds results of a different spec ({problem}); pass --out DIR to write elsewhere "
                f"(or --no-resume to delete {kept}: CSV files, plots and meta.json)"
            )
        self._check_header()

    def _check_header(self) -> None:
        """Refuses a runs.csv whose header is not one bnbench wrote (now or before its later columns)."""
        if not self.runs_path.exists():
            return
        with self.runs_path.open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
        unknown = [c for c in header if c not in RUN_COLUMNS and not argument_key(c)]
        missing = [c for c in RUN_COLUMNS if c not in header and c not in LATER_COLUMNS]
        if unknown or missing:
            what = f"unknown column {unknown[0]!r}" if unknown else f"no column {missing[0]!r}"
            raise ResultsError(f"{self.runs_path}: its header is not one bnbench writes ({what}); move the folder "
                               "away, or pass --no-resume to replace it")

    def check_writable(self) -> None:
        """Raises :class:`ResultsError` unless the folder is, or can be created as, a writable folder.

        Probes the folder, or its nearest existing ancestor, with a temporary file removed at once.
        """
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ResultsError(f"{self.out_dir}: output path exists and is not a folder")
        probe_dir = self.out_dir
        while not probe_dir.exists():
            probe_dir = probe_dir.parent
        if not probe_dir.is_dir():
            raise ResultsError(f"{self.out_dir}: cannot create the output folder: {probe_dir} is not a folder")
        try:
            with tempfile.TemporaryFile(dir=probe_dir):
                pass
        except OSError as err:
            raise ResultsError(f"{self.out_dir}: output location is not writable ({err.strerror})") from None

    def check_contexts(self, contexts: dict[str, context.ExecutionContext]) -> None:
        """Raises :class:`ResultsError` if a run recorded here ran in another execution context than the
        one ``contexts`` (by run id) gives its program now: resuming would mix contexts."""
        for row in read_rows(self.runs_path)[0]:
            expected = contexts.get(row["run_id"])
            found = expected and context.difference(row, expected)
            if found:
                field, difference = found
                raise ResultsError(
                    f"{self.out_dir}: its runs executed in another context than this sweep's (run {row['run_id']}: "
                    f"{difference}); {_CONTEXT_HINTS.get(field, 'resume where they ran, ').format(**row)}or pass "
                    "--out DIR to keep the two apart"
                )

    def open(self, spec: Spec, *, resume: bool) -> tuple[set[str], list[str]]:
        """Prepares the folder for ``spec``; returns the run ids already finished in it and notes on what
        opening changed.

        With ``resume=False`` earlier results (CSV files, plots, meta.json) are removed first. A last
        row cut off mid-way is dropped from every CSV file (with a note); so are detail rows of runs
        that never reached ``runs.csv`` (a sweep killed between two writes). A spec that extends the
        stored one replaces ``spec.toml`` (with a note).
        """
        self.check_usable(spec, resume=resume)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        notes = []
        if not resume:
            plots = [p for pattern in PLOT_FILES for p in self.out_dir.glob(pattern)]
            for path in (self.runs_path, self.spec_path, self.meta_path, *self.detail_files, *plots):
                path.unlink(missing_ok=True)
        if self.spec_path.exists() and first_difference(load_spec(self.spec_path), spec):
            notes.append(f"{self.spec_path}: extended to this spec (earlier runs are kept)")
        write_atomic(self.spec_path, spec.to_toml())
        for path in (self.runs_path, *self.detail_files):
            if drop_partial_row(path):
                notes.append(f"{path}: dropped a last row that was cut off mid-way")
        added = self._add_later_columns()
        if added:
            notes.append(f"{self.runs_path}: added the columns newer than its runs ({', '.join(added)})")
        done = {row["run_id"] for row in read_rows(self.runs_path)[0]}
        for path, columns in self.detail_files.items():
            rows = read_rows(path)[0]
            if any(row["run_id"] not in done for row in rows):
                write_csv(path, columns, [row for row in rows if row["run_id"] in done])
        if not self.curves_path.exists():
            write_csv(self.curves_path, CURVE_COLUMNS, [])
        if not self.runs_path.exists():
            write_csv(self.runs_path, self.columns, [])
        return done, notes

    def _add_later_columns(self) -> list[str]:
        """Rewrites a ``runs.csv`` written before the columns in :data:`LATER_COLUMNS` existed, or before
        the spec set a keyword argument, with them: later fields at their defaults (the values its runs
        used), the others empty, every column in its place. Returns the columns it added."""
        if not self.runs_path.exists():
            return []
        with self.runs_path.open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
        columns = (*self.columns, *(c for c in header if c not in self.columns))
        if list(header) == list(columns):
            return []
        defaults = dict.fromkeys(columns, "") | {name: csv_value(getattr(RunConfig(), name)) for name in LATER_FIELDS}
        write_csv(self.runs_path, columns, [{**defaults, **row} for row in read_rows(self.runs_path)[0]])
        return [c for c in columns if c not in header]

    def append(self, run_row: dict, details: dict[Path, list[dict]]) -> None:
        """Records one finished run: its rows in each detail file (created on first use), then its row
        in ``runs.csv``."""
        for path, rows in details.items():
            if not rows:
                continue
            columns = self.detail_files[path]
            if not path.exists():
                write_csv(path, columns, [])
            append_whole(path, csv_text(columns, rows, header=False))
        append_whole(self.runs_path, csv_text(self.columns, [run_row], header=False))

    def write_meta(self, meta: dict) -> None:
        write_atomic(self.meta_path, json.dumps(meta, indent=2) + "\n")

    def read_meta(self) -> dict:
        """``meta.json`` (empty if missing or unreadable: it describes, it does not decide)."""
        try:
            return json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
