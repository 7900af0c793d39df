"""The profile ``bnbench profile`` writes: the cases (shape, dtype, mode) it times, one :class:`Row` per
implementation and case, and its CSV file (:data:`PROFILE_COLUMNS` say what each column holds).

How each case is timed is in :mod:`bnbench.profiling.kernels`; the implementations and their accuracy
in :mod:`bnbench.profiling.peers`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, NamedTuple

import jax

from bnbench.engine.memory import memory_available
from bnbench.errors import BnbenchError
from bnbench.options import PROFILE_DTYPES, PROFILE_IMPLEMENTATIONS, PROFILE_MODES
from bnbench.profiling.kernels import CaseMeasurement, allocator_overhead, last_level_cache_bytes, measure_case, rates
from bnbench.profiling.peers import Case, Impl, accuracy, implementations, installed
from bnbench.results.csv_files import write_csv
from bnbench.results.folder import ResultsStore

DEFAULT_SHAPES = (
    (32, 56, 56, 64),
    (32, 28, 28, 128),
    (32, 14, 14, 256),
    (32, 7, 7, 512),
    (128, 56, 56, 64),
    (256, 4096),
    (2048, 4096),
)
ALLOCATOR_CHECK_BYTES = 16 << 20  # below this, per-call overhead is dispatch, not page faults


class ProfileError(BnbenchError):
    """A profile request that cannot be run."""


class Row(NamedTuple):
    """One line of the profile table and CSV."""

    device_kind: str
    backend: str
    shape: str
    dtype: str
    mode: str
    impl: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    gbps: float
    pct_copy_bw: float
    rel_to_elementwise: float
    var_rel_err: float
    out_rel_err: float
    elementwise_ms: float
    copy_gbps: float
    buffers: int
    cold: bool
    timing: str  # "in-loop" or "per-call"


PROFILE_COLUMNS: dict[str, str] = {
    "device_kind": "JAX device kind (cpu, NVIDIA H100 80GB HBM3, ...)",
    "backend": "JAX backend",
    "shape": "tensor shape, x-separated (channels last)",
    "dtype": "float32 or bfloat16",
    "mode": "train (batch statistics, normalize, state update), grad (forward and backward w.r.t. x, scale, offset), "
    "infer (running statistics), fold (1x1 conv/dense + BN, or the layer with BN folded in)",
    "impl": ", ".join(PROFILE_IMPLEMENTATIONS),
    "median_ms": "median time of one kernel call",
    "p10_ms": "10th percentile over repeats",
    "p90_ms": "90th percentile over repeats",
    "gbps": "minimum traffic (train 3T, grad 8T, infer and fold 2T; T = tensor bytes) over the median time",
    "pct_copy_bw": "gbps as a percentage of the copy bandwidth measured in the same loop",
    "rel_to_elementwise": "median time over that of x*a+b on the same shape, same loop",
    "var_rel_err": "train and grad rows: max over channels of the batch variance's relative error against float64, "
    "input with mean/std = 3000 (inf: NaN produced)",
    "out_rel_err": "train and grad rows: max absolute error of the normalized output against float64, same input",
    "elementwise_ms": "median time of x*a+b",
    "copy_gbps": "copy bandwidth (2 x bytes per copy over its median time)",
    "buffers": "input buffers rotated through",
    "cold": "whether the buffers total at least 4x the last-level cache",
    "timing": "in-loop (kernel called 8+ times inside one jitted loop, outputs allocated once per loop) or per-call "
    "(PyTorch)",
}


# Tensors of a case's size alive at once, at the least: two rotating inputs, the output, and in "grad"
# mode the cotangent and the input's gradient, plus a copy for the bandwidth reference.
MIN_TENSORS_ALIVE = 6


def check_fits(cases: list[Case], device: jax.Device) -> None:
    """Raises :class:`ProfileError` for a case whose tensors cannot fit the device, before any is made."""
    available = memory_available(device)
    for case in cases:
        needed = MIN_TENSORS_ALIVE * case.tensor_bytes
        if needed > available:
            raise ProfileError(
                f"--shape {_shape_text(case.shape)} {case.dtype}: needs at least {needed / 2**30:.1f} GiB "
                f"({MIN_TENSORS_ALIVE} tensors of {case.tensor_bytes / 2**30:.1f} GiB), the device has "
                f"{available / 2**30:.1f} GiB; profile a smaller shape"
            )


def parse_shapes(texts: list[str] | None) -> list[tuple[int, ...]]:
    """``--shape`` values (``N,H,W,C`` or ``N,C``) as shapes; :data:`DEFAULT_SHAPES` if none. Raises
    :class:`ProfileError` on anything else."""
    if not texts:
        return list(DEFAULT_SHAPES)
    try:
        shapes = [tuple(int(d) for d in text.split(",")) for text in texts]
    except ValueError:
        raise ProfileError(f"--shape: expected comma-separated integers such as 32,56,56,64, got {texts}") from None
    if any(len(s) not in (2, 4) or min(s) < 1 for s in shapes):
        raise ProfileError(f"--shape: each shape is N,C or N,H,W,C with sizes >= 1, got {texts}")
    return shapes


def profile_to_csv(
    out: Path, shapes: list[tuple[int, ...]], dtypes: list[str], modes: list[str], impl_names: list[str], *,
    repeat: int = 15, on_case: Callable[[Case, int, int], None] | None = None,
) -> tuple[list[Row], list[str]]:
    """:func:`profile`, its rows written to the CSV file ``out`` (checked before measuring)."""
    if out.is_dir():
        raise ProfileError(f"--out: {out} is a folder; give a CSV file name such as {out / 'profile.csv'}")
    ResultsStore(out.parent).check_writable()
    rows, notes = profile(shapes, dtypes, modes, impl_names, repeat=repeat, on_case=on_case)
    write_csv(out, Row._fields, [r._asdict() for r in rows])
    return rows, [f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", *notes]


def profile(
    shapes: list[tuple[int, ...]],
    dtypes: list[str],
    modes: list[str],
    impl_names: list[str],
    *,
    repeat: int = 15,
    on_case: Callable[[Case, int, int], None] | None = None,
) -> tuple[list[Row], list[str]]:
    """Profiles every (shape, dtype, mode) with the named implementations.

    Returns the rows and notes (skipped implementations, allocator overhead, the cache size used).
    ``on_case(case, index, total)`` is called before each case (progress).
    """
    cache_bytes, measured = last_level_cache_bytes()
    notes = [f"last-level cache {cache_bytes >> 20} MiB ({'read from sysfs' if measured else 'assumed'}); "
             "inputs rotate among buffers totalling up to 4x that"]
    impls = _installed_implementations(impl_names, modes, dtypes, notes)
    cases = [Case(tuple(shape), dtype, mode) for shape in shapes for dtype in dtypes for mode in modes]
    cases = [c for c in cases if any(i.build(c) is not None for i in impls)]
    check_fits(cases, jax.devices()[0])
    rows: list[Row] = []
    accuracy_cache: dict[tuple, tuple[float, float]] = {}
    for index, case in enumerate(cases):
        if on_case:
            on_case(case, index, len(cases))
        if index == 0 or (cases[index - 1].shape, cases[index - 1].dtype) != (case.shape, case.dtype):
            notes.extend(_allocator_note(case))
        runnable = [i for i in impls if i.build(case) is not None]
        try:
            measured_case = measure_case(case, runnable, repeat=repeat, cache_bytes=cache_bytes)
        except jax.errors.JaxRuntimeError as err:
            if "RESOURCE_EXHAUSTED" not in str(err):
                raise
            raise ProfileError(f"--shape {_shape_text(case.shape)} {case.dtype}: out of device memory while "
                               "profiling it; profile a smaller shape") from None
        rows.extend(_case_rows(case, runnable, measured_case, cache_bytes, accuracy_cache))
    return rows, notes


def _installed_implementations(impl_names: list[str], modes: list[str], dtypes: list[str], notes: list[str]) -> list:
    """The named implementations whose packages are installed (a note for each that is not); raises
    :class:`ProfileError` for an unknown implementation, mode or dtype."""
    known = implementations()
    for option, asked, choices in (("--impl", impl_names, known), ("--mode", modes, PROFILE_MODES), ("--dtype", dtypes, PROFILE_DTYPES)):
        unknown = [name for name in asked if name not in choices]
        if unknown:
            raise ProfileError(f"{option}: unknown {', '.join(unknown)}; known: {', '.join(choices)}")
    impls = []
    for name in impl_names:
        impl = known[name]
        if impl.requires and not installed(impl.requires):
            notes.append(f"{name}: skipped, {impl.requires} is not installed (pip install 'bnbench[peers]')")
        else:
            impls.append(impl)
    return impls


def _case_rows(case: Case, runnable: list[Impl], measured_case: CaseMeasurement, cache_bytes: int,
               accuracy_cache: dict) -> list[Row]:
    """One :class:`Row` per implementation of a measured case; accuracies are measured once per
    implementation, shape and dtype (``accuracy_cache``)."""
    kernels, elementwise, copy, count, copy_bytes = measured_case
    shape, dtype, mode = case
    device = jax.devices()[0]
    rows = []
    for impl in runnable:
        errors = (math.nan, math.nan)
        if mode in ("train", "grad") and (impl.forward is not None or impl.name == "torch"):
            key = (impl.name, shape, dtype)
            if key not in accuracy_cache:
                accuracy_cache[key] = accuracy(impl, shape, dtype)
            errors = accuracy_cache[key]
        kernel = kernels[impl.name]
        gbps, pct, rel = rates(case, kernel, elementwise, copy, copy_bytes)
        rows.append(Row(
            device.device_kind, jax.default_backend(), _shape_text(shape), dtype, mode, impl.name,
            kernel.median * 1e3, kernel.p10 * 1e3, kernel.p90 * 1e3, gbps, pct, rel, *errors,
            elementwise.median * 1e3, 2 * copy_bytes / copy.median / 1e9, count,
            count * case.tensor_bytes >= 4 * cache_bytes, "per-call" if impl.name == "torch" else "in-loop",
        ))
    return rows


def _allocator_note(case: Case) -> list[str]:
    """A note when fresh large outputs cost the allocator more than the kernel (CPU only)."""
    if jax.default_backend() != "cpu" or case.tensor_bytes < ALLOCATOR_CHECK_BYTES:
        return []
    overhead = allocator_overhead(case.shape, case.dtype)
    if overhead <= 1.5:
        return []
    return [
        f"{_shape_text(case.shape)} {case.dtype}: one call of x*a+b with a fresh output took {overhead:.1f}x its in-loop "
        "time: the allocator maps new pages for every large output and page-faults on first touch. The times here "
        "are in-loop kernel times, not allocator time. On Linux, GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (with "
        "transparent huge pages in madvise or always mode) cuts that cost for code that calls kernels one at a time."
    ]


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)
