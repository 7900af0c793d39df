"""A sweep's output folder: append-only CSV files that survive interruption, and resume.

Layout of ``<out>/``: ``runs.csv``, ``curves.csv``, ``activations.csv`` when a spec tracks
activations (columns in :mod:`bnbench.schema`), ``spec.toml``
(the resolved spec) and ``meta.json`` (versions, backend, device, engine, start and end time).
:func:`merge` combines the folders of one spec's shards.

Each finished run is appended with one ``write`` per file (curves and activations first, then the
run's row), so a run listed in ``runs.csv`` has all its detail rows; detail rows of a run that never
reached ``runs.csv`` are dropped when the sweep resumes.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, NamedTuple

from bnbench import provenance
from bnbench.config import LATER_FIELDS, RunConfig
from bnbench.errors import BnbenchError
from bnbench.schema import ACTIVATION_COLUMNS, CURVE_COLUMNS, PROBE_COLUMNS, RUN_COLUMNS, csv_value
from bnbench.spec import Spec, first_difference, load_spec

PLOT_FILES = ("*_vs_*.png", "learning_curves.png", "activations.png", "probes.png")  # the names bnbench.plots writes


class ResultsError(BnbenchError):
    """The output folder cannot be used as asked."""


def _csv_text(columns: Iterable[str], rows: Iterable[dict], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to a temporary file renamed over ``path``; on failure nothing is left behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ResultsError(f"{path}: cannot write ({err.strerror})") from None


def _append(path: Path, text: str) -> None:
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
            raise ResultsError(f"{path}: cannot write results ({err.strerror}); every run saved before is kept") from None
    finally:
        os.close(fd)


def _whole_rows_text(path: Path) -> str:
    """The file's text up to its last line break: a row cut off mid-way (a full disk, an interrupted
    copy) is not a row."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not UTF-8 text, so not a file bnbench wrote; move it away or pass --no-resume") from None
    return text[: text.rfind("\n") + 1]


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return list(csv.DictReader(io.StringIO(_whole_rows_text(path), newline="")))


def _drop_partial_row(path: Path) -> bool:
    """Truncates a file that does not end with a line break to its last whole row; True if it did."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    whole = _whole_rows_text(path).encode("utf-8")
    if len(whole) == path.stat().st_size:
        return False
    with path.open("r+b") as f:
        f.truncate(len(whole))
    return True


def write_csv(path: Path, columns: Iterable[str], rows: Iterable[dict]) -> None:
    """Writes a whole CSV file atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, _csv_text(columns, rows, header=True))


