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
against float64 on an input with mean/std = 3000) are in :mod:`bnbench.profiling.peers`; the cases
profiled, their rows and CSV in :mod:`bnbench.profiling.table`.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnbench.profiling.peers import Case, Impl, synchronize, to_torch, torch_device

TRAFFIC = {"train": 3, "grad": 8, "infer": 2, "fold": 2}  # bytes moved, in units of the tensor's size
_ASSUMED_CACHE = 64 << 20  # bytes, where the last-level cache size cannot be read (accelerators)


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


def _elementwise(x, g):
    return x * 1.5 + 0.5


def allocator_overhead(shape: tuple[int, ...], dtype: str, repeats: int = 5) -> float:
    """Per-call time of ``x*a+b`` (a fresh output each call) over its in-loop time, same inputs.

    Well above 1 on Linux CPUs for large tensors: glibc serves each fresh output buffer with new pages
    (mmap), and the page faults cost more than the kernel.
    """
    buffers = (jnp.ones(shape, dtype), jnp.full(shape, 2, dtype))
    per_call = jax.jit(lambda x: x * 1.5 + 0.5)
    in_loop = _in_loop(_elementwise, 8)
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


class CaseMeasurement(NamedTuple):
    """One case timed: per-kernel-call measurements (seconds) by implementation name, the elementwise
    and copy references, the number of input buffers, and the copy buffer's size in bytes."""

    kernels: dict[str, Measurement]
    elementwise: Measurement
    copy: Measurement
    buffers: int
    copy_bytes: int


def _jax_timer(op: Callable, calls: int, buffers: tuple, cotangent) -> Callable[[], float]:
    """Seconds per kernel call of ``op``, timed as one jitted loop of ``calls`` calls over ``buffers``."""
    loop = _in_loop(op, calls)
    return lambda: _timed(loop, buffers, cotangent) / calls


def _torch_timer(op: Callable, inputs: list, cotangent, device: str) -> Callable[[], float]:
    """Seconds of one call of the PyTorch kernel ``op``, each call on the next of ``inputs``."""
    rotation = itertools.cycle(inputs)

    def timer():
        x = next(rotation)
        synchronize(device)
        start = time.perf_counter()
        op(x, cotangent)
        synchronize(device)
        return time.perf_counter() - start

    return timer


def _timers(case: Case, impls: list[Impl], buffers: tuple, cotangent, calls: int) -> dict[str, Callable[[], float]]:
    """A timer per implementation, by name, then the elementwise reference's (``_elementwise``)."""
    wants_torch = any(i.name == "torch" for i in impls)
    device = torch_device() if wants_torch else "cpu"
    torch_inputs = [to_torch(b, case.dtype, device) for b in buffers] if wants_torch else []
    torch_cotangent = to_torch(cotangent, case.dtype, device) if torch_inputs else None
    timers: dict[str, Callable[[], float]] = {}
    for impl in impls:
        op = impl.build(case)
        if impl.name == "torch":
            timers[impl.name] = _torch_timer(op, torch_inputs, torch_cotangent, device)
        else:
            timers[impl.name] = _jax_timer(op, calls, buffers, cotangent)
    timers["_elementwise"] = _jax_timer(_elementwise, calls, buffers, cotangent)
    return timers


def _round_robin(timers: dict[str, Callable[[], float]], copy_timer: Callable[[], float], repeat: int) -> dict[str, Measurement]:
    """Warms every timer up, then ``repeat`` rounds of all of them and the copy (``_copy``)."""
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
    return {name: _summarize(s) for name, s in samples.items()}


def measure_case(case: Case, impls: list[Impl], *, repeat: int, cache_bytes: int, min_calls: int = 8) -> CaseMeasurement:
    """Times every implementation of ``case`` with the two references, interleaved round-robin."""
    dtype = jnp.dtype(case.dtype)
    count = buffer_count(case.tensor_bytes, cache_bytes)
    calls = max(min_calls, 2 * count)  # kernel calls per timed sample: every buffer at least twice
    keys = jax.random.split(jax.random.PRNGKey(0), count + 1)
    buffers = tuple(jax.random.normal(k, case.shape, dtype) for k in keys[:-1])
    cotangent = jax.random.normal(keys[-1], case.shape, dtype)
    copy_elements = max(math.prod(case.shape), 2 * cache_bytes // 4)  # two of them: >= 4 x cache in all
    copy_buffers = (jnp.ones((copy_elements,), jnp.float32), jnp.full((copy_elements,), 2.0, jnp.float32))
    timers = _timers(case, impls, buffers, cotangent, calls)
    copy = _in_loop(lambda x, g: -x, min_calls)
    results = _round_robin(timers, lambda: _timed(copy, copy_buffers, cotangent) / min_calls, repeat)
    return CaseMeasurement({i.name: results[i.name] for i in impls}, results["_elementwise"], results["_copy"], count,
                           copy_elements * 4)


def rates(case: Case, kernel: Measurement, elementwise: Measurement, copy: Measurement, copy_bytes: int):
    """``(GB/s, % of copy bandwidth, time relative to the elementwise op)`` of one kernel."""
    gbps = TRAFFIC[case.mode] * case.tensor_bytes / kernel.median / 1e9
    copy_gbps = 2 * copy_bytes / copy.median / 1e9
    return gbps, 100 * gbps / copy_gbps, kernel.median / elementwise.median
