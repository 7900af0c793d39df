"""The evidence for the engine's CPU policy for conv nets (``bnbench.engine.policy``: ``ONE_AT_A_TIME``,
``conv_form`` and ``compiler_options``): milliseconds per training step of each conv net, in one run, on
the engine's two paths, with each kernel for its convolutions and both sets of XLA options, and which
path, kernel and options the engine picks (native numerics).

* stepwise: the step jitted alone, XLA's convolutions, compiled with XLA's default options and with
  YNNPACK's element-wise fusions (``engine.YNN_ELEMENTWISE``); and with oneDNN's convolutions
  (``bnbench.kernels.onednn``) and the engine's options;
* vmapped: the step of a one-run block (as the engine's vmapped path trains conv nets on CPU) inside a
  ``lax.scan`` of ``--scan-steps`` steps, convolutions as patches (``bnbench.models.convolution``), and
  with oneDNN's, compiled with the options the engine would give it; per step.

The oneDNN columns read "-" where its kernels cannot be had (``pip install 'bnbench[onednn]'``).

Each model is bnbench's own, on random inputs of the shape of the data set named (throughput does not
depend on the values, and nothing is downloaded): 1-D models on MNIST-1D's 40-sample signals, 2-D
models on 32x32x3 images. The printed time is the median of ``--repeats`` calls after one untimed call.

Usage: ``make bench-conv-policy`` or ``python benchmarks/bench_conv_policy.py [--repeats N] [--scan-steps K]``.
"""

import argparse

import jax
import numpy as np
from bench_probes import median_seconds

from bnbench import engine
from bnbench.experiment.fields import RunConfig
from bnbench.data.registry import Dataset
from bnbench.kernels import onednn
from bnbench.training.signature import HParams, Signature
from bnbench.training.program import device_data, make_program

SHAPES = {"MNIST-1D signals": (40,), "32x32x3 images": (32, 32, 3)}
CASES = [  # (name, input, RunConfig fields)
    ("ResNet-20, batch 128", "32x32x3 images", dict(model="resnet", depth=20, widths=(16, 32, 64), batch_size=128)),
    ("ResNet-56, batch 128", "32x32x3 images", dict(model="resnet", depth=56, widths=(16, 32, 64), batch_size=128)),
    ("ResNet-56, batch 128", "MNIST-1D signals", dict(model="resnet", depth=56, widths=(16, 32, 64), batch_size=128)),
    ("ResNet-20, batch 32", "MNIST-1D signals", dict(model="resnet", depth=20, widths=(16, 32, 64), batch_size=32)),
    ("CNN 3x32, batch 32", "32x32x3 images", dict(model="cnn", widths=(32, 32, 32), batch_size=32)),
    ("CNN 3x32, batch 32", "MNIST-1D signals", dict(model="cnn", widths=(32, 32, 32), batch_size=32)),
    ("VGG-11, batch 128", "32x32x3 images", dict(model="vgg", depth=11, widths=(64, 128, 256, 512, 512), batch_size=128)),
    ("VGG-11, batch 128", "MNIST-1D signals", dict(model="vgg", depth=11, widths=(64, 128, 256, 512, 512), batch_size=128)),
    ("VGG-11 narrow, batch 32", "MNIST-1D signals", dict(model="vgg", depth=11, widths=(16, 32, 64, 64, 64), batch_size=32)),
]


def random_data(input_shape: tuple[int, ...], num_train: int = 512, num_test: int = 128) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_train + num_test, *input_shape)).astype(np.float32)
    y = rng.integers(0, 10, num_train + num_test).astype(np.int32)
    return Dataset("random", x[:num_train], y[:num_train], x[num_train:], y[num_train:], 10)


def stepwise_ms(sig: Signature, hp: HParams, dataset: Dataset, options: dict[str, str], repeats: int,
                conv: str = "xla") -> float:
    """Median milliseconds of one training step of ``sig`` jitted alone, its convolutions of form ``conv``,
    compiled with ``options``."""
    program = make_program(sig, conv)
    x_train, y_train, _, _ = device_data(dataset)
    state = jax.jit(program.init)(np.uint32(0), hp)
    args = (state, program.batch_indices(0, 0, 1)[0], hp, x_train, y_train)
    step = jax.jit(program.step).lower(*args).compile(compiler_options=options or None)
    return 1e3 * median_seconds(step, *args, calls=repeats)


def vmapped_ms(sig: Signature, hp: HParams, dataset: Dataset, options: dict[str, str], repeats: int, steps: int,
               conv: str = "patches") -> float:
    """Median milliseconds per step of a one-run block of ``sig`` training ``steps`` steps in a
    ``lax.scan``, its convolutions of form ``conv``, compiled with ``options``."""
    program = make_program(sig, conv)
    x_train, y_train, _, _ = device_data(dataset)
    hps = HParams(*(np.stack([v]) for v in hp))
    states = jax.jit(jax.vmap(program.init))(np.zeros(1, np.uint32), hps)
    idx = program.batch_indices(0, 0, steps)
    step = jax.vmap(program.step, in_axes=(0, None, 0, None, None))

    def scan(states):
        return jax.lax.scan(lambda s, i: (step(s, i, hps, x_train, y_train)[0], None), states, idx)[0]

    run = jax.jit(scan).lower(states).compile(compiler_options=options or None)
    return 1e3 * median_seconds(run, states, calls=repeats) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scan-steps", type=int, default=4)
    args = parser.parse_args()
    platform = jax.default_backend()
    problem = onednn.problem()
    print(f"ms per training step, backend {platform}; YNNPACK element-wise: {engine.YNN_ELEMENTWISE}; oneDNN: "
          f"{problem or onednn.describe()}")
    for name, data_name, fields in CASES:
        dataset = random_data(SHAPES[data_name])
        config = RunConfig(steps=1, eval_every=1, **fields)
        sig, hp = Signature.of(config, dataset), HParams.of(config)
        default, ynn = (stepwise_ms(sig, hp, dataset, o, args.repeats) for o in ({}, engine.YNN_ELEMENTWISE))
        vmapped = vmapped_ms(sig, hp, dataset, engine.compiler_options(sig, platform, "native", "patches"),
                             args.repeats, args.scan_steps)
        stepwise_onednn = vmapped_onednn = "       -"
        if problem is None:  # with the options the engine gives oneDNN's programs
            options = engine.compiler_options(sig, platform, "native", "onednn")
            stepwise_onednn = f"{stepwise_ms(sig, hp, dataset, options, args.repeats, 'onednn'):8.1f}"
            vmapped_onednn = f"{vmapped_ms(sig, hp, dataset, options, args.repeats, args.scan_steps, 'onednn'):8.1f}"
        path = engine.choose_path(sig, "vectorized", platform, "native")
        conv = engine.conv_form(sig, platform, path, "native")
        chosen = "YNNPACK element-wise" if engine.compiler_options(sig, platform, "native", conv) else "defaults"
        print(f"{name:>23} on {data_name:<17}: stepwise defaults {default:8.1f}, YNNPACK element-wise {ynn:8.1f}, "
              f"oneDNN {stepwise_onednn}; vmapped patches {vmapped:8.1f}, oneDNN {vmapped_onednn}; the engine's "
              f"path: {path}, convolutions: {conv}, options: {chosen}",
              flush=True)


if __name__ == "__main__":
    main()
