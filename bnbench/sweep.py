"""Running a spec's grid: plan (validate everything, create nothing), then train and record each run."""

from __future__ import annotations

import datetime
import importlib.metadata
from pathlib import Path
from typing import Iterator, NamedTuple

import jax

from bnbench import data, engine, schema
from bnbench.errors import BnbenchError
from bnbench.results import ResultsStore
from bnbench.spec import RunConfig, Spec
from bnbench.train import RunResult


class SweepPlan(NamedTuple):
    """A validated sweep: every run of the grid, and where results go."""

    spec: Spec
    runs: list[RunConfig]
    store: ResultsStore
    resume: bool


class RunRecord(NamedTuple):
    """One finished run as recorded in ``runs.csv``."""

    config: RunConfig
    result: RunResult
    row: dict


class Shard(NamedTuple):
    """Part ``index`` of ``count`` of a grid: the runs whose position in the grid is ``index`` mod ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Reads ``i/n`` with ``0 <= i < n``; raises :class:`ShardError` otherwise."""
        index, sep, count = text.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            shard = None
        if not sep or shard is None or not 0 <= shard.index < shard.count:
            raise ShardError(f"--shard: expected i/n with 0 <= i < n, got {text!r}")
        return shard


class ShardError(BnbenchError):
    """A malformed ``--shard``."""


def plan(spec: Spec, out_dir: str | Path, *, resume: bool = True, shard: Shard | None = None) -> SweepPlan:
    """Expands ``spec`` (this shard's part of it) and checks its data sets and output folder.

    Raises a :class:`bnbench.errors.BnbenchError` on any problem; writes nothing.
    """
    runs = spec.expand()
    if shard is not None:
        runs = runs[shard.index :: shard.count]
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


def open_results(plan: SweepPlan) -> frozenset[str]:
    """Opens the output folder (creating it) and returns the ids of this grid's runs already in it."""
    done = plan.store.open(plan.spec, resume=plan.resume)
    return frozenset(r.run_id for r in plan.runs if r.run_id in done)


def execute(plan: SweepPlan, done: frozenset[str], **engine_options) -> Iterator[RunRecord]:
    """Trains the plan's runs not in ``done`` (see :func:`bnbench.engine.run_all` for the options),
    appends each finished run to the results and yields it."""
    meta = {"spec": plan.spec.name, "spec_hash": plan.spec.spec_hash, **environment(), "started": _now()}
    meta.update(engine_options, finished=None)
    plan.store.write_meta(meta)
    for config, result in engine.run_all(plan.runs, done=done, **engine_options):
        row = schema.run_row(config, result, spec=plan.spec.name, spec_hash=plan.spec.spec_hash, backend=meta["backend"])
        plan.store.append(row, schema.curve_rows(config, result))
        yield RunRecord(config, result, row)
    meta["finished"] = _now()
    plan.store.write_meta(meta)
