"""ResNet-20 training throughput: bnbench against the loop users write with flax, in one run.

The network: the CIFAR ResNet-20 of He et al. (2016) (16/32/64 channels, original units, option-A
shortcuts, BN with momentum 0.99, global average pooling), SGD with momentum 0.9, batch 128 on 32x32x3
inputs (random images with random labels: throughput does not depend on the pixels, and no download is
needed), the test split (512 images) evaluated once at the end. Printed, all measured in this process
after one untimed call of each (compilation excluded), in images per second of training:

* the reference: a ``flax.linen`` ResNet-20 of the same architecture with ``nn.BatchNorm``, ``optax.sgd``
  and one jitted train step per batch (``mutable=["batch_stats"]``);
* bnbench, one run and 4 runs (4 seeds), with the vectorized engine (the default; it chooses its path
  itself, see ``bnbench.engine.vmaps``) and the sequential engine;
* the evidence for that choice, over fewer steps (``--probe-steps``): one training step compiled alone,
  inside a ``lax.scan`` (what the vmapped path runs between evaluations), and vmapped over 4 runs.

Usage: ``make bench-resnet`` or ``python benchmarks/bench_resnet.py [--steps N]`` (needs flax:
``pip install 'bnbench[peers]'``).
"""

import argparse
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnbench import engine
from bnbench.config import RunConfig
from bnbench.data import Dataset
from bnbench.signature import HParams, Signature
from bnbench.train import make_program

BATCH, LR, SGD_MOMENTUM, WIDTHS, DEPTH = 128, 0.1, 0.9, (16, 32, 64), 20
NUM_TRAIN, NUM_TEST = 1280, 512


def synthetic_images() -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_TRAIN + NUM_TEST, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, NUM_TRAIN + NUM_TEST).astype(np.int32)
    return Dataset("images", x[:NUM_TRAIN], y[:NUM_TRAIN], x[NUM_TRAIN:], y[NUM_TRAIN:], 10)


class FlaxUnit(nn.Module):
    width: int
    stride: int

    @nn.compact
    def __call__(self, x, train: bool):
        def norm(h):
            return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-5)(h)

        pad = ((1, 1), (1, 1))
        h = nn.relu(norm(nn.Conv(self.width, (3, 3), (self.stride,) * 2, pad, use_bias=False)(x)))
        h = norm(nn.Conv(self.width, (3, 3), (1, 1), pad, use_bias=False)(h))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.width:
            shortcut = x[:, :: self.stride, :: self.stride, :]
            shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (0, self.width - x.shape[-1])))
        return nn.relu(shortcut + h)


class FlaxResNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(WIDTHS[0], (3, 3), padding=((1, 1), (1, 1)), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-5)(x))
        for stage, width in enumerate(WIDTHS):
            for i in range((DEPTH - 2) // 6):
                x = FlaxUnit(width, 2 if stage > 0 and i == 0 else 1)(x, train)
        return nn.Dense(10)(x.mean(axis=(1, 2)))


def flax_reference(steps: int, dataset: Dataset, seed: int) -> float:
    """Seconds for one run of ``steps`` steps and one evaluation with the hand-written flax loop."""
    model, tx = FlaxResNet(), optax.sgd(LR, SGD_MOMENTUM)
    x_train, y_train = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    x_test, y_test = jnp.asarray(dataset.x_test), jnp.asarray(dataset.y_test)

    @jax.jit
    def train_step(params, batch_stats, opt_state, x, y):
        def loss_fn(p):
            logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        changes, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, changes), updates["batch_stats"], opt_state, loss

    @jax.jit
    def evaluate(params, batch_stats):
        logits = model.apply({"params": params, "batch_stats": batch_stats}, x_test, train=False)
        return jnp.mean(jnp.argmax(logits, -1) == y_test)

    start = time.perf_counter()
    variables = model.init(jax.random.PRNGKey(seed), x_train[:BATCH], train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    rng = np.random.default_rng(seed)
    per_epoch = NUM_TRAIN // BATCH
    for step in range(steps):
        if step % per_epoch == 0:
            order = rng.permutation(NUM_TRAIN)
        idx = order[(step % per_epoch) * BATCH:(step % per_epoch + 1) * BATCH]
        params, batch_stats, opt_state, loss = train_step(params, batch_stats, opt_state, x_train[idx], y_train[idx])
    float(evaluate(params, batch_stats))
    return time.perf_counter() - start


def configs(steps: int, seeds) -> list[RunConfig]:
    return [
        RunConfig(model="resnet", depth=DEPTH, widths=WIDTHS, batch_size=BATCH, optimizer="sgd", lr=LR,
                  optimizer_momentum=SGD_MOMENTUM, steps=steps, eval_every=steps, seed=seed)
        for seed in seeds
    ]


def timed(fn) -> float:
    """Seconds of the second call of ``fn`` (the first compiles)."""
    fn()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_variants(dataset: Dataset, steps: int) -> dict[str, float]:
    """Seconds per training step of one ResNet-20 run: its step jitted alone, the same step inside a
    ``lax.scan``, and 4 runs' steps vmapped (per step of all 4)."""
    config = configs(steps, [0])[0]
    program = make_program(Signature.of(config, dataset))
    hp = HParams.of(config)
    x_train, y_train = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    state = jax.jit(program.init)(np.uint32(0), hp)
    idx = program.batch_indices(0, 0, steps)
    step = jax.jit(program.step)
    scanned = jax.jit(lambda st: jax.lax.scan(lambda c, i: program.step(c, i, hp, x_train, y_train), st, idx))
    hps = HParams(*(np.stack([v] * 4) for v in hp))
    states = jax.jit(jax.vmap(program.init))(np.arange(4, dtype=np.uint32), hps)
    vmapped = jax.jit(jax.vmap(program.step, in_axes=(0, None, 0, None, None)))
    return {
        "one step jitted alone": timed(lambda: jax.block_until_ready(step(state, idx[0], hp, x_train, y_train))),
        f"one step inside a lax.scan of {steps}": timed(lambda: jax.block_until_ready(scanned(state))) / steps,
        "4 runs' steps vmapped": timed(lambda: jax.block_until_ready(vmapped(states, idx[0], hps, x_train, y_train))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--probe-steps", type=int, default=2, help="steps of the per-step measurements")
    args = parser.parse_args()
    dataset, devices = synthetic_images(), tuple(jax.devices())
    print(f"ResNet-20, batch {BATCH}, 32x32x3, {args.steps} steps per run; backend {jax.default_backend()}, "
          f"{len(devices)} devices ({devices[0].device_kind}), {os.cpu_count()} cores")
    print("vectorized engine's path:", engine.execution("resnet", "vectorized", devices[0].platform))

    def train(seeds, steps, engine_name):
        runs = configs(steps, seeds)
        plan = engine.prepare_groups([engine.Group(Signature.of(runs[0], dataset), dataset, runs)], engine=engine_name)
        return list(engine.train(plan))

    results = {}

    def measure(name, num_runs, steps, fn):
        results[name] = num_runs * steps * BATCH / timed(fn)
        print(f"{name:>62}: {results[name]:8.1f} images/s", flush=True)

    seeds = [0, 1, 2, 3]
    measure("flax.linen + optax loop, jitted step per batch (1 run)", 1, args.steps,
            lambda: flax_reference(args.steps, dataset, 0))
    for name, runs in (("1 run", [0]), ("4 runs", seeds)):
        measure(f"bnbench vectorized engine ({name})", len(runs), args.steps,
                lambda runs=runs: train(runs, args.steps, "vectorized"))
        measure(f"bnbench sequential engine ({name})", len(runs), args.steps,
                lambda runs=runs: train(runs, args.steps, "sequential"))
    for name, seconds in step_variants(dataset, args.probe_steps).items():
        print(f"{name:>62}: {seconds:8.3f} s per step")
    reference = results["flax.linen + optax loop, jitted step per batch (1 run)"]
    print(f"ratio bnbench vectorized engine (1 run) / flax loop: "
          f"{results['bnbench vectorized engine (1 run)'] / reference:.2f}x (target: >= 1.0x)")
    print(f"ratio vectorized engine 4-run aggregate / sequential engine: "
          f"{results['bnbench vectorized engine (4 runs)'] / results['bnbench sequential engine (4 runs)']:.2f}x "
          "(target: >= 1.0x)")


if __name__ == "__main__":
    main()