class ResultsStore:
    """The files of one sweep's output folder."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.runs_path = self.out_dir / "runs.csv"
        self.curves_path = self.out_dir / "curves.csv"
        self.activations_path = self.out_dir / "activations.csv"
        self.probes_path = self.out_dir / "probes.csv"
        self.spec_path = self.out_dir / "spec.toml"
        self.meta_path = self.out_dir / "meta.json"

    @property
    def detail_files(self) -> dict[Path, tuple[str, ...]]:
        """The per-run detail files (curves, activation statistics) and their columns."""
        return {
            self.curves_path: tuple(CURVE_COLUMNS),
            self.activations_path: tuple(ACTIVATION_COLUMNS),
            self.probes_path: tuple(PROBE_COLUMNS),
        }

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
        if problem is None:
            run_ids = {run.run_id for run in spec.expand()}
            foreign = [row["run_id"] for row in _read_rows(self.runs_path) if row.get("run_id") not in run_ids]
            if foreign:
                problem = f"{len(foreign)} of the runs in runs.csv, e.g. {foreign[0]}, are not runs of this spec"
        if problem:
            raise ResultsError(
                f"{self.out_dir}: holds results of a different spec ({problem}); pass --no-resume to replace "
                "them or --out to write elsewhere"
            )

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
        _write_atomic(self.spec_path, spec.to_toml())
        for path in (self.runs_path, *self.detail_files):
            if _drop_partial_row(path):
                notes.append(f"{path}: dropped a last row that was cut off mid-way")
        added = self._add_later_columns()
        if added:
            notes.append(f"{self.runs_path}: added the columns newer than its runs ({', '.join(added)})")
        done = {row["run_id"] for row in _read_rows(self.runs_path)}
        for path, columns in self.detail_files.items():
            rows = _read_rows(path)
            if any(row["run_id"] not in done for row in rows):
                write_csv(path, columns, [row for row in rows if row["run_id"] in done])
        if not self.curves_path.exists():
            write_csv(self.curves_path, CURVE_COLUMNS, [])
        if not self.runs_path.exists():
            write_csv(self.runs_path, RUN_COLUMNS, [])
        return done, notes

    def _add_later_columns(self) -> list[str]:
        """Rewrites a ``runs.csv`` written before the fields in :data:`bnbench.config.LATER_FIELDS` (or the
        ``num_params`` column) existed with their columns: fields at their defaults (the values its runs
        used), ``num_params`` empty, every column in its place. Returns the columns it added."""
        if not self.runs_path.exists():
            return []
        with self.runs_path.open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
        if list(header) == list(RUN_COLUMNS):
            return []
        defaults = {name: csv_value(getattr(RunConfig(), name)) for name in LATER_FIELDS} | {"num_params": ""}
        write_csv(self.runs_path, RUN_COLUMNS, [{**defaults, **row} for row in _read_rows(self.runs_path)])
        return [c for c in RUN_COLUMNS if c not in header]

    def append(self, run_row: dict, details: dict[Path, list[dict]]) -> None:
        """Records one finished run: its rows in each detail file (created on first use), then its row
        in ``runs.csv``."""
        for path, rows in details.items():
            if not rows:
                continue
            columns = self.detail_files[path]
            if not path.exists():
                write_csv(path, columns, [])
            _append(path, _csv_text(columns, rows, header=False))
        _append(self.runs_path, _csv_text(RUN_COLUMNS, [run_row], header=False))

    def write_meta(self, meta: dict) -> None:
        _write_atomic(self.meta_path, json.dumps(meta, indent=2) + "\n")


class MergeSummary(NamedTuple):
    runs: int  # runs in the merged folder
    duplicates: int  # rows skipped because an earlier folder already held that run
    grid_runs: int  # runs in the spec's grid
    missing: list[str]  # the grid's runs in none of the folders, described by their swept fields and seed


def merge(sources: list[str | Path], out_dir: str | Path) -> MergeSummary:
    """Combines the results of sweeps of one spec (e.g. its ``--shard`` parts) into ``out_dir``.

    Each run appears once (the first folder holding it wins, with its curve rows); runs are ordered
    as the spec's grid orders them; the summary lists the grid's runs that no folder holds. Raises
    :class:`ResultsError`, writing nothing, if a folder is not a sweep's, the folders come from
    different specs (the message names the folders and the field), or ``out_dir`` already holds
    results.
    """
    stores = [ResultsStore(s) for s in sources]
    for store in stores:
        if not store.runs_path.is_file() or not store.spec_path.is_file():
            raise ResultsError(f"{store.out_dir}: not a sweep folder (needs runs.csv and spec.toml)")
    specs = [load_spec(store.spec_path) for store in stores]
    for store, other in zip(stores[1:], specs[1:]):
        difference = first_difference(specs[0], other)
        if difference:
            raise ResultsError(
                f"{stores[0].out_dir} and {store.out_dir} hold results of different specs ({difference}, "
                "'there' being the first); merge the parts of one spec"
            )
    target = ResultsStore(out_dir)
    target.check_writable()
    if target.runs_path.exists():
        raise ResultsError(f"{target.out_dir}: already holds runs.csv; merge into a new folder")
    spec = specs[0]
    grid = spec.expand()
    order = {run.run_id: i for i, run in enumerate(grid)}
    runs: dict[str, dict] = {}
    details: dict[str, list[dict]] = {path.name: [] for path in target.detail_files}
    duplicates = 0
    for store in stores:
        fresh = set()
        for row in _read_rows(store.runs_path):
            if row["run_id"] in runs:
                duplicates += 1
            else:
                runs[row["run_id"]] = row
                fresh.add(row["run_id"])
        for path in store.detail_files:
            details[path.name] += [row for row in _read_rows(path) if row["run_id"] in fresh]
    ranked = sorted(runs.values(), key=lambda row: order.get(row["run_id"], len(order)))
    rank = {row["run_id"]: i for i, row in enumerate(ranked)}
    target.out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(target.spec_path, spec.to_toml())
    for path, columns in target.detail_files.items():
        rows = sorted(details[path.name], key=lambda row: rank[row["run_id"]])
        if rows or path == target.curves_path:
            write_csv(path, columns, rows)
    write_csv(target.runs_path, RUN_COLUMNS, ranked)
    meta = {"spec": spec.name, "spec_hash": spec.spec_hash, "merged_from": [str(s) for s in sources], **provenance.software()}
    target.write_meta(meta)
    missing = [_describe(run, list(spec.grid)) for run in grid if run.run_id not in runs]
    return MergeSummary(len(ranked), duplicates, len(grid), missing)


def _describe(run, axes: list[str]) -> str:
    return " ".join(f"{axis}={csv_value(getattr(run, axis))}" for axis in [*axes, "seed"])
