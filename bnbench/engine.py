"""Engines that execute runs: ``vectorized`` (default) and ``sequential`` (the plain reference path).

Both drive the same :class:`bnbench.train.Program`, so they compute the same math.

* ``vectorized``: runs are grouped by compiled signature (:class:`bnbench.train.Signature` plus the
  data set); each group trains all its runs at once with ``jax.vmap`` over a leading run axis (seeds
  and scalar hyperparameters are traced, so a group compiles once), the steps between evaluations in
  one ``lax.scan``, and the run axis sharded over the local devices. Groups too large for memory are
  cut into chunks of equal size (the last one padded), so the chunk shape, and the compilation, stay
  the same. Runs are independent under ``vmap``: a run that diverges does not touch its neighbours.
* ``sequential``: one run after another, a Python loop calling a jitted train step per batch, for
  debugging and as the reference the vectorized engine is tested against.

On CPU every local device is a host "device"; the CLI exposes one per core (see
:func:`bnbench.options.cpu_device_flag`) so the vectorized engine spreads runs over the cores.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bnbench import data, programcache
from bnbench.config import RunConfig
from bnbench.errors import BnbenchError
from bnbench.options import ENGINES
from bnbench.outcomes import RunOutput, RunResult, summarize_output
from bnbench.train import HParams, Signature, device_data, make_program

MAX_CHUNK = 512
_DEFAULT_MEMORY = 8 << 30  # bytes, assumed where the device does not report its memory (CPU)


class EngineError(BnbenchError):
    """The engine cannot run as asked (e.g. more devices requested than exist)."""


class Group(NamedTuple):
    """Runs sharing one compiled program and one data set."""

    signature: Signature
    dataset: data.Dataset
    configs: list[RunConfig]


def group_runs(configs: list[RunConfig], data_dir: str | Path | None = None) -> list[Group]:
    """Groups runs by (signature, data set), keeping the order in which groups first appear.

    Data sets are loaded from ``data_dir`` (see :mod:`bnbench.datafiles`).
    """
    groups: dict[tuple, Group] = {}
    for config in configs:
        dataset = data.load(config.dataset, config.num_samples, data_dir)
        key = (Signature.of(config, dataset), config.dataset, config.num_samples)
        groups.setdefault(key, Group(key[0], dataset, []))
        groups[key].configs.append(config)
    return list(groups.values())


def enable_compilation_cache(folder: Path | None) -> str | None:
    """Keeps every compiled program in ``folder`` for later processes (JAX's persistent compilation
    cache), or turns the cache off with ``None``; returns a note if the folder cannot be used (then the
    cache is off).

    Entries are keyed by a hash of the program, the devices and the JAX version, so a cached program is
    the program that would be compiled, and results do not change. Processes may share the folder (each
    entry is written once; one read while another process writes it fails its zlib check), and an
    entry that cannot be read (half-written, truncated, corrupt) costs a compilation and a warning from
    JAX, never an error: ``jax_raise_persistent_cache_errors`` stays off.
    """
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            jax.config.update("jax_enable_compilation_cache", False)
            return f"compilation cache off: cannot create {folder} ({err.strerror})"
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_enable_compilation_cache", folder is not None)
    return None


def validate(engine: str, devices: int | None) -> tuple[jax.Device, ...]:
    """Checks the engine options; returns the devices to use. Raises :class:`EngineError`."""
    if engine not in ENGINES:
        raise EngineError(f"--engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
    return tuple(select_devices(devices))


def select_devices(count: int | None) -> list[jax.Device]:
    """The first ``count`` local devices of the default backend (all of them if ``None``)."""
    devices = jax.local_devices()
    if count is None:
        return devices
    if not 1 <= count <= len(devices):
        raise EngineError(f"--devices: {count} requested, {len(devices)} available ({devices[0].platform})")
    return devices[:count]


# Where the vectorized engine does not vmap, by platform: it runs these models one run at a time, a
# jitted step per batch (the sequential engine's path), because that measured faster. On CPU, XLA runs
# a convolution inside a lax.scan (a while loop), or vmapped over runs (a grouped convolution), many
# times slower than the same step compiled alone: 4 runs of 300 steps of the 1-D CNN (3x32 channels,
# MNIST-1D) took 3.56 s vmapped against 0.40 s one at a time at batch 32, 20.1 s against 1.08 s at
# batch 128; a ResNet-20 step (batch 128, 32x32x3) 0.376 s alone, 15.4 s inside a scan (2-core CPU).
# On an NVIDIA H200 (JAX 0.11.2; 4 runs of 200 steps, batch 128, 32x32x3) vmapping was 1.8x faster for
# the CNN and VGG-11 but 0.77x for ResNet-20. Not measured on TPU, where everything vmaps.
ONE_AT_A_TIME = {"cpu": ("cnn", "vgg", "resnet"), "gpu": ("resnet",)}


def vmaps(model: str, platform: str) -> bool:
    """Whether the vectorized engine vmaps the runs of ``model`` on ``platform`` (else: one at a time)."""
    return model not in ONE_AT_A_TIME.get(platform, ())


def execution_paths(configs: list[RunConfig], engine: str, platform: str) -> dict[str, str]:
    """How each model of ``configs`` is executed: ``"vmapped"`` or ``"one run at a time"`` (for meta.json)."""
    return {
        model: "vmapped" if engine == "vectorized" and vmaps(model, platform) else "one run at a time"
        for model in sorted({c.model for c in configs})
    }


def run_memory(sig: Signature, num_test: int) -> int:
    """An upper estimate of the device memory one vectorized run takes, in bytes (float32 values).

    Counted from the model's shapes (``jax.eval_shape``, nothing computed): parameters with their
    gradients, optimizer moments and temporaries (x8); a training step's activations kept for the
    backward pass, for every example of the batch three arrays per nonlinearity (the layer's output,
    the norm layer's, the nonlinearity's), five in a residual net (also a unit's shortcut and sum);
    evaluation, which keeps at most two layers of the test split alive at once; the order of the epoch
    in progress and of the next, being drawn. Checked against XLA's buffer assignment
    (``compiled.memory_analysis()``) in the tests: never below it, at most 2x above.
    """
    model = sig.make_model()
    params, state = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    example = jax.ShapeDtypeStruct((1, *sig.input_shape), np.float32)
    preacts = jax.eval_shape(lambda p, s, x: model.preactivations(p, s, x), params, state, example)
    sizes = [math.prod(a.shape) for a in preacts] or [0]
    per_example = (5 if sig.model == "resnet" else 3) * sum(sizes) + math.prod(sig.input_shape)
    training = sig.batch_size * per_example
    evaluation = num_test * 2 * (max(sizes) + math.prod(sig.input_shape))
    return 4 * (8 * sig.num_params + max(training, evaluation) + 2 * sig.num_train)


def default_chunk_size(sig: Signature, num_test: int, device: jax.Device) -> int:
    """Runs per vectorized chunk: :func:`run_memory` against a quarter of the free memory
    (:func:`free_memory`)."""
    return max(1, min(MAX_CHUNK, free_memory(device) // 4 // run_memory(sig, num_test)))


def free_memory(device: jax.Device) -> int:
    """Bytes the device can still give JAX: its allocator's limit less what is in use (on a GPU with
    JAX's default preallocation, the limit is the pool JAX took, 75% of the card, and the data sets
    already on it count as in use); an assumed 8 GiB where the device reports nothing (CPU)."""
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
        return _DEFAULT_MEMORY
    return max(0, stats["bytes_limit"] - stats.get("bytes_in_use", 0))


def _jit_over(fn, devices: tuple[jax.Device, ...]):
    """``fn`` jitted with its run axis (seeds, hyperparameters, outputs) sharded over ``devices`` and the
    data replicated."""
    if len(devices) == 1:
        return jax.jit(fn)
    mesh = Mesh(np.array(devices), ("runs",))
    runs, replicated = NamedSharding(mesh, PartitionSpec("runs")), NamedSharding(mesh, PartitionSpec())
    return jax.jit(fn, in_shardings=(runs, runs, *(replicated,) * 4), out_shardings=runs)


@functools.lru_cache(maxsize=64)
def _vectorized_fn(sig: Signature, devices: tuple[jax.Device, ...]):
    return _jit_over(jax.vmap(make_program(sig).run, in_axes=(0, 0, None, None, None, None)), devices)


_READ_BACK: dict[str, Callable] = {}  # programs read from (or traced into) a program cache, by key


def _chunk_program(sig: Signature, devices: tuple[jax.Device, ...], args: tuple, program_cache: Path | None):
    """What runs a chunk: :func:`_vectorized_fn`, or with ``program_cache`` the same program traced
    once per machine (:mod:`bnbench.programcache`)."""
    fn = _vectorized_fn(sig, devices)
    if program_cache is None:
        return fn
    program_key = programcache.key(sig, devices, args)
    if program_key not in _READ_BACK:
        exported = programcache.load(program_cache, program_key)
        if exported is None:
            exported = jax.export.export(fn)(*args)
            programcache.save(program_cache, program_key, exported)
        _READ_BACK[program_key] = _jit_over(exported.call, devices)
    return _READ_BACK[program_key]


@functools.lru_cache(maxsize=64)
def _sequential_fns(sig: Signature):
    program = make_program(sig)
    return (
        jax.jit(program.init),
        jax.jit(program.batch_indices, static_argnums=2),
        jax.jit(program.step, donate_argnums=0),
        jax.jit(program.evaluate),
        jax.jit(program.probe),
    )


def _stack_hparams(configs: list[RunConfig]) -> HParams:
    return HParams(*(np.asarray(v, np.float32) for v in zip(*(HParams.of(c) for c in configs))))


def _seeds(configs: list[RunConfig]) -> np.ndarray:
    return np.asarray([c.seed for c in configs], np.uint32)


def _out_of_memory(err: Exception) -> bool:
    return isinstance(err, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(err)


def run_vectorized(
    group: Group,
    *,
    chunk_size: int | None = None,
    devices: tuple[jax.Device, ...],
    done: frozenset[str] = frozenset(),
    stop: threading.Event | None = None,
    program_cache: Path | None = None,
) -> Iterator[tuple[RunConfig, RunResult]]:
    """Trains the group's runs not in ``done``, in chunks of one fixed size (one at a time, as
    :func:`run_sequential`, where :func:`vmaps` says so).

    The chunk size is ``chunk_size`` (default: :func:`default_chunk_size`), at most the whole group
    and rounded up to a multiple of the devices. It depends on the group, not on which of its runs
    are left, so a resumed sweep runs the same program on the same shapes and gets bitwise the same
    results. Short chunks are padded with copies of their last run. A chunk that runs out of device
    memory is retried at half the size. No new chunk starts once ``stop`` is set. With
    ``program_cache`` (a folder) the traced program is kept there for later processes. Yields
    ``(config, result)`` per run; ``wall_s`` is the chunk's time divided by its runs (compilation
    included for the first).
    """
    sig = group.signature
    if not vmaps(sig.model, devices[0].platform):
        yield from run_sequential(group, done=done, stop=stop)
        return
    arrays = device_data(group.dataset)  # first, so that the chunk size sees the memory they take
    size = chunk_size or default_chunk_size(sig, len(group.dataset.y_test), devices[0])
    size = -(-min(size, len(group.configs)) // len(devices)) * len(devices)
    pending = [c for c in group.configs if c.run_id not in done]
    while pending and not (stop and stop.is_set()):
        chunk = pending[:size]
        padded = chunk + [chunk[-1]] * (size - len(chunk))
        begin = time.perf_counter()
        try:
            args = (_seeds(padded), _stack_hparams(padded), *arrays)
            output = jax.device_get(_chunk_program(sig, devices, args, program_cache)(*args))
        except Exception as err:
            if not _out_of_memory(err) or size == len(devices):
                raise
            size = max(len(devices), size // 2 // len(devices) * len(devices))
            continue
        wall = (time.perf_counter() - begin) / len(chunk)
        for i, config in enumerate(chunk):
            yield config, summarize_output(sig, RunOutput(*(a[i] for a in output)), wall)
        pending = pending[size:]


def run_sequential(
    group: Group, *, done: frozenset[str] = frozenset(), stop: threading.Event | None = None
) -> Iterator[tuple[RunConfig, RunResult]]:
    """Trains the group's runs not in ``done`` one at a time, a Python loop over jitted steps.

    No new run starts once ``stop`` is set.
    """
    sig = group.signature
    init, indices, step, evaluate, probe = _sequential_fns(sig)
    x_train, y_train, x_test, y_test = device_data(group.dataset)
    for config in (c for c in group.configs if c.run_id not in done):
        if stop and stop.is_set():
            return
        begin = time.perf_counter()
        seed, hp = np.uint32(config.seed), HParams.of(config)
        state = init(seed, hp)
        losses, evaluations, probed = [], [], [probe(state, seed, hp, np.int32(0), x_train, y_train)]
        start = 0
        for end in sig.eval_steps:
            for idx in np.asarray(indices(seed, start, end - start)):
                state, loss = step(state, idx, hp, x_train, y_train)
                losses.append(loss)
            evaluations.append(evaluate(state, seed, hp, x_train, x_test, y_test))
            probed.append(probe(state, seed, hp, np.int32(end), x_train, y_train))
            start = end
        output = RunOutput(
            np.stack(jax.device_get(losses)),
            *(np.stack(v) for v in zip(*jax.device_get(evaluations))),
            np.stack(jax.device_get(probed)),
        )
        yield config, summarize_output(sig, output, time.perf_counter() - begin)


def run_all(
    configs: list[RunConfig],
    *,
    engine: str = "vectorized",
    chunk_size: int | None = None,
    devices: int | None = None,
    done: frozenset[str] = frozenset(),
    stop: threading.Event | None = None,
    data_dir: str | Path | None = None,
    program_cache: Path | None = None,
) -> Iterator[tuple[RunConfig, RunResult]]:
    """Trains every run of ``configs`` whose id is not in ``done``, group by group.

    ``configs`` is the whole grid even when resuming: the vectorized engine sizes its chunks by it.
    Once ``stop`` is set no new run or chunk starts. Data sets are loaded from ``data_dir``. The
    vectorized engine keeps its traced programs in ``program_cache`` if given. Yields ``(config,
    result)`` as runs finish.
    """
    selected = validate(engine, devices)
    for group in group_runs(configs, data_dir):
        if engine == "sequential":
            yield from run_sequential(group, done=done, stop=stop)
        else:
            yield from run_vectorized(
                group, chunk_size=chunk_size, devices=selected, done=done, stop=stop, program_cache=program_cache
            )


def train_run(config: RunConfig, engine: str = "sequential") -> RunResult:
    """Trains one run and returns its result."""
    ((_, result),) = run_all([config], engine=engine)
    return result
