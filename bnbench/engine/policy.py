"""The platform policy: which models vmap where, the most runs a block holds, the form of a program's
convolutions and the XLA options it compiles with. Every choice rests on a benchmark
(``make bench-blocks``, ``make bench-conv-policy``; docs/performance.md)."""

from __future__ import annotations

import functools

from bnbench.kernels import onednn
from bnbench.models.cnn import channels_last
from bnbench.models.plugged import convolutional
from bnbench.training import host
from bnbench.training.signature import Signature

# The most runs a vmapped block holds, by platform. On CPU, blocks of 2 train a grid about as fast as
# larger ones and pad small groups (a spec's seeds) least; accelerators are launch-bound at these
# sizes, so padding costs them little. Measured by `make bench-blocks`; not measured on TPU.
MAX_RUNS_PER_DEVICE = {"cpu": 2, "gpu": 16, "tpu": 16}

# Where the vectorized engine does not vmap, by platform, when XLA convolves (with oneDNN's convolutions a
# ResNet vmaps: ONEDNN_ON_IMAGES): it runs these models stepwise, one run at a time with a jitted step per
# batch (the sequential engine's path), because that measured faster or as fast. XLA:CPU runs its
# convolution many times slower inside the program's lax.scan and under vmap, so on CPU the engine
# rewrites a vmapped conv net's convolutions as patches (bnbench.models.convolution), which keep their
# speed in a scan, and trains one run per block (MAX_CONV_RUNS_PER_DEVICE), blocks side by side: a vmapped
# batch of those products measured slower per run than one. That made the CNN and VGG faster than stepwise
# (VGG many times on images, where XLA:CPU's 3x3 convolution of a 2x2 input is pathologically slow); a
# ResNet-20 step on images in a scan of patches measured slower than stepwise, so ResNets stay stepwise on
# CPU (`make bench-conv-policy`). A ResNet on 1-D signals trained faster vmapped but moved the shipped
# specs' results beyond their seed spread, so it stays stepwise too (docs/engine.md). On an NVIDIA H200
# vmapping measured faster for the CNN and VGG-11 but slower for ResNet-20 (docs/performance.md, "On a
# GPU"). Not measured on TPU, where everything vmaps.
# A plugin network runs as "convolutional plugin" where its traced program convolves, as "mlp" otherwise.
ONE_AT_A_TIME = {"cpu": ("resnet",), "gpu": ("resnet",)}
CONVOLUTIONAL = ("cnn", "vgg", "resnet", "convolutional plugin")
MAX_CONV_RUNS_PER_DEVICE = {"cpu": 1}

# With XLA's convolutions, XLA:CPU fuses a ResNet's element-wise chain (norm layers, activations,
# shortcut sums) into the transposes that feed its convolutions' weight gradients, recomputing the
# residual stream from the stage's first unit in each of them: a large share of a 2-D ResNet-20's step,
# more the deeper (docs/engine.md). YNNPACK's element-wise fusions take those operations out of XLA's
# loop fusions, so the transposes read stored activations. They measured slower for 1-D ResNets
# (MNIST-1D), no faster for the CNN and VGG, and slower with oneDNN's convolutions, so only ResNets on
# images whose convolutions are XLA's compile with them, on CPU (`make bench-conv-policy`,
# docs/performance.md).
YNN_ELEMENTWISE = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_ELTWISE"}


def choose_path(sig: Signature, engine: str, platform: str, numerics: str) -> str:
    """The path ``engine`` executes runs of ``sig`` on ``platform`` with ``numerics`` by: ``"vmapped"``,
    or ``"stepwise"`` for the sequential engine and for the families of :data:`ONE_AT_A_TIME` whose
    convolutions are XLA's."""
    if engine != "vectorized":
        return "stepwise"
    one_at_a_time = family(sig) in ONE_AT_A_TIME.get(platform, ())
    return "stepwise" if one_at_a_time and not _onednn_usable(sig, platform, numerics) else "vmapped"


