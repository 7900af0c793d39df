"""The cost of each mechanism probe: time per probe point over the time of one training step.

On the quickstart's network (MNIST-1D, MLP 3x100 with BN before ReLU, batch 64, SGD with momentum):
a jitted training step and each probe alone, jitted, timed as the median of many calls in one run.
Usage: ``make bench-probes`` or ``python benchmarks/bench_probes.py``.
"""

import dataclasses
import statistics
import time

import jax
import numpy as np

from bnbench import data, options
from bnbench.experiment.fields import RunConfig
from bnbench.training.signature import HParams, Signature
from bnbench.training.program import make_program

CALLS = 200


def median_seconds(fn, *args, calls: int = CALLS) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    dataset = data.load("mnist1d", 5000)
    x_train, y_train = jax.device_put(dataset.x_train), jax.device_put(dataset.y_train)
    base = RunConfig(dataset="mnist1d", num_samples=5000, widths=(100, 100, 100), batch_size=64, optimizer="sgd",
                     lr=0.05, steps=1000, eval_every=100)
    program = make_program(Signature.of(base, dataset))
    hp, seed = HParams.of(base), np.uint32(0)
    state = program.init(seed, hp)
    idx = np.arange(base.batch_size)
    step = jax.jit(program.step)
    step_time = median_seconds(lambda s: step(s, idx, hp, x_train, y_train)[1], state)
    print(f"training step: {1e3 * step_time:.3f} ms (MLP 3x100, batch 64, {jax.devices()[0].device_kind})")
    for probe in options.PROBES:
        config = dataclasses.replace(base, probes=(probe,))
        probe_fn = jax.jit(make_program(Signature.of(config, dataset)).probe)
        seconds = median_seconds(probe_fn, state, seed, hp, np.int32(0), x_train, y_train, calls=CALLS // 4)
        print(f"{probe:>12}: {1e3 * seconds:8.3f} ms per probe point, {seconds / step_time:6.1f} training steps")


if __name__ == "__main__":
    main()
