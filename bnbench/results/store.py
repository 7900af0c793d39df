"""A sweep's output folder: append-only CSV files that survive interruption, resume, one writer at a
time, and merges that never hide a conflict.

Layout of ``<out>/``: ``runs.csv``, ``curves.csv``, ``activations.csv`` when a spec tracks
activations, ``probes.csv`` when it has probes (columns in :mod:`bnbench.results.schema`), ``spec.toml`` (the
resolved spec), ``meta.json`` (versions, backend, device, engine, start and end time) and
``.bnbench-lock``, the file a sweep or merge holds an OS lock on while it writes the folder
(:meth:`ResultsStore.lock`). :func:`merge` combines the folders of one spec's shards.

Each finished run is appended with one ``write`` per file (curves and activations first, then the
run's row), so a run listed in ``runs.csv`` has all its detail rows; detail rows of a run that never
reached ``runs.csv`` are dropped when the sweep resumes. Every reader (resume, merge,
:mod:`bnbench.results.frames`) reads whole rows only (:func:`read_rows`): a last row cut off mid-way is not a
row.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from bnbench.training import context
from bnbench.results import provenance
from bnbench.experiment.fields import LATER_FIELDS, RunConfig
from bnbench.errors import BnbenchError, RunFailure
from bnbench.results.schema import ACTIVATION_COLUMNS, CURVE_COLUMNS, PROBE_COLUMNS, RUN_COLUMNS, csv_value
from bnbench.experiment.runs import argument_key
from bnbench.experiment.spec import Spec, first_difference, load_spec

# The files bnbench.reporting.figures writes (in every format, split into NAME_1, NAME_2, ...) and the HTML report.
PLOT_FILES = tuple(f"{stem}{part}.{fmt}" for stem in ("*_vs_*", "learning_curves", "activations", "probes")
                   for part in ("", "_[0-9]*") for fmt in ("png", "pdf", "svg")) + ("report.html",)
LOCK_FILE = ".bnbench-lock"
# Columns in which two records of one run may differ: its time. Every other column is its result.
TIMING_COLUMNS = ("wall_s",)
# Columns a runs.csv may lack because it was written before they existed (filled in on resume).
LATER_COLUMNS = (*LATER_FIELDS, "num_params", *(c for c in context.COLUMNS if c != "backend"))

# How to resume onto runs whose context differs from this sweep's, by the field that differs.
_CONTEXT_HINTS = {
    "runs_per_device": "pass --runs-per-device {runs_per_device} to match them, ",
    "model_source": "restore the code they ran, ",
    "data_source": "restore the data they ran on, ",
}


class ResultsError(BnbenchError):
    """The output folder cannot be used as asked."""


class WriteFailed(RunFailure, ResultsError):
    """A results file could not be written (a full disk, a folder gone read-only)."""


def _csv_text(columns: Iterable[str], rows: Iterable[dict], header: bool) -> str:
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


def _read_rows(path: Path) -> list[dict]:
    return read_rows(path)[0]


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


def _drop_partial_row(path: Path) -> bool:
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
    write_atomic(path, _csv_text(columns, rows, header=True))


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
        rows = _read_rows(self.runs_path)
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
        for row in _read_rows(self.runs_path):
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
        write_csv(self.runs_path, columns, [{**defaults, **row} for row in _read_rows(self.runs_path)])
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
            _append(path, _csv_text(columns, rows, header=False))
        _append(self.runs_path, _csv_text(self.columns, [run_row], header=False))

    def write_meta(self, meta: dict) -> None:
        write_atomic(self.meta_path, json.dumps(meta, indent=2) + "\n")

    def read_meta(self) -> dict:
        """``meta.json`` (empty if missing or unreadable: it describes, it does not decide)."""
        try:
            return json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}


class MergeSummary(NamedTuple):
    runs: int  # runs in the merged folder
    duplicates: int  # records left out because another folder held the same run with the same results
    grid_runs: int  # runs in the spec's grid
    missing: list[str]  # the grid's runs in none of the folders, described by their swept fields and seed
    notes: list[str]  # what reading the folders left out (cut-off rows, copies within a folder)


class MergeIncomplete(RunFailure, ResultsError):
    """Runs of the grid that no folder holds (a merge without ``partial``): what ran is incomplete."""


def merge(
    sources: list[str | Path],
    out_dir: str | Path,
    *,
    prefer: str | Path | None = None,
    partial: bool = False,
    mixed_context: bool = False,
) -> MergeSummary:
    """Combines the results of sweeps of one spec (e.g. its ``--shard`` parts) into ``out_dir``.

    Each run appears once, with its detail rows, ordered as the spec's grid orders them. A run held
    by several folders must have the same results in each (timings aside); otherwise the merge is an
    error naming the run, both folders and the first differing column, unless ``prefer`` names the
    folder whose record wins. Runs of the grid that no folder holds are an error
    (:class:`MergeIncomplete`, listing them) unless ``partial``. Runs executed on other machines or
    software (:data:`bnbench.training.context.MACHINE_FIELDS`), or with other engine options, are an error unless
    ``mixed_context`` (each run records its context; ``bnbench report`` then groups by it). Raises
    :class:`ResultsError`, writing nothing, if a folder is not a sweep's, the folders come from
    different specs (the message names the folders and the field), or ``out_dir`` already holds
    results.
    """
    stores = [ResultsStore(s) for s in sources]
    spec = _common_spec(stores)
    target = ResultsStore(out_dir, spec.argument_columns)
    target.check_writable()
    if target.runs_path.exists():
        raise ResultsError(f"{target.out_dir}: already holds runs.csv; merge into a new folder")
    chosen, duplicates, notes = _choose_records(stores, prefer)
    if not mixed_context:
        _check_one_context(stores, chosen)
    grid = spec.expand()
    metas = [store.read_meta() for store in stores]
    absent = [position for position, run in enumerate(grid) if run.run_id not in chosen]
    missing = [_describe(grid[position], list(spec.grid)) for position in absent]
    if missing and not partial:
        listed = "; ".join(missing[:5]) + ("; ..." if len(missing) > 5 else "")
        raise MergeIncomplete(f"{len(missing)} of the grid's {len(grid)} runs are in none of the folders ({listed}); "
                              f"{_rerun_hint(absent, metas)}, or pass --partial to merge what there is")
    order = {run.run_id: i for i, run in enumerate(grid)}
    ranked = sorted(chosen, key=lambda run_id: order[run_id])
    with target.lock("merge"):
        write_atomic(target.spec_path, spec.to_toml())
        for path, columns in target.detail_files.items():
            by_folder = {store.out_dir: _rows_by_run(store.out_dir / path.name) for store in stores}
            rows = [row for run_id in ranked for row in by_folder[chosen[run_id][0].out_dir].get(run_id, [])]
            if rows or path == target.curves_path:
                write_csv(path, columns, rows)
        write_csv(target.runs_path, target.columns, [chosen[run_id][1] for run_id in ranked])
        target.write_meta(_merged_meta(stores, metas, spec) | {"partial": bool(missing)})
    return MergeSummary(len(ranked), duplicates, len(grid), missing, notes)


def _rerun_hint(absent: list[int], metas: list[dict]) -> str:
    """What to run again for the runs at grid positions ``absent``: their shards, where the folders are
    the shards of one count (``meta.json``'s ``shard``), else the runs."""
    counts = {meta["shard"]["count"] for meta in metas if isinstance(meta.get("shard"), dict)}
    if len(counts) != 1:
        return "run them and merge again"
    count = counts.pop()
    shards = sorted({position % count for position in absent})
    which = f"they are runs of shard{'s' * (len(shards) > 1)} {', '.join(map(str, shards))} of {count}"
    if any(str(meta.get("shard", {}).get("task", "")).startswith("SLURM") for meta in metas):
        return f"{which}: re-submit those tasks (sbatch --array={','.join(map(str, shards))} with your batch script) and merge again"
    return f"{which}: run {'those shards' if len(shards) > 1 else 'it'} again and merge again"


def _merged_meta(stores: list[ResultsStore], metas: list[dict], spec: Spec) -> dict:
    """``meta.json`` of a merge: every field a sweep writes (the first folder's, with the programs'
    execution and the plugins' sources of all folders), the span of their times, and each folder's
    shard."""
    merged = {key: value for key, value in metas[0].items() if key != "shard"}
    merged.update(spec=spec.name, spec_hash=spec.spec_hash, **provenance.software())
    for key in ("execution", "sources"):
        merged[key] = {name: value for meta in metas for name, value in (meta.get(key) or {}).items()}
    started = [meta["started"] for meta in metas if meta.get("started")]
    finished = [meta.get("finished") for meta in metas]
    merged["started"] = min(started) if started else None
    merged["finished"] = max(finished) if finished and all(finished) else None
    merged["merged_from"] = [{"folder": str(store.out_dir), "shard": meta.get("shard")} for store, meta in zip(stores, metas)]
    merged["merged"] = provenance.now()
    return merged


def _common_spec(stores: list[ResultsStore]) -> Spec:
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
    return specs[0]


def _choose_records(
    stores: list[ResultsStore], prefer: str | Path | None
) -> tuple[dict[str, tuple[ResultsStore, dict]], int, list[str]]:
    """Each run's record ``(folder, row)``, the records left out as duplicates, and notes."""
    if prefer is not None and Path(prefer) not in [s.out_dir for s in stores]:
        raise ResultsError(f"--prefer: {prefer} is not one of the folders merged")
    chosen: dict[str, tuple[ResultsStore, dict]] = {}
    duplicates, notes = 0, []
    for store in stores:
        rows, cut = read_rows(store.runs_path)
        rows, copies = unique_runs(rows, store.runs_path)
        notes += cut + copies
        for row in rows:
            held = chosen.get(row["run_id"])
            if held is None:
                chosen[row["run_id"]] = (store, row)
                continue
            duplicates += 1
            difference = first_result_difference(held[1], row)
            if not difference:
                continue
            preferred = prefer is not None and Path(prefer) in (held[0].out_dir, store.out_dir)
            if not preferred:
                raise ResultsError(
                    f"run {row['run_id']} has different results in {held[0].out_dir} and {store.out_dir} (first "
                    f"difference: {difference}); pass --prefer DIR to keep one folder's"
                )
            if store.out_dir == Path(prefer):
                chosen[row["run_id"]] = (store, row)
    return chosen, duplicates, notes


def _check_one_context(stores: list[ResultsStore], chosen: dict[str, tuple[ResultsStore, dict]]) -> None:
    """Refuses records from other machines, software or engine options than the first record's."""
    records = list(chosen.values())
    if not records:
        return
    first_store, first = records[0]
    for store, row in records[1:]:
        for field in context.MACHINE_FIELDS:
            if row.get(field) != first.get(field):
                raise ResultsError(
                    f"{first_store.out_dir} and {store.out_dir} hold runs executed in other contexts ({field} is "
                    f"{first.get(field)!r} there, {row.get(field)!r} here); pass --mixed-context to merge them "
                    "(report then groups runs by it)"
                )
    options = {store.out_dir: {k: store.read_meta().get(k) for k in ("engine", "runs_per_device")} for store, _ in records}
    for folder, chosen_options in options.items():
        if chosen_options != options[first_store.out_dir]:
            raise ResultsError(
                f"{first_store.out_dir} and {folder} were swept with other engine options ({options[first_store.out_dir]} "
                f"and {chosen_options} in meta.json); pass --mixed-context to merge them (report then groups runs by "
                "their execution context)"
            )


def _rows_by_run(path: Path) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in _read_rows(path):
        grouped.setdefault(row["run_id"], []).append(row)
    return grouped


def _describe(run, axes: list[str]) -> str:
    return " ".join(f"{axis}={csv_value(getattr(run, axis))}" for axis in [*axes, "seed"])
