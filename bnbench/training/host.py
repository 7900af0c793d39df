"""The host as a run's bits depend on it: its processor, the instruction set XLA:CPU compiles for, and
what portable numerics pin (:mod:`bnbench.training.numerics`). No JAX at import: ``runs.csv``'s columns
are read without it (``tests/test_startup.py``)."""

from __future__ import annotations

import functools
import os
import platform
import re
from pathlib import Path

PORTABLE_ISA = "AVX2"
PORTABLE_THREADS = 2
PORTABLE_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
# The x86 instruction-set levels XLA's --xla_cpu_max_isa names, each with the /proc/cpuinfo flag that has it.
_X86_LEVELS = (("AVX512", "avx512f"), ("AVX2", "avx2"), ("AVX", "avx"), ("SSE4_2", "sse4_2"))
ISA_FLAG = re.compile(r"--xla_cpu_max_isa=(\S+)")


def isa_caps() -> list[str]:
    """The instruction-set caps ``XLA_FLAGS`` sets (``--xla_cpu_max_isa``), in order."""
    return ISA_FLAG.findall(os.environ.get("XLA_FLAGS", ""))


def compiled_isa(numerics: str) -> str:
    """The instruction-set level XLA:CPU compiles for: :data:`PORTABLE_ISA` for portable numerics, else
    the host's best (:func:`host_isa`) or a lower cap set in ``XLA_FLAGS``."""
    if numerics == "portable":
        return PORTABLE_ISA
    capped, host = isa_caps(), host_isa()
    levels = [name for name, _ in _X86_LEVELS]
    if capped and host in levels and capped[-1].upper() in levels:
        return levels[max(levels.index(host), levels.index(capped[-1].upper()))]
    return host or platform.machine()


@functools.lru_cache(maxsize=1)
def host_isa() -> str:
    """The best x86 instruction-set level this CPU has, as ``--xla_cpu_max_isa`` names it ("" if not x86)."""
    flags = set(cpu_info().get("flags", "").split())
    return next((name for name, flag in _X86_LEVELS if flag in flags), "")


def portable_possible() -> bool:
    """Whether this machine can compute portably: an x86-64 CPU with :data:`PORTABLE_ISA`, on an OS that
    lets :func:`bnbench.training.numerics.prepare` size XLA's thread pool (Linux)."""
    return (platform.machine() in ("x86_64", "AMD64") and host_isa() in ("AVX512", "AVX2")
            and hasattr(os, "sched_setaffinity"))


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, str]:
    """The first processor's entries in /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.split("\n\n")[0]
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}


@functools.lru_cache(maxsize=1)
def host_processor() -> str:
    """The host CPU as its bits depend on it natively: model name, family, model number and stepping
    (x86), and cache size, from /proc/cpuinfo; else what :func:`platform.processor` says."""
    info = cpu_info()
    name = info.get("model name") or info.get("Processor") or info.get("cpu model")
    if not name:
        return platform.processor() or platform.machine()
    details = [f"{key} {info[key]}" for key in ("cpu family", "model", "stepping", "cache size") if info.get(key)]
    return ", ".join([name, *details])


def gpu_software(device) -> str:
    """A GPU's compute capability and the CUDA runtime, cuDNN and driver versions JAX uses (what is known)."""
    # Here, not at the top: this module is read without JAX (runs.csv's columns), and a GPU run has it loaded.
    from jax._src.lib import cuda_versions

    parts = [f"compute capability {device.compute_capability}"] if getattr(device, "compute_capability", None) else []
    for label, getter in (("CUDA", "cuda_runtime_get_version"), ("cuDNN", "cudnn_get_version"),
                          ("driver", "cuda_driver_get_version")):
        try:
            parts.append(f"{label} {getattr(cuda_versions, getter)()}")
        except (AttributeError, RuntimeError):  # a version this jaxlib does not expose, or no CUDA: left out
            pass
    return ", ".join(parts) or "no CUDA details"
