"""Running a spec's grid: plan (validate everything, create nothing), then train and record each run."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, NamedTuple

from bnbench import data
from bnbench.results import provenance
from bnbench.results import schema
from bnbench.experiment.fields import RunConfig
from bnbench.errors import BnbenchError
from bnbench.options import DEFAULT_MAX_RUNS, ENGINES, SHARD_COUNT_ENV
from bnbench.results.store import ResultsStore
from bnbench.experiment.spec import Spec, load_spec, with_overrides

if TYPE_CHECKING:
    from bnbench import engine
    from bnbench.stats import group_sequential
    from bnbench.training.outcomes import RunResult


class SweepPlan(NamedTuple):
    """A validated sweep: every run of the grid (this shard's part), where results go, whether to resume
    there, the data folder and the shard."""

    spec: Spec
    runs: list[RunConfig]
    store: ResultsStore
    resume: bool
    data_dir: Path | None = None
    shard: Shard | None = None

    def check_output(self) -> None:
        """Raises a :class:`bnbench.errors.BnbenchError` if the output folder cannot take this sweep."""
        self.store.check_usable(self.spec, resume=self.resume)

    def load_data(self) -> None:
        """Loads every data set of the runs (from ``data_dir``, :mod:`bnbench.data.files`); raises a
        :class:`bnbench.errors.BnbenchError` if one is missing or holds unusable values."""
        for dataset, num_samples in {(r.dataset, r.num_samples) for r in self.runs}:
            data.load(dataset, num_samples, self.data_dir)


class RunRecord(NamedTuple):
    """One finished run as recorded in ``runs.csv``."""

    config: RunConfig
    result: RunResult
    row: dict


class Shard(NamedTuple):
    """Part ``index`` of ``count`` of a grid: the runs whose position in the grid is ``index`` mod
    ``count``; ``task`` says which scheduler task it was read from (``--shard auto``), if any."""

    index: int
    count: int
    task: str = ""

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
    """This process's shard, from the first scheduler found. The count is ``count_text`` (``--shard
    auto/N``) or ``$BNBENCH_SHARD_COUNT`` where given, so that a task is the same shard whichever part of
    its job runs (a re-submitted SLURM task, a retried Kubernetes index):

    * a SLURM job array: shard ``SLURM_ARRAY_TASK_ID``; without a count, the array's size, read only
      where the array is the whole of ``0..N-1`` (a first submission), since a re-submission of some
      tasks (``--array=3``) or an array of one task would otherwise make one task the whole grid;
    * a Kubernetes indexed job: shard ``JOB_COMPLETION_INDEX``, of a count that must be given;
    * a multi-process JAX run (``jax.distributed.initialize()`` called): ``jax.process_index()`` of
      ``jax.process_count()``, which must agree with a count given.

    Raises :class:`ShardError` when no scheduler is found or its variables do not make a shard.
    """
    try:
        given = count_text if count_text is not None else environ.get(SHARD_COUNT_ENV)
        count = int(given) if given is not None else None
        if count is not None and count < 1:
            raise ShardError(f"--shard auto: the shard count must be at least 1, got {count}")
        if "SLURM_ARRAY_TASK_ID" in environ:
            index = int(environ["SLURM_ARRAY_TASK_ID"])
            total = count if count is not None else _slurm_array_size(environ)
            task = f"SLURM array job {environ.get('SLURM_ARRAY_JOB_ID', '?')} task {index}"
        elif "JOB_COMPLETION_INDEX" in environ:
            index, total = int(environ["JOB_COMPLETION_INDEX"]), count
            task = f"Kubernetes indexed job {environ.get('JOB_NAME', '?')} index {index}"
            if total is None:
                raise ShardError(f"--shard auto: JOB_COMPLETION_INDEX is set but not the number of completions: pass "
                                 f"--shard auto/N or set {SHARD_COUNT_ENV}")
        else:
            index, total = (jax_processes or _jax_processes)()
            if total == 1:
                raise ShardError("--shard auto: no scheduler found (SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX, or a "
                                 "multi-process JAX run); pass --shard I/N")
            if count is not None and count != total:
                raise ShardError(f"--shard auto/{count}: the JAX run has {total} processes")
            task = f"JAX process {index} of {total}"
    except (KeyError, ValueError) as err:
        raise ShardError(f"--shard auto: cannot read the scheduler's variables ({err})") from None
    if not 0 <= index < total:
        raise ShardError(f"--shard auto: {task} is outside shards 0..{total - 1}")
    return Shard(index, total, task)


def _slurm_array_size(environ: Mapping[str, str]) -> int:
    """The size of a SLURM array that is the whole of ``0..N-1``; raises :class:`ShardError` otherwise."""
    first, last, step, size = (int(environ.get(f"SLURM_ARRAY_TASK_{k}", d)) for k, d in
                               (("MIN", "0"), ("MAX", "-1"), ("STEP", "1"), ("COUNT", "0")))
    if first != 0 or step != 1 or last != size - 1 or size < 2:
        running = f"task {first}" if size == 1 else f"tasks {first}-{last}" + (f":{step}" if step != 1 else "")
        raise ShardError(f"--shard auto: this SLURM array runs {running}, not the whole of 0-(N-1), so its size is "
                         "not the shard count (a re-submitted task would run the whole grid): pass --shard auto/N, N "
                         "the number of shards")
    return size


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
) -> SweepPlan:
    """Expands ``spec`` (this shard's part of it) and checks its size; reads no data, writes nothing
    (:meth:`SweepPlan.check_output` and :meth:`SweepPlan.load_data` check the rest).

    The size is checked before the grid is built (a grid of more than ``max_runs`` runs is refused at
    once; ``None`` for no limit), and a shard with no run of the grid is refused. Raises a
    :class:`bnbench.errors.BnbenchError` on any problem.
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
    return SweepPlan(spec, runs, ResultsStore(out_dir, spec.argument_columns), resume, data_dir, shard)


def plan_file(
    path: str | Path,
    *,
    sets: list[str] = (),
    seeds: int | None = None,
    shard: str | None = None,
    out: str | Path | None = None,
    engine: str = "vectorized",
    resume: bool = True,
    max_runs: int | None = DEFAULT_MAX_RUNS,
    data_dir: Path | None = None,
) -> SweepPlan:
    """The :func:`plan` of the spec file ``path`` with the command line's overrides (``--set``,
    ``--seeds``) and ``--shard`` (``I/N`` or ``auto``); the output folder defaults to
    ``results/<spec name>`` (``-shard<I>of<N>`` for a shard). ``engine`` is checked by name."""
    if engine not in ENGINES:
        raise BnbenchError(f"--engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
    spec = with_overrides(load_spec(path), sets=sets, seeds=seeds)
    part = Shard.parse(shard) if shard else None
    default = Path("results") / (spec.name + (f"-shard{part.index}of{part.count}" if part else ""))
    return plan(spec, out or default, resume=resume, shard=part, max_runs=max_runs, data_dir=data_dir)


def parse_seeds(text: str | None) -> int | None:
    """``--seeds N`` as a count (None: the spec's); raises :class:`bnbench.errors.BnbenchError` for
    anything but a positive integer (``auto`` is the caller's)."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise BnbenchError(f"--seeds: expected a count of seeds or auto, got {text!r}") from None


def sequential_design(plan: SweepPlan, max_seeds: int, margin: float | None, max_runs: int | None) -> group_sequential.Design:
    """The :mod:`bnbench.stats.group_sequential` design of ``--seeds auto`` for ``plan``: its first look at the spec's
    seed count (at least 3), its last at ``max_seeds``, deciding the spec's comparisons with ``margin``
    (default: the spec's). Raises a :class:`bnbench.errors.BnbenchError` when the spec states no
    comparison, for a shard (each would stop on its own part), or when the last look's grid would
    exceed ``max_runs``."""
    from bnbench.stats import group_sequential  # here: it needs pandas, which planning a sweep does not

    spec = plan.spec
    if not spec.comparisons:
        raise BnbenchError(f'--seeds auto: {spec.source} states no comparison to decide; add compare = ["AXIS=A,B"]')
    if plan.shard is not None:
        raise BnbenchError("--seeds auto: decides on the whole grid; run it without --shard")
    if spec.seeds != tuple(range(len(spec.seeds))):
        raise BnbenchError(f"--seeds auto: adds seeds 0..N-1, but {spec.source} lists seeds {list(spec.seeds)}")
    design = group_sequential.design(len(spec.seeds), max_seeds, margin=spec.margin if margin is None else margin)
    most = spec.num_runs // len(spec.seeds) * max_seeds
    if max_runs is not None and most > max_runs:
        raise GridTooLarge(f"--max-seeds {max_seeds}: {most} runs exceed the limit of {max_runs}; pass --yes or "
                           "--max-runs to allow them, or fewer --max-seeds")
    return design


def replan(plan: SweepPlan, seeds: int, resume: bool = True) -> SweepPlan:
    """``plan`` with ``seeds`` seeds (``0..seeds-1``), into the same folder."""
    spec = with_overrides(plan.spec, seeds=seeds)
    return SweepPlan(spec, spec.expand(), plan.store, resume, plan.data_dir, plan.shard)


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


class Session(NamedTuple):
    """An open sweep: its plan, how the engine executes it, the runs already done, notes on opening the
    folder, and the engine options as ``meta.json`` records them."""

    plan: SweepPlan
    execution: engine.Plan
    done: frozenset[str]
    notes: list[str]
    options: dict


@contextlib.contextmanager
def open_sweep(
    plan: SweepPlan, *, engine: str = "vectorized", runs_per_device: int | None = None, devices: int | None = None,
    sequential: dict | None = None,
) -> Iterator[Session]:
    """Holds the output folder's lock for the sweep's life (:meth:`bnbench.results.store.ResultsStore.lock`),
    plans the engine (:func:`bnbench.engine.execution.prepare`), checks that the runs already in the folder ran in
    the execution context their programs get now, and opens the folder (creating it; see
    :meth:`bnbench.results.store.ResultsStore.open`). Raises a :class:`bnbench.errors.BnbenchError` before
    writing anything if the folder is in use, holds another spec's runs or another context's.
    ``sequential`` (a ``--seeds auto`` design, :meth:`bnbench.stats.group_sequential.Design.to_meta`) goes into
    ``meta.json`` for ``report`` to read the intervals at its looks' levels."""
    from bnbench import engine as engine_lib

    with plan.store.lock("sweep"):
        plan.store.check_usable(plan.spec, resume=plan.resume)
        execution = engine_lib.prepare(
            plan.runs, engine=engine, runs_per_device=runs_per_device, devices=devices, data_dir=plan.data_dir
        )
        if plan.resume:
            plan.store.check_contexts(execution.contexts_by_run())
        done, notes = plan.store.open(plan.spec, resume=plan.resume)
        options = dict(engine=engine, runs_per_device=runs_per_device, devices=devices)
        if sequential is not None:
            options["sequential"] = sequential
        yield Session(plan, execution, frozenset(r.run_id for r in plan.runs if r.run_id in done), notes, options)


def execute(
    session: Session, stop: threading.Event | None = None, program_cache: Path | None = None
) -> Iterator[RunRecord]:
    """Trains the session's runs not yet done, appends each finished run to the results and yields it.

    Setting ``stop`` ends the sweep once the runs in progress are saved. ``meta.json`` records
    ``finished`` only when every run is done. Traced programs are kept in ``program_cache`` if given.
    """
    from bnbench import engine as engine_lib

    plan = session.plan
    meta = {"spec": plan.spec.name, "spec_hash": plan.spec.spec_hash, **environment(), "command": provenance.command(),
            "started": provenance.now()}
    meta.update(session.options, program_cache=program_cache and str(program_cache))
    meta["blocks_at_once"] = len(session.execution.devices)
    meta.update(data_dir=plan.data_dir and str(plan.data_dir), finished=None)
    if plan.shard is not None:
        meta["shard"] = plan.shard._asdict()
    pairs = list(zip(session.execution.groups, session.execution.contexts))
    meta["execution"] = {group.signature.model: ctx.execution for group, ctx in pairs}
    platform = session.execution.devices[0].platform
    meta["convolution"] = {group.signature.model: engine_lib.conv_form(group.signature, platform, ctx.execution)
                           for group, ctx in pairs}
    meta["compiler_options"] = {group.signature.model: engine_lib.compiler_options(group.signature, platform)
                                for group, _ in pairs}
    # The code and data of plugins and own data sets, by the reference the spec wrote: file@digest.
    meta["sources"] = {name: source for group, ctx in pairs for name, source in
                       ((group.signature.model, ctx.model_source), (group.configs[0].dataset, ctx.data_source)) if source}
    plan.store.write_meta(meta)
    finished = len(session.done)
    for config, result in engine_lib.train(session.execution, done=session.done, stop=stop, program_cache=program_cache):
        row = schema.run_row(config, result, spec=plan.spec.name, spec_hash=plan.spec.spec_hash,
                             arguments=plan.spec.argument_columns)
        details = {
            plan.store.curves_path: schema.curve_rows(config, result),
            plan.store.activations_path: schema.activation_rows(config, result),
            plan.store.probes_path: schema.probe_rows(config, result),
        }
        plan.store.append(row, details)
        finished += 1
        yield RunRecord(config, result, row)
    if finished == len(plan.runs):
        meta["finished"] = provenance.now()
        plan.store.write_meta(meta)
