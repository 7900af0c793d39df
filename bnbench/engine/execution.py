"""Engines that execute runs: ``vectorized`` (default) and ``sequential`` (the plain reference path).

Both drive the same :class:`bnbench.training.program.Program`, so they compute the same math.

* ``vectorized``: runs are grouped by compiled signature (:class:`bnbench.training.signature.Signature` plus the
  data set). A group's runs are cut into **blocks** of :func:`block_size` runs, a number decided
  by the program and the device alone, the last block padded with copies of its last run; a block
  trains all its runs at once on one device (``jax.vmap`` over a leading run axis, seeds and scalar
  hyperparameters traced, so a group compiles once; the steps between evaluations in one
  ``lax.scan``), and the devices train blocks side by side. Models that :func:`vmaps` says run faster
  one at a time execute stepwise instead, one run per block.
* ``sequential``: one run after another on the first device, a Python loop calling a jitted train step
  per batch (stepwise), for debugging and as the reference the vectorized engine is tested against.

Why fixed blocks: XLA compiles a vmapped program differently for each number of runs per device, so
that number decides a run's float32 numbers, while neither the other runs of a block nor their order
do (tested). With blocks whose size depends on the program and device only, a run's results are a
function of its configuration and its execution context (:mod:`bnbench.training.context`, recorded per run),
whatever else is in the grid, the grid's order, resume, extension, sharding or the device count.
Runs are independent under ``vmap``: a run that diverges does not touch its neighbours.

On CPU the blocks train side by side on the one host device, as many at a time as the process may use
CPUs (:func:`slots`).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import jax
import numpy as np

from bnbench import data
from bnbench.training import context
from bnbench.engine import trace_cache
from bnbench.experiment.fields import RunConfig
from bnbench.training.context import ExecutionContext
from bnbench.errors import BnbenchError, RunFailure
from bnbench.options import ENGINES, compile_cache_dir, usable_cpus
from bnbench.models import convolution
from bnbench.models.cnn import channels_last
from bnbench.models.plugged import convolutional
from bnbench.training.outcomes import RunResult, summarize_output
from bnbench.training.signature import HParams, Signature
from bnbench.training.program import ProgramOutput, device_data, make_program

# The most runs a vmapped block holds, by platform. On CPU, blocks of 2 train a grid about as fast as
# larger ones and pad small groups (a spec's seeds) least; accelerators are launch-bound at these
# sizes, so padding costs them little. Measured by `make bench-blocks`; not measured on TPU.
MAX_RUNS_PER_DEVICE = {"cpu": 2, "gpu": 16, "tpu": 16}
_DEFAULT_MEMORY = 8 << 30  # bytes, assumed where the device does not report its memory (CPU)


class EngineError(BnbenchError):
    """The engine cannot run as asked (e.g. more devices requested than exist)."""


class OutOfMemory(RunFailure, EngineError):
    """A block ran out of device memory."""


class Group(NamedTuple):
    """Runs sharing one compiled program and one data set."""

    signature: Signature
    dataset: data.Dataset
    configs: list[RunConfig]


class Plan(NamedTuple):
    """Groups of runs, the context each group executes in, and the slots that train them (:func:`slots`)."""

    groups: list[Group]
    contexts: list[ExecutionContext]
    devices: tuple[jax.Device, ...]

    def contexts_by_run(self) -> dict[str, ExecutionContext]:
        """Each run's execution context, by run id."""
        return {c.run_id: ctx for group, ctx in zip(self.groups, self.contexts) for c in group.configs}


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


def caches(explicit: Path | None = None, off: bool = False) -> tuple[Path | None, str | None]:
    """Turns on the persistent compilation cache (``--compile-cache``, ``--no-compile-cache``,
    ``$BNBENCH_COMPILE_CACHE``: :func:`bnbench.options.compile_cache_dir`); returns the folder traced
    programs go to (:mod:`bnbench.engine.trace_cache`; None when off) and a note if the folder cannot be used."""
    folder = compile_cache_dir(os.environ, explicit, off=off)
    note = enable_compilation_cache(folder)
    return (folder / "traced" if folder is not None and note is None else None), note


