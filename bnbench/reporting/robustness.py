"""Which verdicts rest on float rounding: a spec's runs swept again where only the rounding changes, and
its comparisons' verdicts set side by side.

A run's numbers are a function of its configuration and its execution context; two contexts that differ
only in rounding (portable against native numerics: another instruction set, other kernels, another
split of the sums; the sequential engine's path against the vectorized one) train the same networks on
the same data. A verdict that holds in one and not in another does not rest on the configuration
alone, and is reported as resting on rounding.

Each variant is a ``bnbench sweep`` process of its own (numerics are set per process,
:mod:`bnbench.training.numerics`) into ``OUT/<variant>``, so an interrupted check resumes where it
stopped, and each folder is an ordinary results folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import pandas as pd

from bnbench.engine.policy import ONE_AT_A_TIME
from bnbench.errors import BnbenchError, RunFailure
from bnbench.reporting import model
from bnbench.reporting.cells import number
from bnbench.training import host

# The contexts a spec is swept in, by name: the flags of `bnbench sweep` that give each. The first is
# the one the docs publish (the default of a sweep); the others change the rounding only.
VARIANTS: dict[str, tuple[str, ...]] = {
    "portable": ("--portable",),
    "native": ("--native",),
    "sequential": ("--portable", "--engine", "sequential"),
}


class Robustness(NamedTuple):
    """The verdicts of a spec's stated comparisons in each variant: ``table`` has one row per comparison
    and group, a column per variant (its mean difference, interval and verdict) and ``rests_on_rounding``
    (``yes`` where the variants' verdicts differ); ``folders`` the variants' results folders; ``notes``
    the variants left out and why."""

    table: pd.DataFrame
    folders: dict[str, Path]
    notes: list[str]


def variants(runs: Sequence, platform: str) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """The variants a spec's ``runs`` are swept in (:data:`VARIANTS`), and notes on those left out: the sequential
    engine where the vectorized engine already trains every model of the grid stepwise on ``platform`` in
    portable numerics (with XLA's convolutions: the same path, the same numbers), and both numerics where
    runs compute natively only (off a CPU, or on one without portable numerics; then the first variant is
    ``default``)."""
    chosen, notes = dict(VARIANTS), []
    if platform != "cpu" or not host.portable_possible():
        chosen = {"default": (), "sequential": ("--engine", "sequential")}
        where = f"on {platform}" if platform != "cpu" else f"on this CPU ({host.host_isa() or 'not x86'})"
        notes.append(f"portable numerics left out: {where} every run computes natively")
    models = {run.model for run in runs}
    if models and all(m in ONE_AT_A_TIME.get(platform, ()) for m in models):
        del chosen["sequential"]
        notes.append(f"sequential engine left out: the vectorized engine trains {', '.join(sorted(models))} "
                     f"stepwise on {platform} too, the same path")
    return chosen, notes


def sweep_variants(spec_path: Path, out: Path, chosen: dict[str, tuple[str, ...]], arguments: Sequence[str] = (),
                   on_variant: Callable[[str, int], object] = lambda name, index: None) -> dict[str, Path]:
    """Sweeps ``spec_path`` in each variant (``bnbench sweep SPEC --out OUT/<variant> --no-plots FLAGS
    ARGUMENTS``, a process each; ``on_variant(name, index)`` before each); returns the folders. Raises
    :class:`bnbench.errors.RunFailure` with the sweep's last error line if one fails."""
    folders = {}
    for index, (name, flags) in enumerate(chosen.items()):
        on_variant(name, index)
        folder = out / name
        command = [sys.executable, "-m", "bnbench", "sweep", str(spec_path), "--out", str(folder), "--no-plots",
                   "--yes", *flags, *arguments]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise RunFailure(f"robustness: the {name} sweep failed (exit {done.returncode}): {last}")
        folders[name] = folder
    return folders


def verdict_table(folders: dict[str, Path], comparisons: list[tuple[str, str, str]] | None = None) -> pd.DataFrame:
    """One row per comparison (``comparisons``, ``(axis, a, b)``; default: the spec's) and group of any
    variant's report: each variant's mean difference, interval and verdict (``missing`` where its runs
    hold no pair there, every run on one side having diverged, say), and ``rests_on_rounding``."""
    reports = {name: model.report(folder, comparisons=comparisons) for name, folder in folders.items()}
    rows = []
    for index, comparison in enumerate(next(iter(reports.values())).comparisons):
        tables = {name: _by_group(report.comparisons[index]) for name, report in reports.items()}
        for group in dict.fromkeys(group for table in tables.values() for group in table):
            row = {"comparison": f"{comparison.axis}={comparison.a} − {comparison.b}",
                   "group": ", ".join(f"{axis}={value}" for axis, value in zip(comparison.by, group)) or "all runs"}
            verdicts = set()
            for name, table in tables.items():
                found = table.get(group)
                row[name] = _cell(found) if found else "missing"
                verdicts.add(found["verdict"] if found else "missing")
            row["rests_on_rounding"] = "yes" if len(verdicts) > 1 else "no"
            rows.append(row)
    return pd.DataFrame(rows)


def check(spec_path: Path, runs: Sequence, out: Path, platform: str, arguments: Sequence[str] = (),
          comparisons: Sequence[tuple[str, str, str]] = (),
          on_variant: Callable[[str, int], object] = lambda name, index: None) -> Robustness:
    """Sweeps the spec at ``spec_path`` (its ``runs``, with ``arguments``) in each of its variants into
    ``out`` (resuming: a variant already swept trains nothing) and sets the verdicts of ``comparisons``
    (``(axis, a, b)``: the spec's or others) side by side; writes the table to ``out/robustness.csv``.
    Raises :class:`bnbench.errors.BnbenchError` before sweeping anything if there is no comparison."""
    if not comparisons:
        raise BnbenchError("robustness: the spec states no comparison (compare = [...]); pass --compare AXIS=A,B")
    chosen, notes = variants(runs, platform)
    folders = sweep_variants(spec_path, out, chosen, arguments, on_variant)
    table = verdict_table(folders, list(comparisons))
    table.to_csv(out / "robustness.csv", index=False)
    return Robustness(table, folders, notes)


def platform() -> str:
    """The platform the variants' sweeps will run on: JAX's default backend, asked in a process of its own,
    so that this one holds no accelerator (JAX takes most of a GPU's memory when it starts) while they sweep."""
    asked = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                           capture_output=True, text=True)
    return asked.stdout.strip() or "cpu"


def _by_group(comparison: model.Comparison) -> dict[tuple, dict]:
    return {tuple(str(row[axis]) for axis in comparison.by): row for row in comparison.table.to_dict("records")}


def _cell(row: dict) -> str:
    return f"{number(row['mean_diff'])} [{number(row['ci_low'])}, {number(row['ci_high'])}] {row['verdict']}"
