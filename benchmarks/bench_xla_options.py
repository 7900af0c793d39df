"""The evidence for ``bnbench.engine.compiler_options``: milliseconds per training step of each conv net
with XLA's default options and with YNNPACK's element-wise fusions (``engine.YNN_ELEMENTWISE``), and
which of the two the engine compiles it with, in one run.

Each model is bnbench's own, trained the way the engine's stepwise path trains it (one jitted step per
batch, XLA's convolutions), on random inputs of the shape of the data set named (throughput does not
depend on the values, and nothing is downloaded): 1-D models on MNIST-1D's 40-sample signals, 2-D
models on 32x32x3 images. The printed time is the median of ``--repeats`` calls after one untimed call.

Usage: ``make bench-xla-options`` or ``python benchmarks/bench_xla_options.py [--repeats N]``.
"""

import argparse

import jax
import numpy as np
from bench_probes import median_seconds

from bnbench import engine
from bnbench.config import RunConfig
from bnbench.data import Dataset
from bnbench.signature import HParams, Signature
from bnbench.train import device_data, make_program

SHAPES = {"MNIST-1D signals": (40,), "32x32x3 images": (32, 32, 3)}
CASES = [  # (name, input, RunConfig fields)
    ("ResNet-20, batch 128", "32x32x3 images", dict(model="resnet", depth=20, widths=(16, 32, 64), batch_size=128)),
    ("ResNet-56, batch 128", "32x32x3 images", dict(model="resnet", depth=56, widths=(16, 32, 64), batch_size=128)),
    ("ResNet-56, batch 128", "MNIST-1D signals", dict(model="resnet", depth=56, widths=(16, 32, 64), batch_size=128)),
    ("ResNet-20, batch 32", "MNIST-1D signals", dict(model="resnet", depth=20, widths=(16, 32, 64), batch_size=32)),
    ("CNN 3x32, batch 32", "32x32x3 images", dict(model="cnn", widths=(32, 32, 32), batch_size=32)),
    ("CNN 3x32, batch 32", "MNIST-1D signals", dict(model="cnn", widths=(32, 32, 32), batch_size=32)),
    ("VGG-11, batch 128", "32x32x3 images", dict(model="vgg", depth=11, widths=(64, 128, 256, 512, 512), batch_size=128)),
]


def random_data(input_shape: tuple[int, ...], num_train: int = 512, num_test: int = 128) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_train + num_test, *input_shape)).astype(np.float32)
    y = rng.integers(0, 10, num_train + num_test).astype(np.int32)
    return Dataset("random", x[:num_train], y[:num_train], x[num_train:], y[num_train:], 10)


def step_ms(config: RunConfig, dataset: Dataset, options: dict[str, str], repeats: int) -> float:
    """Median milliseconds of one training step of ``config``, compiled with ``options``."""
    program, hp = make_program(Signature.of(config, dataset)), HParams.of(config)
    x_train, y_train, _, _ = device_data(dataset)
    state = jax.jit(program.init)(np.uint32(0), hp)
    args = (state, program.batch_indices(0, 0, 1)[0], hp, x_train, y_train)
    step = jax.jit(program.step).lower(*args).compile(compiler_options=options or None)
    return 1e3 * median_seconds(step, *args, calls=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    platform = jax.default_backend()
    print(f"ms per training step, backend {platform}; YNNPACK element-wise: {engine.YNN_ELEMENTWISE}")
    for name, data_name, fields in CASES:
        dataset = random_data(SHAPES[data_name])
        config = RunConfig(steps=1, eval_every=1, **fields)
        default, ynn = (step_ms(config, dataset, options, args.repeats) for options in ({}, engine.YNN_ELEMENTWISE))
        chosen = "YNNPACK element-wise" if engine.compiler_options(Signature.of(config, dataset), platform) else "defaults"
        print(f"{name:>22} on {data_name:<17}: defaults {default:8.1f}, YNNPACK element-wise {ynn:8.1f} "
              f"(ratio defaults/YNN {default / ynn:.2f}x); the engine compiles it with: {chosen}", flush=True)


if __name__ == "__main__":
    main()