def validate(engine: str, devices: int | None) -> tuple[jax.Device, ...]:
    """Checks the engine options; returns the slots blocks train in (:func:`slots`). Raises
    :class:`EngineError`."""
    if engine not in ENGINES:
        raise EngineError(f"--engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
    return slots(devices)


def slots(count: int | None = None) -> tuple[jax.Device, ...]:
    """Where blocks train, one entry per block trained at a time.

    On CPU: the first host device, ``count`` times (default: once per CPU the process may use,
    :func:`bnbench.options.usable_cpus`). XLA runs programs called at once on one CPU device side by
    side, and compiles a program once per device, so one device trains as fast as one per core and
    compiles each program once. Elsewhere: the first ``count`` local devices (default: all).
    """
    devices = jax.local_devices()
    if devices[0].platform == "cpu":
        if count is not None and count < 1:
            raise EngineError(f"--devices: must be >= 1, got {count}")
        return (devices[0],) * (count or usable_cpus())
    if count is None:
        return tuple(devices)
    if not 1 <= count <= len(devices):
        raise EngineError(f"--devices: {count} requested, {len(devices)} available ({devices[0].platform})")
    return tuple(devices[:count])


# Where the vectorized engine does not vmap, by platform: it runs these models stepwise, one run at a
# time with a jitted step per batch (the sequential engine's path), because that measured faster or as
# fast. XLA:CPU runs its convolution many times slower inside the program's lax.scan and under vmap, so
# on CPU the engine rewrites a vmapped conv net's convolutions as patches (bnbench.models.convolution),
# which keep their speed in a scan, and trains one run per block (MAX_CONV_RUNS_PER_DEVICE), blocks side
# by side: a vmapped batch of those products measured slower per run than one. That made the CNN and VGG
# faster than stepwise (VGG many times on images, where XLA:CPU's 3x3 convolution of a 2x2 input is
# pathologically slow); a ResNet-20 step on images in a scan of patches measured slower than stepwise,
# so ResNets stay stepwise on CPU (`make bench-conv-policy`). A ResNet on 1-D signals trained faster
# vmapped but moved the shipped specs' results beyond their seed spread, so it stays stepwise too
# (docs/engine.md). On an NVIDIA H200 vmapping was faster for the CNN and VGG-11 but slower for
# ResNet-20. Not measured on TPU, where everything vmaps.
# A plugin network runs as "convolutional plugin" where its traced program convolves, as "mlp" otherwise.
ONE_AT_A_TIME = {"cpu": ("resnet",), "gpu": ("resnet",)}
CONVOLUTIONAL = ("cnn", "vgg", "resnet", "convolutional plugin")
MAX_CONV_RUNS_PER_DEVICE = {"cpu": 1}

# XLA:CPU fuses a ResNet's element-wise chain (norm layers, activations, shortcut sums) into the
# transposes that feed its convolutions' weight gradients, recomputing the residual stream from the
# stage's first unit in each of them: over a third of a 2-D ResNet-20's step, more the deeper. YNNPACK's
# element-wise fusions take those operations out of XLA's loop fusions, so the transposes read stored
# activations. They measured slower for 1-D ResNets (MNIST-1D) and no faster for the CNN and VGG, so
# only ResNets on images compile with them, on CPU (`make bench-conv-policy`, docs/performance.md).
YNN_ELEMENTWISE = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_ELTWISE"}


def vmaps(model: str, platform: str) -> bool:
    """Whether the vectorized engine vmaps the runs of ``model`` on ``platform`` (else: stepwise)."""
    return model not in ONE_AT_A_TIME.get(platform, ())


def execution(model: str, engine: str, platform: str) -> str:
    """How ``engine`` executes runs of ``model`` on ``platform``: ``"vmapped"`` or ``"stepwise"``."""
    return "vmapped" if engine == "vectorized" and vmaps(model, platform) else "stepwise"


@functools.lru_cache(maxsize=256)
def conv_form(sig: Signature, platform: str, path: str) -> str:
    """The form of a program's convolutions: ``"patches"`` for a conv net where
    :func:`bnbench.models.convolution.form` says so for ``platform`` and ``path``, else ``"xla"``."""
    return convolution.form(platform, path) if family(sig) in CONVOLUTIONAL else "xla"


def compiler_options(sig: Signature, platform: str) -> dict[str, str]:
    """The XLA options, beyond XLA's defaults, that every program of a run compiles with:
    :data:`YNN_ELEMENTWISE` for a built-in ResNet on images (2-D inputs) on CPU, else none. They change
    the program's float32 roundings, so ``meta.json`` records them."""
    on_images = not sig.plugin and sig.model == "resnet" and len(channels_last(sig.input_shape)) == 3
    return dict(YNN_ELEMENTWISE) if platform == "cpu" and on_images else {}


def family(sig: Signature) -> str:
    """The model family the engine's policy reads (:data:`ONE_AT_A_TIME`): a built-in family's name, or
    for a plugin network "convolutional plugin" if its training step convolves, else "mlp"."""
    if not sig.plugin:
        return sig.model
    return "convolutional plugin" if convolutional(sig.make_model(), sig.input_shape) else "mlp"


def _data_source(name: str) -> str:
    info = data.info(name)
    return f"{info.origin}@{info.digest}" if info.origin else ""


def run_memory(sig: Signature, num_test: int) -> int:
    """An upper estimate of the device memory one vectorized run takes, in bytes (float32 values).

    Counted from the model's shapes (``jax.eval_shape``, nothing computed): parameters with their
    gradients, optimizer moments and temporaries (x8); a training step's activations kept for the
    backward pass, for every example of the batch three arrays per nonlinearity (the layer's output,
    the norm layer's, the nonlinearity's), five in a residual net (also a unit's shortcut and sum);
    evaluation, which keeps at most two layers of the test split alive at once; the order of the epoch
    in progress and of the next, being drawn. Programs with XLA's convolutions; where they are patches
    (on CPU) a conv net's blocks hold one run whatever the estimate. Checked against XLA's buffer assignment
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


def device_memory(device: jax.Device) -> int:
    """Bytes JAX may use on the device: its allocator's limit (on a GPU with JAX's default
    preallocation, the pool JAX took, 75% of the card); an assumed 8 GiB where the device reports
    nothing (CPU). Not what is free at the moment, which the data sets and programs already on the
    device change: a block's size must not depend on what ran before it."""
    stats = device.memory_stats() or {}
    return stats.get("bytes_limit", _DEFAULT_MEMORY)


