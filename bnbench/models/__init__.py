"""Model families as pure ``init``/``apply`` pairs (:class:`Model`), one family per module.

* :mod:`bnbench.models.mlp`, :mod:`bnbench.models.cnn`, :mod:`bnbench.models.vgg`: chains of hidden
  blocks with the norm layer before or after the activation (:mod:`bnbench.models.stack`).
* :mod:`bnbench.models.resnet`: the CIFAR ResNet with every residual-unit arrangement of He et al.
  (2016), plain (shortcut-free) nets, and the BN-free Fixup and SkipInit initializations.
* :mod:`bnbench.models.layers`: what they share: the norm layer, noise, dropout, initializers,
  mixed precision.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Sequence

import jax

from bnbench.models.cnn import cnn
from bnbench.models.layers import ACTIVATION_FUNCTIONS, Model, Normalization, Scalars, add_noise, count_params, dropout
from bnbench.models.mlp import mlp
from bnbench.models.plugged import plugged
from bnbench.models.resnet import resnet
from bnbench.models.vgg import vgg
from bnbench.options import DEFAULT_DEPTH
from bnbench.data.references import MODEL_GROUP, Function, resolve

FAMILIES: dict[str, Callable[..., Model]] = {"mlp": mlp, "cnn": cnn, "vgg": vgg, "resnet": resnet}
# The plugin networks (bnbench.models.plugin) a spec referenced, by the reference as written.
PLUGINS: dict[str, Function] = {}


def register_plugin(text: str, base_dir: Path) -> Function:
    """Resolves the model reference ``text`` relative to ``base_dir`` (:func:`bnbench.data.references.resolve`)
    and registers it under ``text``, replacing an earlier registration of that text."""
    PLUGINS[text] = found = resolve(text, base_dir, MODEL_GROUP, "model", tuple(FAMILIES))
    return found


def is_plugin(name: str) -> bool:
    """Whether ``model = name`` is a plugin network rather than a built-in family."""
    return name not in FAMILIES

__all__ = [
    "ACTIVATION_FUNCTIONS", "DEFAULT_DEPTH", "FAMILIES", "Model", "Normalization", "Scalars", "add_noise", "cnn", "count_params",
    "dropout", "make_model", "mlp", "num_params", "resnet", "vgg",
]


def make_model(
    name: str,
    *,
    input_shape: tuple[int, ...],
    widths: Sequence[int],
    num_classes: int,
    activation: str = "relu",
    placement: str = "pre",
    norm: Normalization = Normalization(),
    depth: int = 0,
    residual_unit: str = "original",
    shortcut: str = "pad",
    init: str = "default",
    dropout_placement: str = "after_activation",
    dtype: str = "float32",
    model_args: tuple = (),
    model_source: str = "",
) -> Model:
    """Looks up a model family by name and builds it with the options it takes, or builds the plugin
    network registered under ``name`` (:func:`register_plugin`) with ``model_args``.

    ``depth`` (0: :data:`DEFAULT_DEPTH`) is VGG's and ResNet's; ``placement`` the chains' (MLP, CNN,
    VGG) and plugins'; ``residual_unit``, ``shortcut`` and ``init`` ResNet's. ``model_source`` is the
    registered plugin's ``where@digest``; a plugin registered since with other code is refused.
    """
    if name not in FAMILIES:
        found = PLUGINS.get(name)
        if found is None or found.source != model_source:
            raise ValueError(f"unknown model {name!r}, or its code changed since it was resolved ({model_source})")
        return plugged(found.function, dict(model_args), where=found.where, input_shape=input_shape,
                       num_classes=num_classes, placement=placement, norm=norm, dropout_placement=dropout_placement,
                       dtype=dtype)
    common = dict(
        input_shape=tuple(input_shape), widths=tuple(widths), num_classes=num_classes, activation=activation,
        norm=norm, dropout_placement=dropout_placement, dtype=dtype,
    )
    if name == "resnet":
        return resnet(
            **common, depth=depth or DEFAULT_DEPTH[name], residual_unit=residual_unit, shortcut=shortcut, init=init
        )
    if name == "vgg":
        return vgg(**common, depth=depth or DEFAULT_DEPTH[name], placement=placement)
    return FAMILIES[name](**common, placement=placement)


@functools.lru_cache(maxsize=256)
def num_params(name: str, **options) -> int:
    """The learned parameters of :func:`make_model` ``(name, **options)``, counted without computing them."""
    params, _ = jax.eval_shape(make_model(name, **options).init, jax.random.PRNGKey(0))
    return count_params(params)
