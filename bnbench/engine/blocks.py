"""Runs grouped by compiled program, each group's execution context, and the blocks that train them.

A group's runs are cut into **blocks** of :func:`block_size` runs, a number decided by the program and
the device alone, the last block padded with copies of its last run (:mod:`bnbench.engine.run_block`).
XLA compiles a vmapped program differently for each number of runs per device, so that number decides
a run's float32 numbers, while neither the other runs of a block nor their order do (tested). With
blocks whose size depends on the program and device only, a run's results are a function of its
configuration and its execution context (:mod:`bnbench.training.context`, recorded per run), whatever
else is in the grid, the grid's order, resume, extension, sharding or the device count.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax

from bnbench import data
from bnbench.engine import memory
from bnbench.engine.devices import slots
from bnbench.engine.errors import EngineError
from bnbench.engine.policy import (CONVOLUTIONAL, MAX_CONV_RUNS_PER_DEVICE, MAX_RUNS_PER_DEVICE, choose_path, conv_form,
                                   family, onednn_applies)
from bnbench.experiment.fields import RunConfig
from bnbench.kernels import onednn
from bnbench.options import ENGINES, usable_cpus
from bnbench.training import context
from bnbench.training import numerics as numerics_lib
from bnbench.training.context import ExecutionContext
from bnbench.training.signature import Signature


class Group(NamedTuple):
    """Runs sharing one compiled program and one data set."""

    signature: Signature
    dataset: data.Dataset
    configs: list[RunConfig]


class Assignment(NamedTuple):
    """The engine's assignment of a sweep's runs: groups of runs, the context each group executes in
    (its path and block size), and the slots that train them
    (:func:`bnbench.engine.devices.slots`)."""

    groups: list[Group]
    contexts: list[ExecutionContext]
    devices: tuple[jax.Device, ...]

    def contexts_by_run(self) -> dict[str, ExecutionContext]:
        """Each run's execution context, by run id."""
        return {c.run_id: ctx for group, ctx in zip(self.groups, self.contexts) for c in group.configs}

    def convolution_note(self) -> str | None:
        """One line where runs the policy gives oneDNN's convolutions to (:func:`bnbench.engine.policy.onednn_applies`)
        train without them: natively, why (oneDNN's kernels cannot be had, or lack the runs' dtype on this
        CPU); in portable numerics, that ``--native`` would use them. None otherwise."""
        without = [(group.signature, ctx) for group, ctx in zip(self.groups, self.contexts)
                   if onednn_applies(group.signature, self.devices[0].platform) and ctx.conv_kernel != "onednn"]
        if not without:
            return None
        problem = onednn.problem()
        native = sorted({sig.dtype for sig, ctx in without if ctx.numerics == "native"})
        if native and problem:
            return f"ResNets and VGG on images do not use oneDNN's convolutions: {problem}"
        if native:
            return (f"ResNets and VGG on images in {', '.join(native)} do not use oneDNN's convolutions: oneDNN lacks "
                    f"{', '.join(native)} convolutions on this CPU")
        if problem is None:
            return ("ResNets and VGG on images do not use oneDNN's convolutions in portable numerics; --native uses "
                    "them, faster (docs/engine.md)")
        return None


class Block(NamedTuple):
    """Runs of one group trained together on one device: ``context.runs_per_device`` slots (the
    compiled program's runs), of which ``configs`` are the real runs; a stepwise block holds one run."""

    group: Group
    context: ExecutionContext
    configs: list[RunConfig]


def group_runs(configs: list[RunConfig], data_dir: str | Path | None = None) -> list[Group]:
    """Groups runs by (signature, data set), keeping the order in which groups first appear.

    Data sets are loaded from ``data_dir`` (see :mod:`bnbench.data.files`).
    """
    groups: dict[tuple, Group] = {}
    for config in configs:
        dataset = data.load(config.dataset, config.num_samples, data_dir)
        key = (Signature.of(config, dataset), config.dataset, config.num_samples)
        groups.setdefault(key, Group(key[0], dataset, []))
        groups[key].configs.append(config)
    return list(groups.values())


def block_size(sig: Signature, num_test: int, device: jax.Device, requested: int | None = None) -> int:
    """The runs of a vmapped block of ``sig`` on ``device``: ``requested`` (``--runs-per-device``), else
    as many as a quarter of the device's memory holds (:func:`bnbench.engine.memory.run_memory`,
    :func:`bnbench.engine.memory.device_memory`), at most :data:`bnbench.engine.policy.MAX_RUNS_PER_DEVICE`
    for its platform (:data:`bnbench.engine.policy.MAX_CONV_RUNS_PER_DEVICE` for a conv net)."""
    if requested is not None:
        return requested
    fits = memory.device_memory(device) // 4 // memory.run_memory(sig, num_test)
    most = MAX_RUNS_PER_DEVICE.get(device.platform, 1)
    if family(sig) in CONVOLUTIONAL:
        most = MAX_CONV_RUNS_PER_DEVICE.get(device.platform, most)
    return max(1, min(most, fits))