def memory_available(device: jax.Device) -> int:
    """The memory the device has in all: its allocator's limit, or on the host its physical memory."""
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
        return stats["bytes_limit"]
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _check_fits(group: Group, device: jax.Device) -> None:
    """Refuses a data set that would take more than half the device's memory, before anything trains."""
    arrays = (group.dataset.x_train, group.dataset.y_train, group.dataset.x_test, group.dataset.y_test)
    size, available = sum(a.nbytes for a in arrays), memory_available(device)
    if 2 * size > available:
        raise EngineError(f"dataset {group.configs[0].dataset!r}: {size / 2**30:.1f} GiB, more than half the memory "
                          f"of {device.device_kind} ({available / 2**30:.1f} GiB); use num_samples to take fewer examples")


def block_size(sig: Signature, num_test: int, device: jax.Device, requested: int | None = None) -> int:
    """The runs of a vmapped block of ``sig`` on ``device``: ``requested`` (``--runs-per-device``), else
    as many as a quarter of the device's memory holds (:func:`run_memory`, :func:`device_memory`), at
    most :data:`MAX_RUNS_PER_DEVICE` for its platform (:data:`MAX_CONV_RUNS_PER_DEVICE` for a conv net)."""
    if requested is not None:
        return requested
    fits = device_memory(device) // 4 // run_memory(sig, num_test)
    most = MAX_RUNS_PER_DEVICE.get(device.platform, 1)
    if family(sig) in CONVOLUTIONAL:
        most = MAX_CONV_RUNS_PER_DEVICE.get(device.platform, most)
    return max(1, min(most, fits))


def prepare_groups(
    groups: list[Group], *, engine: str = "vectorized", runs_per_device: int | None = None, devices: int | None = None
) -> Plan:
    """The :class:`Plan` of ``groups``: each group's execution and block size, and the slots blocks
    train in (:func:`slots`; the sequential engine uses one). Raises :class:`EngineError` on bad
    options."""
    selected = validate(engine, devices)
    if runs_per_device is not None and runs_per_device < 1:
        raise EngineError(f"--runs-per-device: must be >= 1, got {runs_per_device}")
    if engine == "sequential":
        selected = selected[:1]
    device = selected[0]
    cpu_devices = jax.local_device_count("cpu") if device.platform == "cpu" else 0
    contexts = []
    for group in groups:
        sig = group.signature
        _check_fits(group, device)
        path = execution(family(sig), engine, device.platform)
        size = block_size(sig, len(group.dataset.y_test), device, runs_per_device) if path == "vmapped" else 1
        contexts.append(context.of(device, path, size, cpu_devices, sig.model_source, _data_source(group.configs[0].dataset)))
    return Plan(groups, contexts, selected)


