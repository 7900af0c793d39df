"""Loading a sweep's CSV files as typed pandas DataFrames.

``pandas.read_csv`` reads the raw files as they are; these loaders read whole rows only (a last row cut
off mid-way, by a full disk or a sweep still writing, is left out), count every run once (a run
recorded twice with the same results keeps one row; with different results it is an error), and say
what they left out in the frame's ``attrs["notes"]``. They add the documented dtypes:
the configuration's text and list fields (data set, model, widths, activation, placement, norm,
optimizer, ...), ``status`` and the execution context as ``category``, ``run_id`` and ``trains_as`` as ``string``,
numbers as numbers (``diverged_step`` as the nullable ``Int64``), the true/false fields as ``bool``.
Columns: :mod:`bnbench.results.schema`.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from bnbench.training import context
from bnbench.experiment.fields import FIELDS
from bnbench.errors import BnbenchError
from bnbench.experiment.runs import argument_key
from bnbench.results.csv_files import ResultsError, read_rows, unique_runs, whole_rows_text
from bnbench.results.schema import ACTIVATION_COLUMNS, CURVE_COLUMNS, PROBE_COLUMNS, RUN_COLUMNS

# Text columns, read as categories: the run fields of text or list values, and the columns written with them.
CATEGORICAL = (
    "spec", "spec_hash", *(name for name, f in FIELDS.items() if f.rule.kind in ("str", "list", "choices")),
    "momentum_convention", "status", *context.COLUMNS,
)
BOOLEAN = tuple(name for name, f in FIELDS.items() if f.rule.kind == "bool")


class LoadError(BnbenchError):
    """A results folder or file that cannot be read."""


def _read(path: Path, columns, dtypes: dict, later: tuple[str, ...] = ()) -> pd.DataFrame:
    """The whole rows of a CSV file, typed; columns in ``later`` (newer than some files) may be missing
    and read as empty."""
    if not path.is_file():
        raise LoadError(f"{path}: no such file; expected a folder written by `bnbench sweep`")
    try:
        text, cut = whole_rows_text(path)
        frame = pd.read_csv(io.StringIO(text), dtype=dtypes)
    except ResultsError:
        raise LoadError(f"{path}: not UTF-8 text; expected a CSV file written by `bnbench sweep`") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LoadError(f"{path}: cannot be read as a CSV file ({reason})") from None
    missing = [c for c in columns if c not in frame and c not in later]
    if missing:
        raise LoadError(f"{path}: missing columns {', '.join(missing)}")
    for column in later:
        if column not in frame:
            frame[column] = pd.Series(pd.NA, index=frame.index, dtype=dtypes.get(column, "object"))
    frame.attrs["notes"] = [f"{path}: left out a last row that was cut off mid-way"] if cut else []
    return frame


def load_runs(results_dir: str | Path) -> pd.DataFrame:
    """``runs.csv`` of a results folder, typed as documented in this module, each run once.

    Raises :class:`LoadError` if a run is recorded twice with different results. A file written
    before the execution context was recorded reads it as missing (``<NA>``).
    """
    path = Path(results_dir) / "runs.csv"
    dtypes = {c: "category" for c in CATEGORICAL} | {"run_id": "string", "trains_as": "string"}
    frame = _read(path, RUN_COLUMNS, dtypes, later=("trains_as", *(c for c in context.COLUMNS if c != "backend")))
    try:
        _, notes = unique_runs(read_rows(path)[0], path)
    except ResultsError as err:
        raise LoadError(str(err)) from None
    notes = frame.attrs["notes"] + notes
    frame = frame.drop_duplicates("run_id").reset_index(drop=True)
    frame["diverged_step"] = frame["diverged_step"].astype("Int64")
    frame["probes"] = frame["probes"].astype("string").fillna("").astype("category")  # an empty list reads as NaN
    for column in BOOLEAN:
        frame[column] = frame[column].astype(bool)
    for column in (c for c in frame.columns if argument_key(c) and not pd.api.types.is_numeric_dtype(frame[c])):
        frame[column] = frame[column].astype("category")  # a text (or list) argument: a label
    frame.attrs["notes"] = notes
    return frame


def load_curves(results_dir: str | Path) -> pd.DataFrame:
    """``curves.csv`` of a results folder: ``run_id`` string, ``step`` int, losses and accuracy float."""
    return _read(Path(results_dir) / "curves.csv", CURVE_COLUMNS, {"run_id": "string"})


def load_probes(results_dir: str | Path) -> pd.DataFrame:
    """``probes.csv`` of a results folder (empty if no run had probes): ``run_id`` string, ``step`` and
    ``layer`` int, ``probe`` category, ``value`` float."""
    return _read_details(results_dir, "probes.csv", PROBE_COLUMNS, {"run_id": "string", "probe": "category"})


def load_activations(results_dir: str | Path) -> pd.DataFrame:
    """``activations.csv`` of a results folder (empty if no run tracked activations)."""
    return _read_details(results_dir, "activations.csv", ACTIVATION_COLUMNS, {"run_id": "string"})


def _read_details(results_dir: str | Path, name: str, columns, dtypes: dict) -> pd.DataFrame:
    """A per-run detail file of a results folder, typed; empty (same columns and dtypes) where the
    folder holds runs but no run wrote this file."""
    path = Path(results_dir) / name
    if not path.exists() and (Path(results_dir) / "runs.csv").exists():
        empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
        return empty.astype({"step": "int64", "layer": "int64", **dtypes})
    return _read(path, columns, dtypes)
