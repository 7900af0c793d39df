"""What decides a run's numbers beyond its configuration: its execution context.

XLA compiles a vmapped program differently for different numbers of runs per device (other fusions,
other kernels), so a run's float32 numbers depend on how many runs shared its kernels, as they depend
on the backend, the device (on CPU the host's instruction set and XLA's thread pool), and the
JAX/jaxlib versions. They do not depend on which runs those were, on their order, or on how many
blocks trained side by side (:mod:`bnbench.engine.run_block` trains each block of runs on one device). Every run records its context in
``runs.csv`` (:data:`COLUMNS`), and a results folder never mixes contexts silently: resuming into a
folder or merging folders whose runs of the same program ran in another context is refused, naming the
field (:func:`difference`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Mapping, NamedTuple

from bnbench.options import EXECUTIONS


class ExecutionContext(NamedTuple):
    """How one run was executed; the fields are ``runs.csv`` columns."""

    execution: str  # "vmapped" (runs_per_device runs share one program) or "stepwise" (a jitted step per batch)
    runs_per_device: int  # 1 for stepwise runs
    backend: str
    device_kind: str
    cpu_threads: int  # XLA:CPU's thread pool (0 on other backends)
    jax_version: str
    jaxlib_version: str
    model_source: str  # a plugin network's file@digest ("" for a built-in model)
    data_source: str  # your own data set's file@digest ("" for a built-in one)

    def row(self) -> dict[str, str]:
        """The context as ``runs.csv`` writes and reads it (text)."""
        return {name: str(value) for name, value in self._asdict().items()}


# The fields one machine and software stack share; the others differ by program within one sweep.
MACHINE_FIELDS = ("backend", "device_kind", "cpu_threads", "jax_version", "jaxlib_version")

COLUMNS: dict[str, str] = {
    "execution": f"how the run executed: {EXECUTIONS[0]} (runs_per_device runs in one compiled program on one "
    f"device) or {EXECUTIONS[1]} (a jitted step per batch: the sequential engine, and conv nets where that is faster)",
    "runs_per_device": "runs that shared the run's compiled program (1 if stepwise); its float32 numbers depend on it",
    "backend": "JAX backend (cpu, gpu, tpu)",
    "device_kind": "the device the run executed on (on CPU, the host processor, whose instruction set XLA compiles for)",
    "cpu_threads": "threads of XLA:CPU's pool, which splits large reductions into as many parts (0 on GPU and TPU)",
    "jax_version": "JAX version the run executed with",
    "jaxlib_version": "jaxlib version the run executed with",
    "model_source": "a plugin network's code, file@digest (empty for a built-in model)",
    "data_source": "your own data set, file@digest of its arrays (empty for a built-in one)",
}


@functools.lru_cache(maxsize=1)
def _host_processor() -> str:
    """The host CPU's model name (Linux: /proc/cpuinfo), else what :func:`platform.processor` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Processor", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_kind(device) -> str:
    """The kind of ``device`` as the context records it: JAX's ``device_kind``, and on CPU the host's
    processor (XLA:CPU compiles for the host's instruction set, so another CPU model can round
    differently)."""
    if device.platform == "cpu":
        return f"cpu ({_host_processor()})"
    return device.device_kind


def cpu_threads(cpu_devices: int) -> int:
    """The threads of XLA:CPU's pool: as many as the CPUs the process may run on (its affinity mask, as
    XLA counts them), at least one per host device (XLA's rule). XLA splits large reductions into
    parts by this count, so it changes their rounding: 1, 2, 16 and 64 threads gave three different
    sums of a 64x100000 array here."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = os.cpu_count() or 1
    return max(affinity, cpu_devices)


def of(device, execution: str, runs_per_device: int, cpu_devices: int, model_source: str = "",
       data_source: str = "") -> ExecutionContext:
    """The context of runs executed on ``device`` with ``execution`` and ``runs_per_device``, in a
    process with ``cpu_devices`` host devices, of the plugin code and own data at ``model_source`` and
    ``data_source``."""
    threads = cpu_threads(cpu_devices) if device.platform == "cpu" else 0
    return ExecutionContext(
        execution, runs_per_device, device.platform, device_kind(device), threads,
        importlib.metadata.version("jax"), importlib.metadata.version("jaxlib"), model_source, data_source,
    )


def difference(recorded: Mapping[str, str], context: ExecutionContext) -> tuple[str, str] | None:
    """The first context field in which a ``runs.csv`` row ``recorded`` differs from ``context``, and
    the difference as a phrase (``runs_per_device is 4 there, 2 here``; for a plugin's code or data,
    which file changed); None if it does not. A row written before bnbench recorded contexts differs in
    its first field."""
    for name, value in context.row().items():
        there = recorded.get(name)
        if there is None or (there == "" and name not in _MAY_BE_EMPTY):
            return name, f"{name} was not recorded there (results of bnbench before 0.2)"
        if there != value:
            return name, _phrase(name, there, value)
    return None


def _phrase(name: str, there: str, here: str) -> str:
    file, _, digest = here.rpartition("@")
    if name in _MAY_BE_EMPTY and file and there.rpartition("@")[0] == file:
        return f"{file} changed since ({name} digest {there.rpartition('@')[2]} there, {digest} here)"
    return f"{name} is {there!r} there, {here!r} here"


_MAY_BE_EMPTY = ("model_source", "data_source")