def prepare(
    configs: list[RunConfig],
    *,
    engine: str = "vectorized",
    runs_per_device: int | None = None,
    devices: int | None = None,
    data_dir: str | Path | None = None,
) -> Plan:
    """Groups ``configs`` (data sets loaded from ``data_dir``) and plans their execution
    (:func:`prepare_groups`)."""
    return prepare_groups(group_runs(configs, data_dir), engine=engine, runs_per_device=runs_per_device, devices=devices)


def blocks(plan: Plan, done: frozenset[str] = frozenset()) -> list[Block]:
    """The blocks that train the plan's runs not in ``done``, group by group, in grid order."""
    out = []
    for group, ctx in zip(plan.groups, plan.contexts):
        pending = [c for c in group.configs if c.run_id not in done]
        size = ctx.runs_per_device
        out += [Block(group, ctx, pending[i : i + size]) for i in range(0, len(pending), size)]
    return out


def train(
    plan: Plan,
    *,
    done: frozenset[str] = frozenset(),
    stop: threading.Event | None = None,
    program_cache: Path | None = None,
) -> Iterator[tuple[RunConfig, RunResult]]:
    """Trains the plan's runs not in ``done``; yields ``(config, result)`` in block order as blocks
    finish, ``result.context`` set. Each slot trains one block at a time (a thread per slot: JAX
    releases the GIL while a device computes; see :func:`slots`). Once ``stop`` is set no new block starts; the blocks in
    progress finish and are yielded. If a block fails, the blocks that finished are yielded, then its
    error is raised. With ``program_cache`` (a folder) traced programs are kept there for later
    processes."""
    stop = stop or threading.Event()
    for execution_kind, segment in itertools.groupby(blocks(plan, done), key=lambda b: b.context.execution):
        # Stepwise runs drive their device from Python, a call per step: two of them at once contend for
        # the interpreter and ran slower side by side than one after another.
        devices = plan.devices if execution_kind == "vmapped" else plan.devices[:1]
        yield from _Scheduler(list(segment), devices, stop, program_cache).results()
        if stop.is_set():
            return


class _Scheduler:
    """Hands blocks to one worker thread per slot, in order, and collects their outcomes."""

    def __init__(self, todo: list[Block], devices, stop: threading.Event, program_cache: Path | None):
        self.todo, self.stop, self.program_cache = todo, stop, program_cache
        self.halt = threading.Event()  # a block failed, or the consumer left
        self.outcomes: dict[int, list | BaseException] = {}
        self.next_index = 0
        self.condition = threading.Condition()
        self.workers = [threading.Thread(target=self._work, args=(d,), daemon=True) for d in devices[: len(todo)]]
        self.running = len(self.workers)

    def _take(self) -> int | None:
        with self.condition:
            if self.stop.is_set() or self.halt.is_set() or self.next_index == len(self.todo):
                return None
            self.next_index += 1
            return self.next_index - 1

    def _work(self, device: jax.Device) -> None:
        arrays: dict[int, tuple] = {}  # the data sets on this device, by id
        try:
            while (index := self._take()) is not None:
                try:
                    outcome = train_block(self.todo[index], device, arrays, self.program_cache)
                except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
                    outcome = err
                with self.condition:
                    self.outcomes[index] = outcome
                    self.condition.notify_all()
        finally:
            with self.condition:
                self.running -= 1
                self.condition.notify_all()

    def results(self) -> Iterator[tuple[RunConfig, RunResult]]:
        for worker in self.workers:
            worker.start()
        error = None
        try:
            for index in range(len(self.todo)):
                with self.condition:
                    self.condition.wait_for(lambda: index in self.outcomes or not self.running)
                    outcome = self.outcomes.pop(index, None)
                if outcome is None:  # never started: stopped, or halted by an earlier failure
                    break
                if isinstance(outcome, BaseException):
                    error = error or outcome
                    self.halt.set()
                    continue
                yield from outcome
        finally:
            self.halt.set()  # on a second Ctrl-C too, which leaves at once: the process is ending
        # Workers end once they find no block to take; joined, none is left inside JAX at exit.
        for worker in self.workers:
            worker.join()
        if error is not None:
            raise error


