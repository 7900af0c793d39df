"""ResNet-20 training throughput: bnbench against the loops users write with flax and PyTorch, in one run.

The network: the CIFAR ResNet-20 of He et al. (2016) (16/32/64 channels, original units, option-A
shortcuts, BN with momentum 0.99 in the flax convention, global average pooling), SGD with momentum
0.9, batch 128 on 32x32x3 inputs (random images with random labels: throughput does not depend on the
pixels, and no download is needed), the test split (512 images) evaluated once at the end. Printed,
all measured in this process after one untimed call of each (compilation excluded), in images per
second of training, for 1 run and the aggregate of 4 and 8 runs (seeds):

* the references: a ``flax.linen`` ResNet-20 with ``nn.BatchNorm``, ``optax.sgd`` and one jitted train
  step per batch (``mutable=["batch_stats"]``); and PyTorch eager in channels_last, the runs one after
  another (skipped without torch: ``pip install torch``);
* bnbench's vectorized engine with native numerics (its path, convolutions and XLA options:
  ``bnbench.engine.policy``; on CPU with oneDNN's convolutions, ``pip install 'bnbench[onednn]'``, one run
  per block in a ``lax.scan``, else one run at a time, a jitted step per batch, with XLA's convolutions and
  YNNPACK's element-wise fusions) and its one-at-a-time path, the sequential engine;
* the achieved GFLOP/s of each (a step is 3x the forward's FLOPs, counted by XLA's cost analysis)
  against the rate of a 2048x2048 float32 matrix product measured here, the practical peak of JAX on
  this machine;
* the evidence for the engine's choice, over fewer steps (``--probe-steps``): one training step compiled
  alone, inside a ``lax.scan``, and vmapped over 4 runs, with XLA's convolutions, with patches and with
  oneDNN's (where it can be had), each with the engine's XLA options for it
  (``bnbench.engine.policy.compiler_options``); and the step alone with XLA's defaults.

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
from bench_conv_policy import random_data

from bnbench import engine
from bnbench.experiment.fields import RunConfig
from bnbench.data.registry import Dataset
from bnbench.kernels import onednn
from bnbench.training.signature import HParams, Signature
from bnbench.training.program import make_program

BATCH, LR, SGD_MOMENTUM, WIDTHS, DEPTH = 128, 0.1, 0.9, (16, 32, 64), 20
NUM_TRAIN, NUM_TEST = 1280, 512


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


def torch_reference(steps: int, dataset: Dataset, seed: int) -> float | None:
    """Seconds for one run of ``steps`` steps and one evaluation in PyTorch eager, channels_last; None
    without torch."""
    try:
        import torch
    except ImportError:
        return None
    from torch import nn as tnn

    class Unit(tnn.Module):
        def __init__(self, channels_in, width, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(channels_in, width, 3, stride, 1, bias=False)
            self.conv2 = tnn.Conv2d(width, width, 3, 1, 1, bias=False)
            self.bn1, self.bn2 = tnn.BatchNorm2d(width, momentum=0.01), tnn.BatchNorm2d(width, momentum=0.01)
            self.stride, self.pad = stride, width - channels_in

        def forward(self, x):
            h = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            shortcut = x[:, :, :: self.stride, :: self.stride]
            if self.pad:
                shortcut = tnn.functional.pad(shortcut, (0, 0, 0, 0, 0, self.pad))
            return torch.relu(shortcut + h)

    units, channels = [], WIDTHS[0]
    for stage, width in enumerate(WIDTHS):
        for i in range((DEPTH - 2) // 6):
            units.append(Unit(channels, width, 2 if stage > 0 and i == 0 else 1))
            channels = width
    torch.manual_seed(seed)
    model = tnn.Sequential(tnn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False), tnn.BatchNorm2d(WIDTHS[0], momentum=0.01),
                           tnn.ReLU(), *units, tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(WIDTHS[-1], 10))
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=SGD_MOMENTUM)

    def images(a):
        return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)

    x_train, y_train = images(dataset.x_train), torch.from_numpy(dataset.y_train).long()
    start, rng = time.perf_counter(), np.random.default_rng(seed)
    model.train()
    per_epoch = NUM_TRAIN // BATCH
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.from_numpy(rng.permutation(NUM_TRAIN))
        idx = order[(step % per_epoch) * BATCH:(step % per_epoch + 1) * BATCH]
        optimizer.zero_grad()
        tnn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        model(images(dataset.x_test)).argmax(-1)
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


def step_flops(dataset: Dataset) -> float:
    """FLOPs of one training step: 3x the forward pass's (XLA's cost analysis of bnbench's ResNet-20)."""
    sig = Signature.of(configs(1, [0])[0], dataset)
    model = sig.make_model()
    params, state = model.init(jax.random.PRNGKey(0))
    x = jnp.zeros((BATCH, *sig.input_shape), jnp.float32)
    forward = jax.jit(lambda p, s, x: model.apply(p, s, x, train=True)[0]).lower(params, state, x).compile()
    analysis = forward.cost_analysis()
    return 3 * float((analysis[0] if isinstance(analysis, list) else analysis)["flops"])


