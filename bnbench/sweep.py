"""Running a spec's grid: plan (validate everything, create nothing), then train and record each run."""

from __future__ import annotations

import datetime
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, NamedTuple

from bnbench import data, provenance, schema
from bnbench.config import RunConfig
from bnbench.errors import BnbenchError
from bnbench.options import DEFAULT_MAX_RUNS, SHARD_COUNT_ENV
from bnbench.results import ResultsStore
from bnbench.spec import Spec

if TYPE_CHECKING:
    from bnbench.outcomes import RunResult


class SweepPlan(NamedTuple):
    """A validated sweep: every run of the grid, where results go, and the data folder."""

    spec: Spec
    runs: list[RunConfig]
    store: ResultsStore
    resume: bool
    data_dir: Path | None = None


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
    def parse(
        cls, text: str, environ: Mapping[str, str] = os.environ, jax_processes: Callable[[], tuple[int, int]] | None = None
    ) -> Shard:
        """Reads ``i/n`` with ``0 <= i < n``, or ``auto`` / ``auto/n`` (see :func:`shard_from_scheduler`);
        raises :class:`ShardError` otherwise."""
        index, sep, count = text.partition("/")
        if index == "auto":
            return shard_from_scheduler(environ, count or None, jax_processes)
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            shard = None
        if not sep or shard is None or not 0 <= shard.index < shard.count:
            raise ShardError(f"--shard: expected i/n with 0 <= i < n, or auto, got {text!r}")
        return shard


def _jax_processes() -> tuple[int, int]:
    import jax  # here: only a run with no scheduler variables asks JAX

    return jax.process_index(), jax.process_count()


def shard_from_scheduler(
    environ: Mapping[str, str], count_text: str | None = None, jax_processes: Callable[[], tuple[int, int]] | None = None
) -> Shard:
    """This process's shard, from the first scheduler found:

    * a SLURM job array: ``(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP`` of
      ``SLURM_ARRAY_TASK_COUNT`` (``--array=0-7`` or ``--array=1-15:2`` alike);
    * a Kubernetes indexed job: ``JOB_COMPLETION_INDEX`` of ``count_text`` (``--shard auto/N``) or
      ``$BNBENCH_SHARD_COUNT`` (set it to the job's ``completions``);
    * a multi-process JAX run (``jax.distributed.initialize()`` called): ``jax.process_index()`` of
      ``jax.process_count()``.

    ``count_text``, when given, must agree with the scheduler's count. Raises :class:`ShardError` when
    no scheduler is found or its variables do not make a shard.
    """
    try:
        count = int(count_text) if count_text is not None else None
        if "SLURM_ARRAY_TASK_ID" in environ:
            task, first = int(environ["SLURM_ARRAY_TASK_ID"]), int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
            step, total = int(environ.get("SLURM_ARRAY_TASK_STEP", "1")), int(environ["SLURM_ARRAY_TASK_COUNT"])
            where, index = "SLURM array", (task - first) // step
        elif "JOB_COMPLETION_INDEX" in environ:
            where, index = "Kubernetes indexed job", int(environ["JOB_COMPLETION_INDEX"])
            total = count if count is not None else int(environ[SHARD_COUNT_ENV]) if SHARD_COUNT_ENV in environ else None
            if total is None:
                raise ShardError(f"--shard auto: JOB_COMPLETION_INDEX is set but not the number of completions: pass "
                                 f"--shard auto/N or set {SHARD_COUNT_ENV}")
        else:
            where, (index, total) = "JAX", (jax_processes or _jax_processes)()
            if total == 1:
                raise ShardError("--shard auto: no scheduler found (SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX, or a "
                                 "multi-process JAX run); pass --shard I/N")
    except (KeyError, ValueError) as err:
        raise ShardError(f"--shard auto: cannot read the scheduler's variables ({err})") from None
    if count is not None and count != total:
        raise ShardError(f"--shard auto/{count}: the {where} has {total} tasks")
    if not 0 <= index < total:
        raise ShardError(f"--shard auto: {where} task {index} is outside 0..{total - 1}")
    return Shard(index, total)


class ShardError(BnbenchError):
    """A malformed ``--shard``."""


