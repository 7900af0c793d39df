"""What decides a run's numbers beyond its configuration: its execution context.

XLA compiles a vmapped program differently for different numbers of runs per device (other fusions,
other kernels), so a run's float32 numbers depend on how many runs shared its kernels, as they depend
on the numerics (:mod:`bnbench.training.numerics`: portable CPU runs have the same bits on any x86-64
CPU with AVX2; native ones depend on the processor, its instruction set and XLA's thread pool), the
backend and device, ``XLA_FLAGS``, the JAX/jaxlib versions and the data as trained on. They do not
depend on which runs those were, on their order, or on how many blocks trained side by side
(:mod:`bnbench.engine.run_block` trains each block of runs on one device). Every run records its
context in ``runs.csv`` (:data:`COLUMNS`), and a results folder never mixes contexts silently: resuming
into a folder or merging folders whose runs of the same program ran in another context is refused,
naming the field (:func:`difference`).
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Mapping, NamedTuple

from bnbench.training import host
from bnbench.options import EXECUTIONS, NUMERICS


class ExecutionContext(NamedTuple):
    """How one run was executed; the fields are ``runs.csv`` columns."""

    # numerics and convolution come first: they decide the others (a ResNet vmaps with oneDNN's convolutions),
    # so a difference between two contexts is named by its cause (difference()).
    numerics: str  # "portable" (the same bits on any x86-64 CPU with AVX2) or "native" (bnbench.training.numerics)
    convolution: str  # the kernel of the program's convolutions: "none", "xla", "patches" or "onednn <version> ..."
    execution: str  # "vmapped" (runs_per_device runs share one program) or "stepwise" (a jitted step per batch)
    runs_per_device: int  # 1 for stepwise runs
    backend: str
    device_kind: str
    cpu_isa: str  # the instruction-set level XLA:CPU compiles for ("" on other backends)
    cpu_threads: int  # XLA:CPU's thread pool (0 on other backends)
    xla_flags: str
    jax_version: str
    jaxlib_version: str
    model_source: str  # a plugin network's file@digest ("" for a built-in model)
    data_source: str  # the data set as trained on: name (or file)@digest of its arrays

    @property
    def conv_kernel(self) -> str:
        """The form of the program's convolutions (:func:`bnbench.engine.policy.conv_form`), without the
        version and threads a oneDNN kernel records."""
        return self.convolution.split()[0]

    def row(self) -> dict[str, str]:
        """The context as ``runs.csv`` writes and reads it (text)."""
        return {name: str(value) for name, value in self._asdict().items()}


# The fields one machine and software stack share; the others differ by program within one sweep.
MACHINE_FIELDS = ("numerics", "backend", "device_kind", "cpu_isa", "cpu_threads", "xla_flags", "jax_version",
                  "jaxlib_version")

COLUMNS: dict[str, str] = {
    "numerics": f"{NUMERICS[0]} (on CPU: the instruction set capped at AVX2, no YNNPACK fusions, XLA's pool of 2 "
    f"threads, so the same bits on any x86-64 CPU with AVX2) or {NUMERICS[1]} (whatever the device computes fastest)",
    "convolution": "the kernel of the run's convolutions: none (a network without any), xla (XLA's), patches "
    "(slices times one matrix product, bnbench.models.convolution) or onednn with its version, instruction set and "
    "threads (oneDNN's primitives through XLA's FFI, native numerics on CPU only)",
    "execution": f"how the run executed: {EXECUTIONS[0]} (runs_per_device runs in one compiled program on one "
    f"device) or {EXECUTIONS[1]} (a jitted step per batch: the sequential engine, and conv nets where that is faster)",
    "runs_per_device": "runs that shared the run's compiled program (1 if stepwise); its float32 numbers depend on it",
    "backend": "JAX backend (cpu, gpu, tpu)",
    "device_kind": "the device whose kernels decide the run's bits: portable CPU runs name the portable target, native "
    "ones the processor (model, family, model number, caches); GPUs their compute capability and CUDA software",
    "cpu_isa": "the instruction-set level XLA:CPU compiled the run for (empty on GPU and TPU)",
    "cpu_threads": "threads of XLA:CPU's pool, by which matrix products and reductions split their sums (0 on GPU and TPU)",
    "xla_flags": "XLA_FLAGS in force (the portable instruction-set cap included; off a CPU, XLA:CPU's own left out)",
    "jax_version": "JAX version the run executed with",
    "jaxlib_version": "jaxlib version the run executed with",
    "model_source": "a plugin network's code, file@digest (empty for a built-in model)",
    "data_source": "the data set as trained on, name@digest of its arrays (your own: file@digest)",
}


def device_kind(device, numerics: str) -> str:
    """The device as the context records it: on CPU the portable target, or the host processor
    (:func:`bnbench.training.host.host_processor`); elsewhere JAX's ``device_kind`` with, on GPU,
    its compute capability and CUDA software (:func:`bnbench.training.host.gpu_software`)."""
    if device.platform == "cpu":
        return f"cpu (x86-64 {host.PORTABLE_ISA})" if numerics == "portable" else \
            f"cpu ({host.host_processor()})"
    if device.platform == "gpu":
        return f"{device.device_kind} ({host.gpu_software(device)})"
    return device.device_kind


def of(device, execution: str, runs_per_device: int, numerics: str, convolution: str, cpu_threads: int,
       model_source: str = "", data_source: str = "") -> ExecutionContext:
    """The context of runs executed on ``device`` with ``execution``, ``runs_per_device``, ``numerics`` and
    the ``convolution`` kernel (as the column records it), in a process whose XLA:CPU pool has ``cpu_threads`` threads
    (:func:`bnbench.training.numerics.cpu_pool_threads`), of the plugin code and data at ``model_source``
    and ``data_source``."""
    cpu = device.platform == "cpu"
    return ExecutionContext(
        numerics, convolution, execution, runs_per_device, device.platform, device_kind(device, numerics),
        host.compiled_isa(numerics) if cpu else "", cpu_threads if cpu else 0, _xla_flags(cpu), importlib.metadata.version("jax"), importlib.metadata.version("jaxlib"),
        model_source, data_source,
    )


def _xla_flags(cpu: bool) -> str:
    """``XLA_FLAGS`` as they bear on a run: off a CPU without XLA:CPU's own flags (the instruction-set cap
    portable numerics set, say), which change no GPU or TPU program."""
    flags = os.environ.get("XLA_FLAGS", "")
    return flags if cpu else " ".join(flag for flag in flags.split() if not flag.startswith("--xla_cpu_"))


def difference(recorded: Mapping[str, str], context: ExecutionContext) -> tuple[str, str] | None:
    """The first context field in which a ``runs.csv`` row ``recorded`` differs from ``context``, and
    the difference as a phrase (``runs_per_device is 4 there, 2 here``; for a plugin's code or data,
    which file changed); None if it does not. A row written before bnbench recorded contexts differs in
    its first field."""
    for name, value in context.row().items():
        there = recorded.get(name)
        if there is None or (there == "" and name not in _MAY_BE_EMPTY):
            return name, f"{name} was not recorded there (results of an older bnbench)"
        if there != value:
            return name, _phrase(name, there, value)
    return None


def _phrase(name: str, there: str, here: str) -> str:
    file, _, digest = here.rpartition("@")
    if name in _MAY_BE_EMPTY and file and there.rpartition("@")[0] == file:
        return f"{file} changed since ({name} digest {there.rpartition('@')[2]} there, {digest} here)"
    return f"{name} is {there!r} there, {here!r} here"


# Fields a run records empty in its own right (no XLA_FLAGS; no CPU; a built-in model), not for want of a column.
_MAY_BE_EMPTY = ("cpu_isa", "xla_flags", "model_source", "data_source")
