"""Training one block on one device, by its execution path.

* ``vmapped``: all the block's runs at once (``jax.vmap`` over a leading run axis, seeds and scalar
  hyperparameters traced, so a group compiles once; the steps between evaluations in one ``lax.scan``),
  the last block of a group padded with copies of its last run. Runs are independent under ``vmap``: a
  run that diverges does not touch its neighbours.
* ``stepwise``: one run, a Python loop calling a jitted train step per batch (the sequential engine's
  path, and the vectorized engine's for the models :func:`bnbench.engine.policy.choose_path` keeps off vmap).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from bnbench.engine import programs
from bnbench.engine.blocks import Block
from bnbench.engine.errors import OutOfMemory
from bnbench.engine.policy import compiler_options
from bnbench.experiment.fields import RunConfig
from bnbench.training.context import ExecutionContext
from bnbench.training.outcomes import RunResult, summarize_output
from bnbench.training.program import ProgramOutput, device_data
from bnbench.training.signature import HParams, Signature


def train_block(
    block: Block, device: jax.Device, arrays: dict[int, tuple], program_cache: Path | None = None
) -> list[tuple[RunConfig, RunResult]]:
    """Trains one block on ``device``; ``arrays`` caches the data sets put on it. Raises
    :class:`bnbench.engine.errors.OutOfMemory` when the device runs out of memory."""
    dataset = block.group.dataset
    if id(dataset) not in arrays:
        arrays[id(dataset)] = device_data(dataset, device)
    try:
        if block.context.execution == "stepwise":
            pairs = [(config, _train_stepwise(block.group.signature, config, arrays[id(dataset)], device, block.context))
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
    fn = programs.block_program(sig, block.context.conv_kernel, device, args, program_cache)
    program = programs.compiled(fn, device, *args,
                                options=compiler_options(sig, device.platform, block.context.numerics,
                                                         block.context.conv_kernel))
    output = jax.device_get(program(*args))
    wall = (time.perf_counter() - begin) / len(block.configs)
    return [(config, summarize_output(sig, ProgramOutput(*(a[i] for a in output)), wall)) for i, config in enumerate(block.configs)]


def _train_stepwise(sig: Signature, config: RunConfig, arrays: tuple, device: jax.Device,
                    ctx: ExecutionContext) -> RunResult:
    """One run, a Python loop over a jitted train step per batch, on ``device`` in context ``ctx``."""
    init, indices, step, evaluate, probe = programs.stepwise_fns(sig, ctx.conv_kernel)
    x_train, y_train, x_test, y_test = arrays
    begin = time.perf_counter()
    options = compiler_options(sig, device.platform, ctx.numerics, ctx.conv_kernel)
    seed, hp = jax.device_put((np.uint32(config.seed), HParams.of(config)), device)
    state = programs.compiled(init, device, seed, hp, options=options)(seed, hp)
    probe_at = programs.compiled(probe, device, state, seed, hp, np.int32(0), x_train, y_train, options=options)
    evaluate_at = programs.compiled(evaluate, device, state, seed, hp, x_train, x_test, y_test, options=options)
    losses, evaluations, probed = [], [], [probe_at(state, seed, hp, np.int32(0), x_train, y_train)]
    start = 0
    for end in sig.eval_steps:
        batch_indices = programs.compiled(indices, device, seed, start, end - start, static=(end - start,), options=options)
        batches = np.asarray(batch_indices(seed, start))
        train_step = programs.compiled(step, device, state, batches[0], hp, x_train, y_train, options=options)
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
