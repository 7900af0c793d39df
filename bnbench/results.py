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

from bnbench.errors import BnbenchError
from bnbench.schema import ACTIVATION_COLUMNS, CURVE_COLUMNS, RUN_COLUMNS
from bnbench.spec import Spec, load_spec


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


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
        self.spec_path = self.out_dir / "spec.toml"
        self.meta_path = self.out_dir / "meta.json"

    @property
    def detail_files(self) -> dict[Path, tuple[str, ...]]:
        """The per-run detail files (curves, activation statistics) and their columns."""
        return {self.curves_path: tuple(CURVE_COLUMNS), self.activations_path: tuple(ACTIVATION_COLUMNS)}

    def check_usable(self, spec: Spec, *, resume: bool) -> None:
        """Raises :class:`ResultsError` if the folder cannot take this sweep; creates nothing."""
        self.check_writable()
        if not resume:
            return
        other_spec = self.spec_path.exists() and self.spec_path.read_text(encoding="utf-8") != spec.to_toml()
        other_rows = any(row.get("spec_hash") != spec.spec_hash for row in _read_rows(self.runs_path))
        if other_spec or other_rows:
            raise ResultsError(
                f"{self.out_dir}: holds results of a different spec; pass --no-resume to replace them "
                "or --out to write elsewhere"
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

    def open(self, spec: Spec, *, resume: bool) -> set[str]:
        """Prepares the folder for ``spec`` and returns the run ids already finished in it.

        With ``resume=False`` earlier results in the folder are removed first. Detail rows of runs
        that never reached ``runs.csv`` (a sweep killed between two writes) are dropped.
        """
        self.check_usable(spec, resume=resume)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            for path in (self.runs_path, self.meta_path, *self.detail_files):
                path.unlink(missing_ok=True)
        _write_atomic(self.spec_path, spec.to_toml())
        done = {row["run_id"] for row in _read_rows(self.runs_path)}
        for path, columns in self.detail_files.items():
            rows = _read_rows(path)
            if any(row["run_id"] not in done for row in rows):
                write_csv(path, columns, [row for row in rows if row["run_id"] in done])
        if not self.curves_path.exists():
            write_csv(self.curves_path, CURVE_COLUMNS, [])
        if not self.runs_path.exists():
            write_csv(self.runs_path, RUN_COLUMNS, [])
        return done

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


def merge(sources: list[str | Path], out_dir: str | Path) -> MergeSummary:
    """Combines the results of sweeps of one spec (e.g. its ``--shard`` parts) into ``out_dir``.

    Each run appears once (the first folder holding it wins, with its curve rows); runs are ordered
    as the spec's grid orders them. Raises :class:`ResultsError`, writing nothing, if a folder is not a
    sweep's, the folders come from different specs, or ``out_dir`` already holds results.
    """
    stores = [ResultsStore(s) for s in sources]
    for store in stores:
        if not store.runs_path.is_file() or not store.spec_path.is_file():
            raise ResultsError(f"{store.out_dir}: not a sweep folder (needs runs.csv and spec.toml)")
    spec_texts = {store.spec_path.read_text(encoding="utf-8") for store in stores}
    if len(spec_texts) != 1:
        raise ResultsError("the folders hold results of different specs (their spec.toml differ); merge one spec's")
    target = ResultsStore(out_dir)
    target.check_writable()
    if target.runs_path.exists():
        raise ResultsError(f"{target.out_dir}: already holds runs.csv; merge into a new folder")
    spec = load_spec(stores[0].spec_path)
    order = {run.run_id: i for i, run in enumerate(spec.expand())}
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
    _write_atomic(target.spec_path, spec_texts.pop())
    for path, columns in target.detail_files.items():
        rows = sorted(details[path.name], key=lambda row: rank[row["run_id"]])
        if rows or path == target.curves_path:
            write_csv(path, columns, rows)
    write_csv(target.runs_path, RUN_COLUMNS, ranked)
    target.write_meta({"spec": spec.name, "spec_hash": spec.spec_hash, "merged_from": [str(s) for s in sources]})
    return MergeSummary(len(ranked), duplicates)
