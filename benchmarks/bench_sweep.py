"""bnbench against the training loop users write by hand, on the same 24-run grid, in one run.

The grid: MNIST-1D, MLP 3x100 with BN before ReLU, batch 32, SGD (lr 0.05, momentum 0.9), 2000 steps,
evaluation every 200, 4 epsilons x 3 BN momenta x 2 seeds. Printed, all measured in this run:

* the whole ``bnbench sweep`` process, cold (first ever: empty compilation cache, MNIST-1D not yet
  generated) and warm (a second identical sweep, ``--no-resume``);
* the vectorized and sequential engines in this process (each compiling once, as in a sweep);
* the reference: a ``flax.linen`` MLP with ``nn.BatchNorm``, ``optax.sgd`` with momentum, and a jitted
  train step called once per batch with ``mutable=["batch_stats"]``, the test split evaluated every 200
  steps. BN's epsilon and momentum are attributes of the flax module, so each of the 12 (epsilon,
  momentum) pairs compiles its own step, as written the usual way;
* the vectorized engine's achieved GFLOP/s (dense-layer FLOPs of training and evaluation over the time of
  a second, compiled call) next to the rate of the same batched matrix products in a ``lax.scan``, in
  blocks side by side as the engine trains them.

Usage: ``make bench-sweep`` or ``python benchmarks/bench_sweep.py [--steps N]`` (needs flax:
``pip install 'bnbench[peers]'``).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import threading
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnbench import data, engine, options
from bnbench.experiment.fields import RunConfig

EPSILONS = (1e-5, 1e-4, 1e-3, 1e-2)
MOMENTA = (0.9, 0.99, 0.999)
SEEDS = (0, 1)
WIDTHS = (100, 100, 100)
BATCH, LR, SGD_MOMENTUM = 32, 0.05, 0.9


def grid(steps: int) -> list[RunConfig]:
    return [
        RunConfig(dataset="mnist1d", num_samples=5000, widths=WIDTHS, batch_size=BATCH, optimizer="sgd", lr=LR,
                  optimizer_momentum=SGD_MOMENTUM, steps=steps, eval_every=steps // 10, epsilon=eps,
                  momentum=momentum, seed=seed)
        for eps in EPSILONS
        for momentum in MOMENTA
        for seed in SEEDS
    ]


SPEC = """name = "bench"
dataset = "mnist1d"
num_samples = 5000
widths = [100, 100, 100]
batch_size = 32
optimizer = "sgd"
lr = 0.05
optimizer_momentum = 0.9
steps = {steps}
eval_every = {eval_every}
seeds = 2
[grid]
epsilon = [1e-5, 1e-4, 1e-3, 1e-2]
momentum = [0.9, 0.99, 0.999]
"""


def whole_process(steps: int) -> tuple[float, float]:
    """Seconds of a cold ``bnbench sweep`` process on the grid (first ever: an empty user cache folder,
    so no compiled program and no generated data set) and of a warm one (the same command again)."""
    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder) / "bench.toml"
        spec.write_text(SPEC.format(steps=steps, eval_every=steps // 10))
        command = [sys.executable, "-m", "bnbench", "sweep", str(spec), "--out", str(Path(folder) / "out"),
                   "--no-plots", "--no-resume"]
        env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", options.COMPILE_CACHE_ENV)}
        env["XDG_CACHE_HOME"] = str(Path(folder) / "cache")
        times = []
        for _ in range(2):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=env)
            times.append(time.perf_counter() - start)
    return times[0], times[1]


class FlaxMLP(nn.Module):
    """The MLP as users write it in flax: Dense -> BatchNorm -> ReLU per hidden layer, then a head."""

    epsilon: float
    momentum: float

    @nn.compact
    def __call__(self, x, train: bool):
        for width in WIDTHS:
            x = nn.Dense(width)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=self.epsilon)(x)
            x = nn.relu(x)
        return nn.Dense(10)(x)


def flax_reference(steps: int, dataset) -> tuple[float, list[float]]:
    """Seconds for the grid with the hand-written flax loop, and each run's final test accuracy."""
    x_train, y_train = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    x_test, y_test = jnp.asarray(dataset.x_test), jnp.asarray(dataset.y_test)
    tx = optax.sgd(LR, SGD_MOMENTUM)
    accuracies = []
    start = time.perf_counter()
    for eps in EPSILONS:
        for momentum in MOMENTA:
            model = FlaxMLP(eps, momentum)

            @jax.jit
            def train_step(params, batch_stats, opt_state, x, y, model=model):
                def loss_fn(p):
                    logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                                  mutable=["batch_stats"])
                    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

                (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
                changes, opt_state = tx.update(grads, opt_state, params)
                return optax.apply_updates(params, changes), updates["batch_stats"], opt_state, loss

            @jax.jit
            def evaluate(params, batch_stats, model=model):
                logits = model.apply({"params": params, "batch_stats": batch_stats}, x_test, train=False)
                return jnp.mean(jnp.argmax(logits, -1) == y_test)

            for seed in SEEDS:
                variables = model.init(jax.random.PRNGKey(seed), x_train[:BATCH], train=False)
                params, batch_stats = variables["params"], variables["batch_stats"]
                opt_state = tx.init(params)
                rng = np.random.default_rng(seed)
                per_epoch = len(y_train) // BATCH
                for step in range(steps):
                    if step % per_epoch == 0:
                        order = rng.permutation(len(y_train))
                    idx = order[(step % per_epoch) * BATCH:(step % per_epoch + 1) * BATCH]
                    params, batch_stats, opt_state, _ = train_step(params, batch_stats, opt_state, x_train[idx], y_train[idx])
                    if (step + 1) % (steps // 10) == 0:
                        accuracy = float(evaluate(params, batch_stats))
                accuracies.append(accuracy)
    return time.perf_counter() - start, accuracies


def layer_sizes(input_features: int) -> list[tuple[int, int]]:
    sizes = (input_features, *WIDTHS, 10)
    return list(zip(sizes[:-1], sizes[1:]))


def model_flops(steps: int, num_runs: int, input_features: int, num_test: int) -> float:
    """Dense-layer FLOPs of the grid: 3 products per layer per training step (forward, input and weight
    gradients), one per layer per test example at each of the 10 evaluations."""
    per_example = sum(2 * a * b for a, b in layer_sizes(input_features))
    return num_runs * (steps * BATCH * 3 * per_example + 10 * num_test * per_example)


def matmul_rate(steps: int, num_runs: int, input_features: int, slots) -> float:
    """GFLOP/s of the training step's batched matrix products alone (per run, per step: each layer's
    forward, input-gradient and weight-gradient product), in a lax.scan, vmapped over blocks of runs
    that the engine's ``slots`` train side by side, as the engine trains them."""
    shapes = layer_sizes(input_features)

    def one_run(inputs, weights):
        def step(carry, _):
            # Each product feeds the next step's carry, so XLA can neither drop nor hoist it.
            inputs, weights = carry
            outputs = [h @ w for h, w in zip(inputs, weights)]  # forward: (BATCH, a) @ (a, b)
            inputs = [h + 1e-6 * (out @ w.T) for h, w, out in zip(inputs, weights, outputs)]  # input gradient
            weights = [w + 1e-6 * (h.T @ out) for h, w, out in zip(inputs, weights, outputs)]  # weight gradient
            return (inputs, weights), None

        return jax.lax.scan(step, (inputs, weights), None, length=steps)[0]

    fn = jax.jit(jax.vmap(one_run))
    per_block = num_runs // len(slots)
    keys = jax.random.split(jax.random.PRNGKey(0), 2 * len(shapes))
    blocks = [([jax.device_put(jax.random.normal(k, (per_block, BATCH, a)), slot) for k, (a, _) in zip(keys, shapes)],
               [jax.device_put(jax.random.normal(k, (per_block, a, b)) * 0.01, slot)
                for k, (a, b) in zip(keys[len(shapes):], shapes)]) for slot in slots]

    def side_by_side():
        threads = [threading.Thread(target=lambda b=b: jax.block_until_ready(fn(*b))) for b in blocks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    side_by_side()
    start = time.perf_counter()
    side_by_side()
    seconds = time.perf_counter() - start
    flops = per_block * len(slots) * steps * 3 * sum(2 * BATCH * a * b for a, b in shapes)
    return flops / seconds / 1e9


def report(name: str, num_runs: int, seconds: float) -> None:
    print(f"{name:>44}: {seconds:7.1f} s, {num_runs / (seconds / 60):7.1f} runs/min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    runs = grid(args.steps)
    # The sweep processes first, before this one takes the device: on a GPU, JAX's client reserves 75%
    # of its memory, and the sweep processes would not find theirs.
    cold, warm = whole_process(args.steps)
    dataset = data.load("mnist1d", 5000)
    slots = engine.slots()
    print(f"{len(runs)} runs x {args.steps} steps; backend {jax.default_backend()}, {len(slots)} blocks at a time "
          f"({slots[0].device_kind})")
    report("bnbench sweep process, cold (first ever)", len(runs), cold)
    report("bnbench sweep process, warm (second)", len(runs), warm)
    seconds, results = {}, {}
    for name in ("vectorized", "sequential"):
        start = time.perf_counter()
        results[name] = {c.run_id: r for c, r in engine.run_all(runs, engine=name)}
        seconds[name] = time.perf_counter() - start
        report(f"{name} engine in-process (compiles once)", len(runs), seconds[name])
    start = time.perf_counter()
    list(engine.run_all(runs, engine="vectorized"))
    compiled = time.perf_counter() - start
    flax_seconds, flax_accuracies = flax_reference(args.steps, dataset)
    report("flax.linen + optax loop, jitted step per batch", len(runs), flax_seconds)
    ours = [results["vectorized"][c.run_id].test_acc for c in runs]
    print(f"mean final test accuracy: bnbench {np.mean(ours):.4f}, flax loop {np.mean(flax_accuracies):.4f} "
          "(different initializations and data order; a sanity check, not a comparison)")
    print(f"ratio flax loop / bnbench sweep process: warm {flax_seconds / warm:.1f}x, cold {flax_seconds / cold:.1f}x"
          " (target: warm >= 10x)")
    print(f"ratio cold / warm bnbench sweep process: {cold / warm:.2f}x (target: >= 2x)")
    print(f"ratio vectorized / sequential engine: {seconds['sequential'] / seconds['vectorized']:.1f}x")
    input_features = int(np.prod(dataset.input_shape))
    achieved = model_flops(args.steps, len(runs), input_features, len(dataset.y_test)) / compiled / 1e9
    reference = matmul_rate(args.steps, len(runs), input_features, slots)
    print(f"vectorized engine, compiled: {compiled:.2f} s, {achieved:.1f} GFLOP/s; the same batched products in a "
          f"scan: {reference:.1f} GFLOP/s; ratio {achieved / reference:.0%} (target: >= 50%)")


if __name__ == "__main__":
    main()
