"""Running a spec's grid: plan (validate everything, create nothing), then train and record each run."""

from __future__ import annotations

import datetime
import importlib.metadata
from pathlib import Path
from typing import Iterator, NamedTuple

import jax

from bnbench import data, schema, train
from bnbench.results import ResultsStore
from bnbench.spec import RunConfig, Spec


class SweepPlan(NamedTuple):
    """A validated sweep: every run of the grid, and where results go."""

    spec: Spec
    runs: list[RunConfig]
    store: ResultsStore
    resume: bool


class RunRecord(NamedTuple):
    """One finished run as recorded in ``runs.csv``."""

    config: RunConfig
    result: train.RunResult
    row: dict


def plan(spec: Spec, out_dir: str | Path, *, resume: bool = True) -> SweepPlan:
    """Expands ``spec`` and checks that its data sets load and the output folder is usable.

    Raises a :class:`bnbench.errors.BnbenchError` on any problem; writes nothing.
    """
    runs = spec.expand()
    for dataset, num_samples in {(r.dataset, r.num_samples) for r in runs}:
        data.load(dataset, num_samples)
    store = ResultsStore(out_dir)
    store.check_usable(spec, resume=resume)
    return SweepPlan(spec, runs, store, resume)


def environment() -> dict:
    """Versions, backend and device of this process, as recorded in ``meta.json``."""
    device = jax.devices()[0]
    versions = {p: importlib.metadata.version(p) for p in ("bnbench", "jax", "jaxlib", "optax")}
    return {
        "versions": versions,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
    }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def pending_runs(plan: SweepPlan) -> tuple[list[RunConfig], int]:
    """Opens the output folder; returns the runs still to do and how many were already done."""
    done = plan.store.open(plan.spec, resume=plan.resume)
    todo = [r for r in plan.runs if r.run_id not in done]
    return todo, len(plan.runs) - len(todo)


def execute(plan: SweepPlan, todo: list[RunConfig]) -> Iterator[RunRecord]:
    """Trains each run of ``todo`` in order, appends it to the results and yields it."""
    meta = {"spec": plan.spec.name, "spec_hash": plan.spec.spec_hash, **environment(), "started": _now()}
    meta["finished"] = None
    plan.store.write_meta(meta)
    backend = meta["backend"]
    arrays: dict[tuple[str, int], tuple] = {}
    for config in todo:
        key = (config.dataset, config.num_samples)
        dataset = data.load(*key)
        if key not in arrays:
            arrays[key] = train.device_data(dataset)
        result = train.train_run(config, dataset, arrays[key])
        row = schema.run_row(config, result, spec=plan.spec.name, spec_hash=plan.spec.spec_hash, backend=backend)
        plan.store.append(row, schema.curve_rows(config, result))
        yield RunRecord(config, result, row)
    meta["finished"] = _now()
    plan.store.write_meta(meta)
