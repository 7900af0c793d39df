"""Merging the output folders of one spec's sweeps (its ``--shard`` parts) into one folder that never
hides a conflict: each run once, in grid order, a run with different results in two folders an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from bnbench.errors import RunFailure
from bnbench.experiment.rules import csv_value
from bnbench.experiment.extension import first_difference
from bnbench.experiment.spec import Spec, load_spec
from bnbench.training import context
from bnbench.results import provenance
from bnbench.results.csv_files import (
    ResultsError, first_result_difference, read_rows, unique_runs, write_atomic, write_csv,
)
from bnbench.results.folder import ResultsStore


class MergeSummary(NamedTuple):
    """What :func:`merge` wrote and left out."""

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
    """Refuses records from other machines, software or engine options than the first record's, and
    records of a model whose convolutions ran by another kernel than its first record's."""
    records = list(chosen.values())
    if not records:
        return
    first = records[0]
    same_model: dict[str, tuple[ResultsStore, dict]] = {}
    for store, row in records:
        # The machine is the first record's; a convolution kernel, the first record's of the same model
        # (the models of one grid may convolve by different kernels, or not at all).
        model_first = same_model.setdefault(row.get("model"), (store, row))
        for field, (other_store, other) in [*((f, first) for f in context.MACHINE_FIELDS), ("convolution", model_first)]:
            if row.get(field) != other.get(field):
                raise ResultsError(
                    f"{other_store.out_dir} and {store.out_dir} hold runs executed in other contexts ({field} is "
                    f"{other.get(field)!r} there, {row.get(field)!r} here); pass --mixed-context to merge them "
                    "(report then groups runs by it)"
                )
    first_store = first[0]
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
    for row in read_rows(path)[0]:
        grouped.setdefault(row["run_id"], []).append(row)
    return grouped


def _describe(run, axes: list[str]) -> str:
    return " ".join(f"{axis}={csv_value(getattr(run, axis))}" for axis in [*axes, "seed"])