def train_block(
    block: Block, device: jax.Device, arrays: dict[int, tuple], program_cache: Path | None = None
) -> list[tuple[RunConfig, RunResult]]:
    """Trains one block on ``device``; ``arrays`` caches the data sets put on it. Raises
    :class:`OutOfMemory` when the device runs out of memory."""
    dataset = block.group.dataset
    if id(dataset) not in arrays:
        arrays[id(dataset)] = device_data(dataset, device)
    try:
        if block.context.execution == "stepwise":
            pairs = [(config, _train_stepwise(block.group.signature, config, arrays[id(dataset)], device))
                     for config in block.configs]
        else:
            pairs = _train_vmapped(block, arrays[id(dataset)], device, program_cache)
    except Exception as err:
        if _out_of_memory(err):
            raise OutOfMemory(_out_of_memory_message(block)) from None
        raise
    return [(config, result._replace(context=block.context)) for config, result in pairs]


def _out_of_memory_message(block: Block) -> str:
    size, model = block.context.runs_per_device, block.group.signature.model
    if size == 1:
        return f"out of device memory training one {model} run; use a smaller batch_size or model"
    return (f"out of device memory training {size} {model} runs per device; pass --runs-per-device {size // 2} "
            "(runs record it: their numbers differ from those of blocks of another size)")


