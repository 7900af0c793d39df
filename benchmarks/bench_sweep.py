"""Runs per minute of the vectorized and sequential engines on the same 24-run grid, in one process.

The grid: MNIST-1D, MLP 3x100, batch 32, 2000 steps, 4 epsilons x 3 momenta x 2 seeds (one compiled
signature). Each engine starts cold (its own compilation is included in its time), as in a real
sweep. ``--recompiling`` adds the loop many users write by hand, which recompiles for every run.
Usage: ``make bench-sweep`` or ``python benchmarks/bench_sweep.py [--steps N] [--recompiling]``.
"""

import argparse
import os
import time

from bnbench.engine import cpu_device_flag

flag = cpu_device_flag(os.environ)  # as the bnbench command does: one JAX device per CPU core
if flag:
    os.environ["XLA_FLAGS"] = flag

import jax  # noqa: E402

from bnbench import data, engine  # noqa: E402
from bnbench.spec import RunConfig  # noqa: E402


def grid(steps: int) -> list[RunConfig]:
    return [
        RunConfig(
            dataset="mnist1d",
            num_samples=5000,
            widths=(100, 100, 100),
            batch_size=32,
            optimizer="sgd",
            lr=0.05,
            steps=steps,
            eval_every=steps // 10,
            epsilon=eps,
            momentum=momentum,
            seed=seed,
        )
        for eps in (1e-5, 1e-4, 1e-3, 1e-2)
        for momentum in (0.9, 0.99, 0.999)
        for seed in (0, 1)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument(
        "--recompiling", action="store_true", help="also time a loop that recompiles for every run (slow)"
    )
    args = parser.parse_args()
    runs = grid(args.steps)
    data.load("mnist1d", 5000)
    print(f"{len(runs)} runs x {args.steps} steps; backend {jax.default_backend()}, {jax.device_count()} devices")
    rates, results = {}, {}
    for name in ("vectorized", "sequential"):
        start = time.perf_counter()
        results[name] = {c.run_id: r for c, r in engine.run_all(runs, engine=name)}
        rates[name] = report(name, len(runs), time.perf_counter() - start)
    diff = max(abs(results["vectorized"][k].test_acc - r.test_acc) for k, r in results["sequential"].items())
    print(f"max |test_acc difference| between engines: {diff:.4f}")
    print(f"ratio vectorized / sequential: {rates['vectorized'] / rates['sequential']:.1f}x")
    if args.recompiling:
        # What a typical hand-written loop does: hyperparameters baked into the jitted step, so every
        # run compiles afresh. Emulated with the sequential engine and a cleared compilation cache.
        start = time.perf_counter()
        for config in runs:
            jax.clear_caches()
            list(engine.run_all([config], engine="sequential"))
        rate = report("sequential, recompiling every run", len(runs), time.perf_counter() - start)
        print(f"ratio vectorized / recompiling loop: {rates['vectorized'] / rate:.1f}x")


def report(name: str, num_runs: int, seconds: float) -> float:
    rate = num_runs / (seconds / 60)
    print(f"{name:>34}: {seconds:7.1f} s, {rate:7.1f} runs/min")
    return rate


if __name__ == "__main__":
    main()
