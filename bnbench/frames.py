"""Loading a sweep's CSV files as typed pandas DataFrames.

``pandas.read_csv`` reads the raw files as they are; these loaders add the documented dtypes:
strings of the configuration (data set, model, widths, activation, placement, norm, optimizer, ...)
and ``status`` as ``category``, ``run_id`` as ``string``, numbers as numbers (``diverged_step`` as
the nullable ``Int64``), ``renorm``, ``bn_weight_decay`` and ``track_activations`` as ``bool``.
Columns: :mod:`bnbench.schema`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bnbench.errors import BnbenchError
from bnbench.schema import ACTIVATION_COLUMNS, CURVE_COLUMNS, PROBE_COLUMNS, RUN_COLUMNS

CATEGORICAL = (
    "spec",
    "spec_hash",
    "dataset",
    "model",
    "widths",
    "probes",
    "activation",
    "placement",
    "norm",
    "running_var",
    "eval_stats",
    "momentum_convention",
    "optimizer",
    "residual_unit",
    "shortcut",
    "init",
    "schedule",
    "lr_milestones",
    "augment",
    "dropout_placement",
    "dtype",
    "status",
    "backend",
)


class LoadError(BnbenchError):
    """A results folder or file that cannot be read."""


def _read(path: Path, columns, dtypes: dict) -> pd.DataFrame:
    if not path.is_file():
        raise LoadError(f"{path}: no such file; expected a folder written by `bnbench sweep`")
    try:
        frame = pd.read_csv(path, dtype=dtypes)
    except UnicodeDecodeError:
        raise LoadError(f"{path}: not UTF-8 text; expected a CSV file written by `bnbench sweep`") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LoadError(f"{path}: cannot be read as a CSV file ({reason})") from None
    missing = [c for c in columns if c not in frame]
    if missing:
        raise LoadError(f"{path}: missing columns {', '.join(missing)}")
    return frame


def load_runs(results_dir: str | Path) -> pd.DataFrame:
    """``runs.csv`` of a results folder, typed as documented in this module."""
    dtypes = {c: "category" for c in CATEGORICAL} | {"run_id": "string", "widths": "category"}
    frame = _read(Path(results_dir) / "runs.csv", RUN_COLUMNS, dtypes)
    frame["diverged_step"] = frame["diverged_step"].astype("Int64")
    frame["probes"] = frame["probes"].astype("string").fillna("").astype("category")  # an empty list reads as NaN
    for column in ("renorm", "bn_weight_decay", "track_activations", "nesterov"):
        frame[column] = frame[column].astype(bool)
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