def _out_of_memory(err: Exception) -> bool:
    return isinstance(err, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(err)


@functools.lru_cache(maxsize=64)
def _vectorized_fn(sig: Signature, conv: str):
    return jax.jit(jax.vmap(make_program(sig, conv).run, in_axes=(0, 0, None, None, None, None)))


_READ_BACK: dict[str, Callable] = {}  # programs read from (or traced into) a program cache, by key
_READ_BACK_LOCK = threading.Lock()  # one thread traces a program while the others wait for it
_COMPILED: dict[tuple, Callable] = {}  # compiled programs, by function, device, arguments' shapes
_COMPILE_LOCK = threading.Lock()
_MAX_COMPILED = 256


def compiled(fn: Callable, device: jax.Device, *args, static: tuple = (), options: dict[str, str] | None = None) -> Callable:
    """The jitted ``fn`` compiled ahead of time for ``args`` on ``device`` (``static``: the values of its
    static arguments; ``options``: XLA's, :func:`compiler_options`), once per process; call it with the
    arguments but the static ones. Compilations run one at a time, so two slots starting blocks of one
    program compile it once, not side by side."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    shapes = tuple((np.shape(leaf), getattr(leaf, "dtype", type(leaf))) for leaf in leaves)
    key = (fn, device, static, tree, shapes, tuple(sorted((options or {}).items())))
    with _COMPILE_LOCK:
        if key not in _COMPILED:
            if len(_COMPILED) >= _MAX_COMPILED:
                _COMPILED.pop(next(iter(_COMPILED)))
            _COMPILED[key] = fn.lower(*args).compile(compiler_options=options or None)
        return _COMPILED[key]


def release_programs() -> None:
    """Drops every program this process compiled or read back, and JAX's caches of them: each compiled
    executable holds memory maps of its code (a process may have 65530 on Linux by default)."""
    with _COMPILE_LOCK, _READ_BACK_LOCK:
        _COMPILED.clear()
        _READ_BACK.clear()
    _vectorized_fn.cache_clear()
    _stepwise_fns.cache_clear()
    conv_form.cache_clear()
    jax.clear_caches()


def _block_program(sig: Signature, device: jax.Device, args: tuple, program_cache: Path | None):
    """What trains a block: :func:`_vectorized_fn` with the convolutions of :func:`conv_form`, or with
    ``program_cache`` the same program traced once per machine (:mod:`bnbench.engine.trace_cache`)."""
    fn = _vectorized_fn(sig, conv_form(sig, device.platform, "vmapped"))
    if program_cache is None:
        return fn
    program_key = trace_cache.key(sig, device, args)
    with _READ_BACK_LOCK:
        if program_key not in _READ_BACK:
            exported = trace_cache.load(program_cache, program_key)
            if exported is None:
                exported = jax.export.export(fn)(*args)
                trace_cache.save(program_cache, program_key, exported)
            _READ_BACK[program_key] = jax.jit(exported.call)
    return _READ_BACK[program_key]


def _stack_hparams(configs: list[RunConfig]) -> HParams:
    return HParams(*(np.asarray(v, np.float32) for v in zip(*(HParams.of(c) for c in configs))))


def _seeds(configs: list[RunConfig]) -> np.ndarray:
    return np.asarray([c.seed for c in configs], np.uint32)


def block_arguments(configs: list[RunConfig], size: int, arrays: tuple, device: jax.Device) -> tuple:
    """The arguments of a vmapped block of ``size`` runs: ``configs`` padded with copies of the last."""
    padded = configs + [configs[-1]] * (size - len(configs))
    return (*jax.device_put((_seeds(padded), _stack_hparams(padded)), device), *arrays)


def _train_vmapped(block: Block, arrays: tuple, device: jax.Device, program_cache: Path | None):
    sig = block.group.signature
    begin = time.perf_counter()
    args = block_arguments(block.configs, block.context.runs_per_device, arrays, device)
    program = compiled(_block_program(sig, device, args, program_cache), device, *args,
                       options=compiler_options(sig, device.platform))
    output = jax.device_get(program(*args))
    wall = (time.perf_counter() - begin) / len(block.configs)
    return [(config, summarize_output(sig, ProgramOutput(*(a[i] for a in output)), wall)) for i, config in enumerate(block.configs)]


@functools.lru_cache(maxsize=64)
def _stepwise_fns(sig: Signature):
    program = make_program(sig)
    return (
        jax.jit(program.init),
        jax.jit(program.batch_indices, static_argnums=2),
        jax.jit(program.step, donate_argnums=0),
        jax.jit(program.evaluate),
        jax.jit(program.probe),
    )


def _train_stepwise(sig: Signature, config: RunConfig, arrays: tuple, device: jax.Device) -> RunResult:
    """One run, a Python loop over a jitted train step per batch, on ``device``."""
    init, indices, step, evaluate, probe = _stepwise_fns(sig)
    x_train, y_train, x_test, y_test = arrays
    begin = time.perf_counter()
    options = compiler_options(sig, device.platform)
    seed, hp = jax.device_put((np.uint32(config.seed), HParams.of(config)), device)
    state = compiled(init, device, seed, hp, options=options)(seed, hp)
    probe_at = compiled(probe, device, state, seed, hp, np.int32(0), x_train, y_train, options=options)
    evaluate_at = compiled(evaluate, device, state, seed, hp, x_train, x_test, y_test, options=options)
    losses, evaluations, probed = [], [], [probe_at(state, seed, hp, np.int32(0), x_train, y_train)]
    start = 0
    for end in sig.eval_steps:
        batch_indices = compiled(indices, device, seed, start, end - start, static=(end - start,), options=options)
        batches = np.asarray(batch_indices(seed, start))
        train_step = compiled(step, device, state, batches[0], hp, x_train, y_train, options=options)
        for batch in batches:
            state, loss = train_step(state, batch, hp, x_train, y_train)
            losses.append(loss)
        evaluations.append(evaluate_at(state, seed, hp, x_train, x_test, y_test))
        probed.append(probe_at(state, seed, hp, np.int32(end), x_train, y_train))
        start = end
    output = ProgramOutput(
        np.stack(jax.device_get(losses)),
        *(np.stack(v) for v in zip(*jax.device_get(evaluations))),
        np.stack(jax.device_get(probed)),
    )
    return summarize_output(sig, output, time.perf_counter() - begin)


def run_all(
    configs: list[RunConfig],
    *,
    engine: str = "vectorized",
    runs_per_device: int | None = None,
    devices: int | None = None,
    done: frozenset[str] = frozenset(),
    stop: threading.Event | None = None,
    data_dir: str | Path | None = None,
    program_cache: Path | None = None,
) -> Iterator[tuple[RunConfig, RunResult]]:
    """Trains every run of ``configs`` whose id is not in ``done`` (:func:`prepare`, then
    :func:`train`); yields ``(config, result)`` as blocks finish."""
    plan = prepare(configs, engine=engine, runs_per_device=runs_per_device, devices=devices, data_dir=data_dir)
    yield from train(plan, done=done, stop=stop, program_cache=program_cache)


def train_run(config: RunConfig, engine: str = "sequential") -> RunResult:
    """Trains one run and returns its result."""
    ((_, result),) = run_all([config], engine=engine)
    return result
