"""Portable numerics: a CPU run's float32 bits the same on any x86-64 CPU with AVX2, whatever its model,
caches or core count; native numerics: whatever this CPU computes fastest.

Three things change a CPU run's bits beyond its program, JAX and jaxlib (measured: docs/reproducibility.md,
"Portable numerics"), and portable numerics pin each of them (the constants are
:mod:`bnbench.training.host`'s):

* the instruction set XLA:CPU compiles for: capped at :data:`PORTABLE_ISA` through ``XLA_FLAGS``
  (XLA reads ``--xla_cpu_max_isa`` when the CPU backend starts; as a per-program option it is ignored);
* YNNPACK's library fusions, to which XLA:CPU hands matrix products and reductions by default: their
  kernels are chosen by the CPU at run time and their sums split by the thread count, so programs
  compile without them (:data:`PORTABLE_OPTIONS`);
* the size of XLA:CPU's thread pool, by which Eigen's matrix products and convolutions split their sums:
  :data:`PORTABLE_THREADS`, whatever the machine. XLA sizes the pool once, when the CPU backend starts,
  as the CPUs the process may use but at least one per host device, so :func:`prepare` starts it on one
  CPU with :data:`PORTABLE_THREADS` host devices and then gives the process its CPUs back.

So portable numerics are set up per process, before JAX starts its backends (:func:`prepare`), and apply
to the CPU backend only: GPUs and TPUs compute natively, and their runs record the device and its
software instead (:mod:`bnbench.training.context`).
"""

from __future__ import annotations

import os
import platform

import jax
from jax._src import xla_bridge

from bnbench.errors import BnbenchError
from bnbench.options import NUMERICS, NUMERICS_ENV
from bnbench.training.host import PORTABLE_ISA, PORTABLE_OPTIONS, PORTABLE_THREADS, host_isa, isa_caps, portable_possible

_POOL_THREADS: int | None = None  # XLA:CPU's pool, where _start_cpu_backend sized it


class NumericsError(BnbenchError):
    """Portable numerics asked for where they cannot be had."""


def prepare(requested: str | None) -> None:
    """Sets this process up for ``requested`` numerics (:data:`bnbench.options.NUMERICS`) before JAX starts
    its backends. ``"portable"`` pins the CPU backend, and raises :class:`NumericsError` in one line where
    this process cannot have it (a CPU without AVX2, another ``--xla_cpu_max_isa`` in ``XLA_FLAGS``, JAX
    started otherwise). ``"native"`` starts the backends as they are, so that a later default keeps them.
    None (the default: ``$BNBENCH_NUMERICS`` where set) pins them where it can, and leaves them native where
    not."""
    requested = _asked(requested)
    if requested == "native":
        jax.devices()
        return
    problem = _portable_problem()
    if problem is None and not xla_bridge.backends_are_initialized():
        if not isa_caps():
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_max_isa={PORTABLE_ISA}".strip()
        _start_cpu_backend(PORTABLE_THREADS)
    elif requested == "portable" and (problem or not is_portable_process()):
        raise NumericsError(f"--portable: {problem or _STARTED_OTHERWISE}")


def _asked(requested: str | None) -> str | None:
    """The numerics asked for: ``requested``, else ``$BNBENCH_NUMERICS``, else None; checked."""
    requested = requested or os.environ.get(NUMERICS_ENV) or None
    if requested not in (None, *NUMERICS):
        raise NumericsError(f"numerics: must be one of {', '.join(NUMERICS)}, got {requested!r}")
    return requested


def _portable_problem() -> str | None:
    """Why this machine or ``XLA_FLAGS`` rules portable numerics out (None where nothing does)."""
    if not portable_possible():
        return (f"needs an x86-64 CPU with {PORTABLE_ISA}; this one ({platform.machine()}, "
                f"{host_isa() or 'no x86 instruction set'}) computes natively only")
    other = [isa for isa in isa_caps() if isa.upper() != PORTABLE_ISA]
    if other:
        return (f"XLA_FLAGS caps the instruction set at {other[0]}, portable numerics at {PORTABLE_ISA}; remove "
                "--xla_cpu_max_isa from XLA_FLAGS or sweep with --native")
    return None


_STARTED_OTHERWISE = (
    f"JAX started its CPU backend before bnbench could pin it (the instruction set and a pool of {PORTABLE_THREADS} "
    "threads); call bnbench.prepare_numerics('portable') before any JAX computation, or pass numerics='native'")


def _start_cpu_backend(threads: int) -> None:
    """Starts JAX's backends with XLA:CPU's pool of ``threads`` threads, then gives every thread of the
    process the CPUs it may use back."""
    global _POOL_THREADS
    cpus = os.sched_getaffinity(0)
    jax.config.update("jax_num_cpu_devices", threads)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        jax.devices()
        _POOL_THREADS = threads
    finally:
        for thread in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(thread), cpus)
            except OSError:  # a thread that ended meanwhile
                pass


def is_portable_process() -> bool:
    """Whether this process's CPU backend computes portably: XLA_FLAGS caps the instruction set at
    :data:`PORTABLE_ISA` and XLA:CPU's pool has :data:`PORTABLE_THREADS` threads."""
    return [isa.upper() for isa in isa_caps()] == [PORTABLE_ISA] and cpu_pool_threads() == PORTABLE_THREADS


def choose(requested: str | None, backend: str) -> str:
    """The numerics runs get on ``backend``: portable on a CPU set up for it (:func:`prepare`), native
    where ``requested`` says so or the backend is not a CPU (numerics are a CPU's: a GPU's or TPU's runs
    compute natively whatever was asked, and record their device and its software); raises
    :class:`NumericsError` where portable numerics are asked for in a process not set up for them."""
    requested = _asked(requested)
    if backend != "cpu" or requested == "native" or (requested is None and not is_portable_process()):
        return "native"
    if not is_portable_process():
        raise NumericsError(f"--portable: {_STARTED_OTHERWISE}")
    return "portable"


def cpu_pool_threads() -> int:
    """The threads of XLA:CPU's pool: as many as the CPUs the process may run on (its affinity mask, as
    XLA counts them when the backend starts; :func:`prepare` starts it on one), at least one per host
    device (XLA's rule)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = os.cpu_count() or 1
    return _POOL_THREADS or max(affinity, jax.local_device_count("cpu"))