def matmul_rate() -> float:
    """FLOP/s of a 2048x2048 float32 matrix product in JAX: the practical peak the step rates are set
    against."""
    a = jnp.asarray(np.random.default_rng(0).normal(size=(2048, 2048)), jnp.float32)
    product = jax.jit(lambda a: a @ a)
    jax.block_until_ready(product(a))
    best = min(timed(lambda: jax.block_until_ready(product(a))) for _ in range(3))
    return 2 * 2048 ** 3 / best


def step_variants(dataset: Dataset, steps: int) -> dict[str, float]:
    """Seconds per training step of one ResNet-20 run, with XLA's convolutions, with patches and with
    oneDNN's, each compiled with the engine's XLA options for it (``engine.compiler_options``): its step
    jitted alone, the same step inside a ``lax.scan``, and 4 runs' steps vmapped (per step of all 4); and
    the step alone with XLA's default options, which the engine's replace."""
    config = configs(steps, [0])[0]
    hp, sig = HParams.of(config), Signature.of(config, dataset)
    x_train, y_train = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    hps = HParams(*(np.stack([v] * 4) for v in hp))
    out = {}
    for conv in ("xla", "patches") + (("onednn",) if onednn.problem() is None else ()):
        options = engine.compiler_options(sig, jax.default_backend(), "native", conv)
        program = make_program(sig, conv)
        state = jax.jit(program.init)(np.uint32(0), hp)
        idx = program.batch_indices(0, 0, steps)
        states = jax.jit(jax.vmap(program.init))(np.arange(4, dtype=np.uint32), hps)
        step_args = (state, idx[0], hp, x_train, y_train)
        variants = {  # name: (function, arguments, steps per call, XLA options)
            "one step jitted alone": (program.step, step_args, 1, options),
            f"one step inside a lax.scan of {steps}": (
                lambda st, p=program: jax.lax.scan(lambda c, i: p.step(c, i, hp, x_train, y_train), st, idx), (state,),
                steps, options),
            "4 runs' steps vmapped": (jax.vmap(program.step, in_axes=(0, None, 0, None, None)),
                                      (states, idx[0], hps, x_train, y_train), 1, options),
        }
        if conv == "xla":
            variants["one step jitted alone, XLA's default options"] = (program.step, step_args, 1, {})
        for name, (fn, args, per, opts) in variants.items():
            compiled = jax.jit(fn).lower(*args).compile(compiler_options=opts or None)
            out[f"{conv}: {name}"] = timed(lambda: jax.block_until_ready(compiled(*args))) / per
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--probe-steps", type=int, default=2, help="steps of the per-step measurements")
    args = parser.parse_args()
    dataset, devices = random_data((32, 32, 3), NUM_TRAIN, NUM_TEST), tuple(jax.devices())
    print(f"ResNet-20, batch {BATCH}, 32x32x3, {args.steps} steps per run; backend {jax.default_backend()}, "
          f"{len(devices)} devices ({devices[0].device_kind}), {os.cpu_count()} cores")
    sig, platform = Signature.of(configs(1, [0])[0], dataset), devices[0].platform
    path = engine.choose_path(sig, "vectorized", platform, "native")
    conv = engine.conv_form(sig, platform, path, "native")
    print(f"vectorized engine's path: {path}, convolutions: {onednn.describe() if conv == 'onednn' else conv} "
          f"({onednn.problem() or 'oneDNN loaded'}), XLA options: "
          f"{engine.compiler_options(sig, platform, 'native', conv) or 'none beyond the defaults'}")
    peak, flops = matmul_rate(), step_flops(dataset)
    print(f"{'JAX 2048x2048 float32 matmul (the peak here)':>62}: {peak / 1e9:8.1f} GFLOP/s; a step: {flops / 1e9:.1f} GFLOP")

    def train(seeds, steps, engine_name):
        runs = configs(steps, seeds)
        assignment = engine.assign_groups([engine.Group(Signature.of(runs[0], dataset), dataset, runs)], engine=engine_name,
                                          numerics="native")
        return list(engine.train_blocks(assignment))

    results = {}

    def measure(name, num_runs, steps, fn):
        results[name] = num_runs * steps * BATCH / timed(fn)
        achieved = results[name] / BATCH * flops
        print(f"{name:>62}: {results[name]:8.1f} images/s, {achieved / 1e9:6.1f} GFLOP/s ({100 * achieved / peak:.0f}% of "
              "the matmul)", flush=True)

    measure("flax.linen + optax loop, jitted step per batch (1 run)", 1, args.steps,
            lambda: flax_reference(args.steps, dataset, 0))
    counts = {"1 run": 1, "4 runs": 4, "8 runs": 8}
    if torch_reference(1, dataset, 0) is None:
        print("PyTorch: not installed, skipped (pip install torch)")
    else:
        for name, n in counts.items():
            measure(f"PyTorch eager, channels_last, one after another ({name})", n, args.steps,
                    lambda n=n: [torch_reference(args.steps, dataset, seed) for seed in range(n)])
    for name, n in counts.items():
        for engine_name in ("vectorized", "sequential"):
            measure(f"bnbench {engine_name} engine ({name})", n, args.steps,
                    lambda n=n, e=engine_name: train(list(range(n)), args.steps, e))
    for name, seconds in step_variants(dataset, args.probe_steps).items():
        print(f"{name:>62}: {seconds:8.3f} s per step")
    print_ratios(results)


def print_ratios(results: dict[str, float]) -> None:
    vectorized, sequential = "bnbench vectorized engine ({})", "bnbench sequential engine ({})"
    flax = results["flax.linen + optax loop, jitted step per batch (1 run)"]
    print(f"ratio vectorized engine (1 run) / flax loop: {results[vectorized.format('1 run')] / flax:.2f}x")
    torch_one = "PyTorch eager, channels_last, one after another (1 run)"
    if torch_one in results:
        print(f"ratio vectorized / PyTorch channels_last (1 run): {results[vectorized.format('1 run')] / results[torch_one]:.2f}x "
              "(target: >= 0.8x)")
    for n in ("4 runs", "8 runs"):
        print(f"ratio vectorized / one at a time ({n}): {results[vectorized.format(n)] / results[sequential.format(n)]:.2f}x "
              "(target: >= 1.5x)")
        torch_name = f"PyTorch eager, channels_last, one after another ({n})"
        if torch_name in results:
            print(f"ratio vectorized / PyTorch channels_last ({n}): {results[vectorized.format(n)] / results[torch_name]:.2f}x "
                  "(target for 4 runs: >= 0.8x, goal 1.0x)")


if __name__ == "__main__":
    main()
