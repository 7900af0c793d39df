"""Timing BN kernels against peer implementations and the device's memory bandwidth.

How rows are measured (``bnbench profile``):

* Every JAX implementation runs inside one jitted ``fori_loop`` of at least 8 kernel calls, cycling
  through ``buffers`` input arrays meant to total four times the last-level cache so inputs come
  from memory ("cold"; at most 16 buffers, so small tensors stay cached and the ``cold`` column
  says so). Output buffers are allocated once per loop, so the allocator's page faults (see
  :func:`allocator_overhead`) are spread over the calls instead of paid by each.
* Repeats go round-robin over the implementations, in an order rotated every round. In the same
  loop, with the same harness, two references: the out-of-place elementwise ``x*a+b`` on the same
  buffers, and a copy (out-of-place negation, which XLA cannot elide) alternating between two
  buffers of ``max(T, 2 x cache)`` bytes. Bandwidth drifts over minutes, so every ratio uses references timed
  in the same loop.
* Bytes count the minimum traffic in units of the tensor's size T: ``train`` 3T (read x for the
  statistics, read x again, write y), ``grad`` 8T (the forward's 3T plus 5T backward: read dy and x
  for the two reductions, read them again, write dx), ``infer`` 2T, ``fold`` 2T (read x, write y;
  weights not counted).
* PyTorch (``torch.nn.functional.batch_norm`` on channels_last tensors) is timed per call, its
  allocator included: PyTorch has no jitted loop to hide it in.

The implementations and the accuracy columns (the batch variance and the output of training mode
against float64 on an input with mean/std = 3000) are in :mod:`bnbench.profiling.peers`.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnbench.engine.execution import memory_available
from bnbench.errors import BnbenchError
from bnbench.options import PROFILE_DTYPES, PROFILE_IMPLEMENTATIONS, PROFILE_MODES
from bnbench.profiling.peers import Case, Impl, accuracy, implementations, installed, synchronize, to_torch, torch_device

MODES = PROFILE_MODES
TRAFFIC = {"train": 3, "grad": 8, "infer": 2, "fold": 2}  # bytes moved, in units of the tensor's size
DEFAULT_SHAPES = (
    (32, 56, 56, 64),
    (32, 28, 28, 128),
    (32, 14, 14, 256),
    (32, 7, 7, 512),
    (128, 56, 56, 64),
    (256, 4096),
    (2048, 4096),
)
DEFAULT_DTYPES = PROFILE_DTYPES
_ASSUMED_CACHE = 64 << 20  # bytes, where the last-level cache size cannot be read (accelerators)
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


# --- timing --------------------------------------------------------------------------------------


def last_level_cache_bytes() -> tuple[int, bool]:
    """The CPU's last-level cache size from sysfs, and whether it was read; on an accelerator (and where
    sysfs says nothing) an assumed 64 MiB, more than any current GPU's L2 (H100 50 MB, A100 40 MB), so
    that the 4x cache of input buffers are cold there too."""
    if jax.default_backend() == "cpu":
        sizes = []
        for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
            text = path.read_text().strip()
            sizes.append(int(text[:-1]) * {"K": 1 << 10, "M": 1 << 20}.get(text[-1], 1) if text[-1].isalpha() else int(text))
        if sizes:
            return max(sizes), True
    return _ASSUMED_CACHE, False


def buffer_count(tensor_bytes: int, cache_bytes: int, *, max_buffers: int = 16, memory_cap: int = 4 << 30) -> int:
    """Input buffers to rotate: enough for 4 x the cache, at most ``max_buffers`` and within
    ``memory_cap`` bytes, but always at least 2 (XLA hoists a loop over one buffer)."""
    wanted = math.ceil(4 * cache_bytes / tensor_bytes)
    return max(2, min(wanted, max_buffers, memory_cap // tensor_bytes))


def _in_loop(op: Callable, calls: int) -> Callable:
    """``(buffers, g) -> output``: ``calls`` applications of ``op``, cycling through the buffers, jitted.

    Each iteration picks its buffer with ``lax.switch`` on the iteration number: the work depends on
    the loop variable, so XLA cannot hoist it out of the loop (it does hoist a body that only reads
    loop-invariant inputs, even through ``optimization_barrier``). Outputs and temporaries are
    allocated once per call, so their page faults are spread over ``calls`` kernels.
    """

    def run(buffers, g):
        branches = [lambda g, x=x: op(x, g) for x in buffers]
        return jax.lax.fori_loop(
            1, calls, lambda i, _: jax.lax.switch(i % len(buffers), branches, g), op(buffers[0], g)
        )

    return jax.jit(run)


def _timed(fn: Callable, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def allocator_overhead(shape: tuple[int, ...], dtype: str, repeats: int = 5) -> float:
    """Per-call time of ``x*a+b`` (a fresh output each call) over its in-loop time, same inputs.

    Well above 1 on Linux CPUs for large tensors: glibc serves each fresh output buffer with new pages
    (mmap), and the page faults cost more than the kernel.
    """
    buffers = (jnp.ones(shape, dtype), jnp.full(shape, 2, dtype))
    per_call = jax.jit(lambda x: x * 1.5 + 0.5)
    in_loop = _in_loop(lambda x, g: x * 1.5 + 0.5, 8)
    per_call(buffers[0]).block_until_ready()
    in_loop(buffers, None)
    call = np.median([_timed(per_call, buffers[i % 2]) for i in range(repeats)])
    loop = np.median([_timed(in_loop, buffers, None) for _ in range(repeats)]) / 8
    return float(call / loop)


class Measurement(NamedTuple):
    median: float
    p10: float
    p90: float


def _summarize(samples: list[float]) -> Measurement:
    return Measurement(*(float(v) for v in np.percentile(samples, [50, 10, 90])))


def measure_case(
    case: Case, impls: list[Impl], *, repeat: int, cache_bytes: int, min_calls: int = 8
) -> tuple[dict[str, Measurement], Measurement, Measurement, int, int]:
    """Times every implementation of ``case`` with the two references, interleaved round-robin.

    Returns per-kernel-call measurements (seconds) by implementation name, the elementwise and copy
    measurements, the number of input buffers, and the copy buffer's size in bytes.
    """
    dtype = jnp.dtype(case.dtype)
    count = buffer_count(case.tensor_bytes, cache_bytes)
    calls = max(min_calls, 2 * count)  # kernel calls per timed sample: every buffer at least twice
    keys = jax.random.split(jax.random.PRNGKey(0), count + 1)
    buffers = tuple(jax.random.normal(k, case.shape, dtype) for k in keys[:-1])
    cotangent = jax.random.normal(keys[-1], case.shape, dtype)
    copy_elements = max(math.prod(case.shape), 2 * cache_bytes // 4)  # two of them: >= 4 x cache in all
    copy_buffers = (jnp.ones((copy_elements,), jnp.float32), jnp.full((copy_elements,), 2.0, jnp.float32))
    device = torch_device() if any(i.name == "torch" for i in impls) else "cpu"
    torch_inputs = [to_torch(b, case.dtype, device) for b in buffers] if any(i.name == "torch" for i in impls) else []
    torch_cotangent = to_torch(cotangent, case.dtype, device) if torch_inputs else None

    timers: dict[str, Callable[[], float]] = {}
    for impl in impls:
        op = impl.build(case)
        if impl.name == "torch":
            state = {"i": 0}

            def torch_timer(op=op, state=state):
                x = torch_inputs[state["i"] % len(torch_inputs)]
                state["i"] += 1
                synchronize(device)
                start = time.perf_counter()
                op(x, torch_cotangent)
                synchronize(device)
                return time.perf_counter() - start

            timers[impl.name] = torch_timer
        else:
            loop = _in_loop(op, calls)
            timers[impl.name] = lambda loop=loop: _timed(loop, buffers, cotangent) / calls
    elementwise = _in_loop(lambda x, g: x * 1.5 + 0.5, calls)
    copy = _in_loop(lambda x, g: -x, min_calls)
    timers["_elementwise"] = lambda: _timed(elementwise, buffers, cotangent) / calls

    def copy_timer():
        return _timed(copy, copy_buffers, cotangent) / min_calls

    for timer in [*timers.values(), copy_timer]:  # compile and warm up
        timer()
        timer()
    samples: dict[str, list[float]] = {name: [] for name in [*timers, "_copy"]}
    names = list(timers)
    for round_ in range(repeat):
        # Rotating the order spreads what a kernel inherits from its predecessor over all of them.
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            samples[name].append(timers[name]())
        samples["_copy"].append(copy_timer())
        # The copy evicts the inputs from the caches; touch them again, untimed, so the next round's
        # first kernel finds them as every other kernel does.
        timers["_elementwise"]()
    results = {name: _summarize(s) for name, s in samples.items()}
    return (
        {i.name: results[i.name] for i in impls},
        results["_elementwise"],
        results["_copy"],
        count,
        copy_elements * 4,
    )


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


def rates(case: Case, kernel: Measurement, elementwise: Measurement, copy: Measurement, copy_bytes: int):
    """``(GB/s, % of copy bandwidth, time relative to the elementwise op)`` of one kernel."""
    gbps = TRAFFIC[case.mode] * case.tensor_bytes / kernel.median / 1e9
    copy_gbps = 2 * copy_bytes / copy.median / 1e9
    return gbps, 100 * gbps / copy_gbps, kernel.median / elementwise.median


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
    from bnbench.results.store import ResultsStore, write_csv

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
    for option, asked, choices in (("--impl", impl_names, known), ("--mode", modes, MODES), ("--dtype", dtypes, DEFAULT_DTYPES)):
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


def _case_rows(case: Case, runnable: list, measured_case: tuple, cache_bytes: int, accuracy_cache: dict) -> list[Row]:
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
