"""Running a spec's grid, once planned (:mod:`bnbench.sweeping.plan`): train and record each run."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple

import jax

from bnbench.engine import Assignment, assign_runs, compiler_options, train_blocks
from bnbench.experiment.fields import RunConfig
from bnbench.experiment.identity import shared_trainings
from bnbench.results import provenance, schema
from bnbench.sweeping.plan import SweepPlan
from bnbench.training import host

if TYPE_CHECKING:
    from bnbench.stats import group_sequential
    from bnbench.training.outcomes import RunResult


class RunRecord(NamedTuple):
    """One finished run as recorded in ``runs.csv``."""

    config: RunConfig
    result: RunResult
    row: dict


def environment() -> dict:
    """What a row needs to be reproduced, besides its spec: versions, commit, backend, devices, flags."""
    device = jax.devices()[0]
    return {
        **provenance.software(),
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "host_processor": host.host_processor(),
        "device_count": jax.device_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


class Session(NamedTuple):
    """An open sweep: its plan, the engine's assignment of its runs to blocks, the runs already done, notes on opening
    the folder, and the engine options as ``meta.json`` records them."""

    plan: SweepPlan
    assignment: Assignment
    done: frozenset[str]
    notes: list[str]
    options: dict
    copies: dict[str, list[RunConfig]] = {}  # runs recorded from another's training, by its run id

    @property
    def todo(self) -> int:
        """The runs of the plan not yet in the folder: those :func:`execute` trains."""
        return len(self.plan.runs) - len(self.done)


@contextlib.contextmanager
def open_sweep(
    plan: SweepPlan, *, engine: str = "vectorized", runs_per_device: int | None = None, devices: int | None = None,
    numerics: str | None = None, design: group_sequential.Design | None = None,
) -> Iterator[Session]:
    """Holds the output folder's lock for the sweep's life (:meth:`bnbench.results.folder.ResultsStore.lock`),
    assigns the runs (:func:`bnbench.engine.blocks.assign_runs`), checks that the runs already in the folder ran in
    the execution context their programs get now, and opens the folder (creating it; see
    :meth:`bnbench.results.folder.ResultsStore.open`). Raises a :class:`bnbench.errors.BnbenchError` before
    writing anything if the folder is in use, holds another spec's runs or another context's.
    ``numerics`` (``--portable``/``--native``) replaces the spec's (:attr:`bnbench.experiment.spec.Spec.numerics`).
    ``design`` (the ``--seeds auto`` design, :mod:`bnbench.sweeping.until_decided`) goes into ``meta.json``
    (key ``sequential``) for ``report`` to read the intervals at its looks' levels."""
    with plan.store.lock("sweep"):
        plan.store.check_usable(plan.spec, resume=plan.resume)
        assignment = assign_runs(plan.runs, engine=engine, runs_per_device=runs_per_device, devices=devices,
                                 data_dir=plan.data_dir, numerics=numerics or plan.spec.numerics)
        contexts = assignment.contexts_by_run()
        if plan.resume:
            plan.store.check_contexts(contexts)
        done, notes = plan.store.open(plan.spec, resume=plan.resume)
        notes.extend(filter(None, [assignment.convolution_note()]))
        options = dict(engine=engine, runs_per_device=runs_per_device, devices=devices)
        if design is not None:
            options["sequential"] = design.to_meta()
        copies = shared_trainings([r for r in plan.runs if r.run_id not in done], lambda run: contexts[run.run_id])
        if copies:
            notes.append(f"{sum(map(len, copies.values()))} runs train as another run of the grid (placement none "
                         "under every norm kind, or a norm setting without its norm): each trains once, recorded under "
                         "every configuration, with the same trains_as")
        yield Session(plan, assignment, frozenset(r.run_id for r in plan.runs if r.run_id in done), notes, options,
                      copies)


def execute(
    session: Session, stop: threading.Event | None = None, program_cache: Path | None = None
) -> Iterator[RunRecord]:
    """Trains the session's runs not yet done, appends each finished run to the results and yields it.

    Setting ``stop`` ends the sweep once the runs in progress are saved. ``meta.json`` records
    ``finished`` only when every run is done. Traced programs are kept in ``program_cache`` if given.
    """
    plan = session.plan
    meta = {"spec": plan.spec.name, "spec_hash": plan.spec.spec_hash, **environment(), "command": provenance.command(),
            "started": provenance.now()}
    meta.update(session.options, program_cache=program_cache and str(program_cache))
    meta["blocks_at_once"] = len(session.assignment.devices)
    meta.update(data_dir=plan.data_dir and str(plan.data_dir), finished=None)
    if plan.shard is not None:
        meta["shard"] = plan.shard._asdict()
    pairs = list(zip(session.assignment.groups, session.assignment.contexts))
    meta["execution"] = {group.signature.model: ctx.execution for group, ctx in pairs}
    platform = session.assignment.devices[0].platform
    meta["convolution"] = {group.signature.model: ctx.convolution for group, ctx in pairs}
    meta["compiler_options"] = {group.signature.model: compiler_options(group.signature, platform, ctx.numerics,
                                                                        ctx.conv_kernel) for group, ctx in pairs}
    # The code and data of plugins and own data sets, by the reference the spec wrote: file@digest.
    meta["sources"] = {name: source for group, ctx in pairs for name, source in
                       ((group.signature.model, ctx.model_source), (group.configs[0].dataset, ctx.data_source)) if source}
    plan.store.write_meta(meta)
    finished = len(session.done)
    copied = frozenset(c.run_id for runs in session.copies.values() for c in runs)
    for trained, result in train_blocks(session.assignment, done=session.done | copied, stop=stop,
                                        program_cache=program_cache):
        for config in (trained, *session.copies.get(trained.run_id, ())):
            record = _record(plan, config, result)
            finished += 1
            yield record
    if finished == len(plan.runs):
        meta["finished"] = provenance.now()
        plan.store.write_meta(meta)


def _record(plan: SweepPlan, config: RunConfig, result: RunResult) -> RunRecord:
    """Appends ``config``'s rows, its ``result``, to the results."""
    row = schema.run_row(config, result, spec=plan.spec.name, spec_hash=plan.spec.spec_hash,
                         arguments=plan.spec.argument_columns)
    details = {
        plan.store.curves_path: schema.curve_rows(config, result),
        plan.store.activations_path: schema.activation_rows(config, result),
        plan.store.probes_path: schema.probe_rows(config, result),
    }
    plan.store.append(row, details)
    return RunRecord(config, result, row)


def train_all(session: Session) -> None:
    """Trains every run of ``session`` not yet done, reporting nothing."""
    for _ in execute(session):
        pass


def sweep(
    plan: SweepPlan, train: Callable[[Session], object] = train_all, *, design: group_sequential.Design | None = None,
    download: Callable[[list[str], Path | None], object] | None = None, **engine_options,
) -> None:
    """Trains ``plan``: checks its output folder, then (the folder known to take it) downloads its data
    sets with ``download(names, data_dir)`` if given, loads them, opens the sweep (:func:`open_sweep` with
    ``engine_options`` and ``design``) and hands the session to ``train``, which trains it through
    :func:`execute` (the command line with progress; by default :func:`train_all`)."""
    plan.check_output()
    if download is not None:
        download(plan.spec.datasets, plan.data_dir)
    plan.load_data()
    with open_sweep(plan, **engine_options, design=design) as session:
        train(session)
