"""XLA:CPU's convolution kernels against oneDNN's in bnbench (``bnbench.kernels.onednn``, through XLA's
FFI) and PyTorch's (also oneDNN), layer by layer: milliseconds and GFLOP/s of
the forward convolution, the input's gradient and the kernel's gradient for every 3x3 layer shape of
ResNet-20 and VGG-11 on 32x32x3 images at batch 128, channels last, in one run.

JAX compiles each with the XLA options the engine gives its model with XLA's convolutions
(``engine.compiler_options``: YNNPACK's element-wise fusions for the ResNet), oneDNN's row with XLA's
defaults (skipped without ``pip install 'bnbench[onednn]'``); PyTorch (an optional peer, skipped without it) runs eager on
channels_last tensors, the gradients through ``torch.nn.grad``. The printed time is the median of
``--repeats`` calls after one untimed call. Where ``make bench-resnet`` finds bnbench's ResNet step
slower than PyTorch's, and ``make bench-conv-policy`` finds VGG's stepwise step slow, this says which
kernels it is.

Usage: ``make bench-conv-layers`` or ``python benchmarks/bench_conv_layers.py [--repeats N]``.
"""

import argparse

import jax
import numpy as np
from bench_conv_policy import random_data
from bench_probes import median_seconds

from bnbench import engine
from bnbench.experiment.fields import RunConfig
from bnbench.kernels import onednn
from bnbench.training.signature import Signature

BATCH = 128
MODELS = {  # name: (its RunConfig fields, its 3x3 layers as (height and width, input channels, output channels, stride))
    "ResNet-20": (dict(model="resnet", depth=20, widths=(16, 32, 64)),
                  [(32, 3, 16, 1), (32, 16, 16, 1), (32, 16, 32, 2), (16, 32, 32, 1), (16, 32, 64, 2), (8, 64, 64, 1)]),
    "VGG-11": (dict(model="vgg", depth=11, widths=(64, 128, 256, 512, 512)),
               [(32, 3, 64, 1), (16, 64, 128, 1), (8, 128, 256, 1), (8, 256, 256, 1), (4, 256, 512, 1),
                (4, 512, 512, 1), (2, 512, 512, 1)]),
}
PASSES = ("forward", "input gradient", "kernel gradient")


def jax_ms(size: int, c_in: int, c_out: int, stride: int, options: dict[str, str], repeats: int,
           kernel: str = "xla") -> list[float]:
    """Median ms of the forward convolution, input gradient and kernel gradient of one layer in a jitted
    JAX function, the convolution XLA's (``kernel="xla"``) or oneDNN's (``"onednn"``)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, size, size, c_in)).astype(np.float32)
    w = (0.1 * rng.normal(size=(3, 3, c_in, c_out))).astype(np.float32)

    def conv(x, w):
        if kernel == "onednn":
            return onednn.convolve(x, w, (stride, stride), ((1, 1), (1, 1)))
        return jax.lax.conv_general_dilated(x, w, (stride, stride), ((1, 1), (1, 1)),
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    dy = np.asarray(conv(x, w))
    fns = (conv, lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0],
           lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0])
    argss = ((x, w), (x, w, dy), (x, w, dy))
    return [1e3 * median_seconds(jax.jit(f).lower(*a).compile(compiler_options=options or None), *a, calls=repeats)
            for f, a in zip(fns, argss)]


def torch_ms(size: int, c_in: int, c_out: int, stride: int, repeats: int) -> list[float] | None:
    """Median ms of PyTorch's three passes of one layer, channels_last; None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    x = torch.randn(BATCH, c_in, size, size).to(memory_format=torch.channels_last)
    w = 0.1 * torch.randn(c_out, c_in, 3, 3)
    dy = torch.nn.functional.conv2d(x, w, stride=stride, padding=1)
    calls = (lambda: torch.nn.functional.conv2d(x, w, stride=stride, padding=1),
             lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, stride=stride, padding=1),
             lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=stride, padding=1))
    return [1e3 * median_seconds(call, calls=repeats) for call in calls]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"ms (GFLOP/s) per pass, batch {BATCH}, 3x3 kernels, backend {jax.default_backend()}; "
          f"passes: {', '.join(PASSES)}")
    images = random_data((32, 32, 3))
    for name, (fields, layers) in MODELS.items():
        options = engine.compiler_options(Signature.of(RunConfig(**fields), images), jax.default_backend(), "native", "xla")
        print(f"{name}: XLA options {options or 'the defaults'}")
        for size, c_in, c_out, stride in layers:
            gflop = 2 * BATCH * (size // stride) ** 2 * 9 * c_in * c_out / 1e9
            rows = {"XLA": jax_ms(size, c_in, c_out, stride, options, args.repeats),
                    "oneDNN": None if onednn.problem() else jax_ms(size, c_in, c_out, stride, {}, args.repeats, "onednn"),
                    "PyTorch": torch_ms(size, c_in, c_out, stride, args.repeats)}
            cells = [f"{name} " + " / ".join(f"{t:7.1f} ({gflop / t * 1e3:4.0f})" for t in times)
                     for name, times in rows.items() if times is not None]
            print(f"  {size:2d}x{size:<2d} {c_in:3d}->{c_out:3d} stride {stride}: " + "  |  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
