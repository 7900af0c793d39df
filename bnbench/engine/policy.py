"""The platform policy: which models vmap where, the most runs a block holds, the form of a program's
convolutions and the XLA options it compiles with. Every choice rests on a benchmark
(``make bench-blocks``, ``make bench-conv-policy``; docs/performance.md)."""

from __future__ import annotations

import functools

from bnbench.models import convolution
from bnbench.models.cnn import channels_last
from bnbench.models.plugged import convolutional
from bnbench.training import host
from bnbench.training.signature import Signature

# The most runs a vmapped block holds, by platform. On CPU, blocks of 2 train a grid about as fast as
# larger ones and pad small groups (a spec's seeds) least; accelerators are launch-bound at these
# sizes, so padding costs them little. Measured by `make bench-blocks`; not measured on TPU.
MAX_RUNS_PER_DEVICE = {"cpu": 2, "gpu": 16, "tpu": 16}

# Where the vectorized engine does not vmap, by platform: it runs these models stepwise, one run at a
# time with a jitted step per batch (the sequential engine's path), because that measured faster or as
# fast. XLA:CPU runs its convolution many times slower inside the program's lax.scan and under vmap, so
# on CPU the engine rewrites a vmapped conv net's convolutions as patches (bnbench.models.convolution),
# which keep their speed in a scan, and trains one run per block (MAX_CONV_RUNS_PER_DEVICE), blocks side
# by side: a vmapped batch of those products measured slower per run than one. That made the CNN and VGG
# faster than stepwise (VGG many times on images, where XLA:CPU's 3x3 convolution of a 2x2 input is
# pathologically slow); a ResNet-20 step on images in a scan of patches measured slower than stepwise,
# so ResNets stay stepwise on CPU (`make bench-conv-policy`). A ResNet on 1-D signals trained faster
# vmapped but moved the shipped specs' results beyond their seed spread, so it stays stepwise too
# (docs/engine.md). On an NVIDIA H200 vmapping measured faster for the CNN and VGG-11 but slower for
# ResNet-20 (docs/performance.md, "On a GPU"). Not measured on TPU, where everything vmaps.
# A plugin network runs as "convolutional plugin" where its traced program convolves, as "mlp" otherwise.
ONE_AT_A_TIME = {"cpu": ("resnet",), "gpu": ("resnet",)}
CONVOLUTIONAL = ("cnn", "vgg", "resnet", "convolutional plugin")
MAX_CONV_RUNS_PER_DEVICE = {"cpu": 1}

# XLA:CPU fuses a ResNet's element-wise chain (norm layers, activations, shortcut sums) into the
# transposes that feed its convolutions' weight gradients, recomputing the residual stream from the
# stage's first unit in each of them: a large share of a 2-D ResNet-20's step, more the deeper
# (docs/engine.md). YNNPACK's element-wise fusions take those operations out of XLA's loop fusions, so
# the transposes read stored activations. They measured slower for 1-D ResNets (MNIST-1D) and no faster
# for the CNN and VGG, so only ResNets on images compile with them, on CPU (`make bench-conv-policy`,
# docs/performance.md).
YNN_ELEMENTWISE = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_ELTWISE"}


def vmaps(model: str, platform: str) -> bool:
    """Whether the vectorized engine vmaps the runs of ``model`` on ``platform`` (else: stepwise)."""
    return model not in ONE_AT_A_TIME.get(platform, ())


def choose_path(model: str, engine: str, platform: str) -> str:
    """The path ``engine`` executes runs of ``model`` on ``platform`` by: ``"vmapped"`` or ``"stepwise"``."""
    return "vmapped" if engine == "vectorized" and vmaps(model, platform) else "stepwise"


@functools.lru_cache(maxsize=256)
def conv_form(sig: Signature, platform: str, path: str) -> str:
    """The form of a program's convolutions: ``"patches"`` for a conv net where
    :func:`bnbench.models.convolution.form` says so for ``platform`` and ``path``, else ``"xla"``."""
    return convolution.form(platform, path) if family(sig) in CONVOLUTIONAL else "xla"


def compiler_options(sig: Signature, platform: str, numerics: str) -> dict[str, str]:
    """The XLA options, beyond XLA's defaults, that every program of a run compiles with: portable
    numerics' on CPU (:data:`bnbench.training.host.PORTABLE_OPTIONS`: no YNNPACK fusions), else
    :data:`YNN_ELEMENTWISE` for a built-in ResNet on images (2-D inputs) on CPU, else none. They change
    the program's float32 roundings, so ``meta.json`` records them."""
    if platform != "cpu":
        return {}
    if numerics == "portable":
        return dict(host.PORTABLE_OPTIONS)
    on_images = not sig.plugin and sig.model == "resnet" and len(channels_last(sig.input_shape)) == 3
    return dict(YNN_ELEMENTWISE) if on_images else {}


def family(sig: Signature) -> str:
    """The model family the engine's policy reads (:data:`ONE_AT_A_TIME`): a built-in family's name, or
    for a plugin network "convolutional plugin" if its training step convolves, else "mlp"."""
    if not sig.plugin:
        return sig.model
    return "convolutional plugin" if convolutional(sig.make_model(), sig.input_shape) else "mlp"
