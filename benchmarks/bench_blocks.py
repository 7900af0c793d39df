"""How the vectorized engine's block size (runs per device) trades padding against vectorization.

A block holds a fixed number of runs of one program on one device (``bnbench.engine.blocks``); a group whose
run count is not a multiple of it pads its last block with copies, and the devices train blocks side by
side. Two grids, warm (compiled once before timing), for every block size:

* ``one group``: ``make bench-sweep``'s 24 runs (MNIST-1D, MLP 3x100, batch 32, 2000 steps; 4 epsilons
  x 3 BN momenta x 2 seeds), one compiled program;
* ``2-run groups``: the quickstart's shape, 3 placements x 2 batch sizes (six programs) x 2 seeds.

Printed: seconds per grid and each block size's time relative to the default block size of this
platform (``bnbench.engine.policy.MAX_RUNS_PER_DEVICE``).

Usage: ``make bench-blocks`` or ``python benchmarks/bench_blocks.py [--steps N] [--sizes 1,2,4,8]``.
"""

import argparse
import os
import time

import jax

from bnbench import engine
from bnbench.experiment.fields import RunConfig

COMMON = dict(dataset="mnist1d", num_samples=5000, widths=(100, 100, 100), optimizer="sgd", lr=0.05,
              optimizer_momentum=0.9)


def one_group(steps: int) -> list[RunConfig]:
    return [RunConfig(**COMMON, batch_size=32, steps=steps, eval_every=steps // 10, epsilon=eps, momentum=m, seed=s)
            for eps in (1e-5, 1e-4, 1e-3, 1e-2) for m in (0.9, 0.99, 0.999) for s in (0, 1)]


def two_run_groups(steps: int) -> list[RunConfig]:
    return [RunConfig(**COMMON, placement=p, batch_size=b, steps=steps, eval_every=steps // 10, seed=s)
            for p in ("pre", "post", "none") for b in (32, 128) for s in (0, 1)]


def seconds(grid: list[RunConfig], size: int) -> float:
    # Twice before timing: each device compiles a program the first time it trains one of its blocks, and
    # the first pass need not hand every program to every device.
    for _ in range(2):
        list(engine.run_all(grid, runs_per_device=size))
    start = time.perf_counter()
    list(engine.run_all(grid, runs_per_device=size))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--sizes", default="1,2,4,8")
    args = parser.parse_args()
    platform = jax.devices()[0].platform
    default = engine.MAX_RUNS_PER_DEVICE.get(platform, 1)
    sizes = sorted({*map(int, args.sizes.split(",")), default})
    print(f"backend {platform}, {jax.device_count()} devices; default block size {default}; {args.steps} steps")
    for name, grid in (("one group", one_group(args.steps)), ("2-run groups", two_run_groups(args.steps))):
        times = {size: seconds(grid, size) for size in sizes}
        for size, value in times.items():
            print(f"{name:>13} ({len(grid)} runs), {size:2d} runs per device: {value:6.2f} s, "
                  f"{value / times[default]:.2f}x the default's time", flush=True)


if __name__ == "__main__":
    main()