class GridTooLarge(BnbenchError):
    """A grid with more runs than the caller allowed."""


def plan(
    spec: Spec,
    out_dir: str | Path,
    *,
    resume: bool = True,
    shard: Shard | None = None,
    max_runs: int | None = DEFAULT_MAX_RUNS,
    data_dir: Path | None = None,
    check_data: bool = True,
    check_output: bool = True,
) -> SweepPlan:
    """Expands ``spec`` (this shard's part of it) and checks its size, data sets and output folder.

    The size is checked before the grid is built (a grid of more than ``max_runs`` runs is refused at
    once; ``None`` for no limit), and a shard with no run of the grid is refused. Data sets are looked
    for in ``data_dir`` (see :mod:`bnbench.datafiles`) and loaded, unless ``check_data`` is false; the
    output folder is checked unless ``check_output`` is false. Raises a
    :class:`bnbench.errors.BnbenchError` on any problem; writes nothing.
    """
    total = spec.num_runs
    size = len(range(shard.index, total, shard.count)) if shard is not None else total
    if max_runs is not None and size > max_runs:
        raise GridTooLarge(
            f"{spec.source}: grid: {size} runs exceed the limit of {max_runs}; pass --yes to run them all "
            "or --max-runs to change the limit"
        )
    if size == 0:
        raise ShardError(f"--shard {shard.index}/{shard.count}: nothing to run, the grid has only {total} runs")
    runs = spec.expand()
    if shard is not None:
        runs = runs[shard.index :: shard.count]
    if check_data:
        for dataset, num_samples in {(r.dataset, r.num_samples) for r in runs}:
            data.load(dataset, num_samples, data_dir)
    store = ResultsStore(out_dir)
    if check_output:
        store.check_usable(spec, resume=resume)
    return SweepPlan(spec, runs, store, resume, data_dir)


def environment() -> dict:
    """What a row needs to be reproduced, besides its spec: versions, commit, backend, devices, flags."""
    import jax  # here, where it is used: planning a sweep needs no JAX (start-up time)

    device = jax.devices()[0]
    return {
        **provenance.software(),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def open_results(plan: SweepPlan) -> tuple[frozenset[str], list[str]]:
    """Opens the output folder (creating it); returns the ids of this grid's runs already in it, and
    notes on what opening changed (see :meth:`bnbench.results.ResultsStore.open`)."""
    done, notes = plan.store.open(plan.spec, resume=plan.resume)
    return frozenset(r.run_id for r in plan.runs if r.run_id in done), notes


def execute(
    plan: SweepPlan, done: frozenset[str], stop: threading.Event | None = None, **engine_options
) -> Iterator[RunRecord]:
    """Trains the plan's runs not in ``done``, appends each finished run to the results and yields it.

    ``engine_options`` go to :func:`bnbench.engine.run_all`. Setting ``stop`` ends the sweep once the
    runs in progress are saved. ``meta.json`` records ``finished`` only when every run is done.
    """
    from bnbench import engine

    meta = {"spec": plan.spec.name, "spec_hash": plan.spec.spec_hash, **environment(), "started": _now()}
    meta.update({k: str(v) if isinstance(v, Path) else v for k, v in engine_options.items()})
    meta.update(data_dir=plan.data_dir and str(plan.data_dir), finished=None)
    meta["execution"] = engine.execution_paths(plan.runs, engine_options.get("engine", "vectorized"), meta["backend"])
    plan.store.write_meta(meta)
    finished = len(done)
    runs = engine.run_all(plan.runs, done=done, stop=stop, data_dir=plan.data_dir, **engine_options)
    for config, result in runs:
        row = schema.run_row(config, result, spec=plan.spec.name, spec_hash=plan.spec.spec_hash, backend=meta["backend"])
        details = {
            plan.store.curves_path: schema.curve_rows(config, result),
            plan.store.activations_path: schema.activation_rows(config, result),
            plan.store.probes_path: schema.probe_rows(config, result),
        }
        plan.store.append(row, details)
        finished += 1
        yield RunRecord(config, result, row)
    if finished == len(plan.runs):
        meta["finished"] = _now()
        plan.store.write_meta(meta)