def assign_groups(
    groups: list[Group], *, engine: str = "vectorized", runs_per_device: int | None = None, devices: int | None = None,
    numerics: str | None = None,
) -> Assignment:
    """The :class:`Assignment` of ``groups``: each group's execution path, block size and numerics
    (``numerics``, :func:`bnbench.training.numerics.choose`: None for portable where the process computes
    portably), and the slots blocks train in (:func:`bnbench.engine.devices.slots`; the sequential engine
    uses one; portable numerics at most as many as XLA's pool has threads). Raises
    :class:`bnbench.engine.errors.EngineError` on bad options and
    :class:`bnbench.training.numerics.NumericsError` where portable numerics cannot be had."""
    numerics_lib.prepare(numerics)
    chosen = numerics_lib.choose(numerics, jax.default_backend())
    threads = numerics_lib.cpu_pool_threads()
    if chosen == "portable" and devices is None:
        devices = min(usable_cpus(), threads)
    selected = _slots_for(engine, devices, runs_per_device)
    device = selected[0]
    contexts, sources = [], {}  # the data sets' sources, each digested once
    for group in groups:
        sig = group.signature
        _check_fits(group, device)
        path = choose_path(sig, engine, device.platform, chosen)
        size = block_size(sig, len(group.dataset.y_test), device, runs_per_device) if path == "vmapped" else 1
        key = (group.configs[0].dataset, group.configs[0].num_samples)
        sources.setdefault(key, _data_source(group.configs[0].dataset, group.dataset))
        convolution = conv_form(sig, device.platform, path, chosen)
        if convolution == "onednn":
            convolution = onednn.describe()
        contexts.append(context.of(device, path, size, chosen, convolution, threads, sig.model_source, sources[key]))
    return Assignment(groups, contexts, selected)


def assign_runs(
    configs: list[RunConfig],
    *,
    engine: str = "vectorized",
    runs_per_device: int | None = None,
    devices: int | None = None,
    data_dir: str | Path | None = None,
    numerics: str | None = None,
) -> Assignment:
    """Groups ``configs`` (data sets loaded from ``data_dir``) and assigns them to blocks
    (:func:`assign_groups`)."""
    return assign_groups(group_runs(configs, data_dir), engine=engine, runs_per_device=runs_per_device, devices=devices,
                         numerics=numerics)


def pending_blocks(assignment: Assignment, done: frozenset[str] = frozenset()) -> list[Block]:
    """The blocks that train the assignment's runs not in ``done``, group by group, in grid order."""
    out = []
    for group, ctx in zip(assignment.groups, assignment.contexts):
        pending = [c for c in group.configs if c.run_id not in done]
        size = ctx.runs_per_device
        out += [Block(group, ctx, pending[i : i + size]) for i in range(0, len(pending), size)]
    return out


def _slots_for(engine: str, devices: int | None, runs_per_device: int | None) -> tuple[jax.Device, ...]:
    """Checks the engine options; returns the slots blocks train in (one for the sequential engine)."""
    if engine not in ENGINES:
        raise EngineError(f"--engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
    selected = slots(devices)
    if runs_per_device is not None and runs_per_device < 1:
        raise EngineError(f"--runs-per-device: must be >= 1, got {runs_per_device}")
    return selected[:1] if engine == "sequential" else selected


def _check_fits(group: Group, device: jax.Device) -> None:
    """Refuses a data set that would take more than half the device's memory, before anything trains."""
    arrays = (group.dataset.x_train, group.dataset.y_train, group.dataset.x_test, group.dataset.y_test)
    size, available = sum(a.nbytes for a in arrays), memory.memory_available(device)
    if 2 * size > available:
        raise EngineError(f"dataset {group.configs[0].dataset!r}: {size / 2**30:.1f} GiB, more than half the memory "
                          f"of {device.device_kind} ({available / 2**30:.1f} GiB); use num_samples to take fewer examples")


def _data_source(name: str, dataset: data.Dataset) -> str:
    """Your own data set's file@digest, a built-in one's name@digest of its arrays as trained on (a generator
    or loader that changed, by a NumPy version say, changes it)."""
    info = data.info(name)
    return f"{info.origin}@{info.digest}" if info.origin else f"{name}@{dataset.digest()}"