# The kernel of a conv net's convolutions (bnbench.models.convolution.KERNELS) on CPU, by path, the first
# that can be had: oneDNN's where ONEDNN_ON_IMAGES allows, else patches where they measured faster than
# XLA's (`make bench-conv-policy`, docs/performance.md); every other program keeps XLA's.
CPU_KERNELS = {"vmapped": ("onednn", "patches"), "stepwise": ("onednn", "xla")}
# The families whose convolutions are oneDNN's, on images (2-D inputs) with native numerics on CPU:
# there they measured several times faster than XLA's, stepwise or as patches, and vmapped faster than
# stepwise. On 1-D signals and for the small CNN each convolution is too small to pay for oneDNN's
# per-call costs (its threads waking, the kernel's reorder), and patches measured faster; a plugin
# network's layer sizes are unknown here, and the plugin conv nets measured are small, so plugins keep
# patches. Native numerics only: oneDNN picks its kernels and splits its sums by the CPU's instruction
# set, caches and threads (bnbench.kernels.onednn).
ONEDNN_ON_IMAGES = ("vgg", "resnet")


@functools.lru_cache(maxsize=256)
def conv_form(sig: Signature, platform: str, path: str, numerics: str) -> str:
    """The kernel of a program's convolutions: ``"none"`` for a network without any; on CPU the first of
    :data:`CPU_KERNELS` for ``path`` that can be had (``"onednn"``: :func:`_onednn_usable`); else ``"xla"``."""
    if family(sig) not in CONVOLUTIONAL:
        return "none"
    if platform != "cpu":
        return "xla"
    usable = _onednn_usable(sig, platform, numerics)
    return next(form for form in CPU_KERNELS[path] if form != "onednn" or usable)


def onednn_applies(sig: Signature, platform: str) -> bool:
    """Whether the policy gives ``sig``'s convolutions on ``platform`` to oneDNN under native numerics
    (:data:`ONEDNN_ON_IMAGES`), where its kernels can be had."""
    return platform == "cpu" and family(sig) in ONEDNN_ON_IMAGES and _on_images(sig)


def _on_images(sig: Signature) -> bool:
    """Whether ``sig``'s inputs are images (2-D, with channels), not 1-D signals."""
    return len(channels_last(sig.input_shape)) == 3


def _onednn_usable(sig: Signature, platform: str, numerics: str) -> bool:
    """Whether ``sig``'s convolutions are oneDNN's: where :func:`onednn_applies`, with native numerics,
    where the extension loads and has ``sig``'s dtype on this CPU."""
    return (onednn_applies(sig, platform) and numerics == "native" and onednn.problem() is None
            and onednn.supports(sig.dtype))


def compiler_options(sig: Signature, platform: str, numerics: str, conv: str) -> dict[str, str]:
    """The XLA options, beyond XLA's defaults, that every program of a run whose convolutions are of form
    ``conv`` compiles with: portable numerics' on CPU (:data:`bnbench.training.host.PORTABLE_OPTIONS`: no
    YNNPACK fusions), else :data:`YNN_ELEMENTWISE` for a built-in ResNet on images (2-D inputs) with XLA's
    convolutions on CPU, else none. They change the program's float32 roundings, so ``meta.json`` records
    them."""
    if platform != "cpu":
        return {}
    if numerics == "portable":
        return dict(host.PORTABLE_OPTIONS)
    resnet_on_images = conv == "xla" and not sig.plugin and sig.model == "resnet" and _on_images(sig)
    return dict(YNN_ELEMENTWISE) if resnet_on_images else {}


def family(sig: Signature) -> str:
    """The model family the engine's policy reads (:data:`ONE_AT_A_TIME`): a built-in family's name, or
    for a plugin network "convolutional plugin" if its training step convolves, else "mlp"."""
    if not sig.plugin:
        return sig.model
    return "convolutional plugin" if convolutional(sig.make_model(), sig.input_shape) else "mlp"
