"""Flax Linen models under bnbench (:func:`linen`)."""

from __future__ import annotations

import inspect
import math
from typing import Any

import jax
import jax.numpy as jnp

from bnbench.models import plugin

DEFAULT_TRAIN_ARG = "train"


def linen(module, input_shape: tuple[int, ...], *, train_arg: str | None = DEFAULT_TRAIN_ARG,
          eval_arg: str | None = None) -> plugin.Network:
    """A Flax Linen ``module`` (an ``nn.Module`` instance, not a function making one: a Linen module is
    a description, and its parameters come from ``init(key)``) with every ``nn.BatchNorm``,
    ``nn.GroupNorm`` and ``nn.LayerNorm`` call answered by a bnbench norm site, whose channels are the
    layer's features (``axis``, ``feature_axes``; GroupNorm's last axis) and whose examples are the
    slices a LayerNorm or GroupNorm normalizes apart (the axes out of its ``reduction_axes``). Those
    layers create no variables: the parameters are the module's ``params`` collection, without theirs.
    A layer that no site can be (features or reduction over the batch axis, a ``mask``) is refused.

    ``input_shape``: one example's shape (``ctx.input_shape``), to initialize the module on.
    ``train_arg``: the keyword of ``module.__call__`` that takes bnbench's training flag; with the
    default ``"train"``, a module that takes no such keyword is called without it, and with None
    nothing is passed. ``eval_arg``: instead, a keyword taking its negation (Flax's ``deterministic``).
    ``nn.Dropout`` draws from the run's per-step key (rng stream ``"dropout"``) in training and is the
    identity in evaluation, whatever its ``deterministic``."""
    import flax.linen as nn

    if not isinstance(module, nn.Module):
        raise TypeError(f"adapters.linen takes a flax.linen Module instance (MyNet(...)), not {type(module).__name__}")
    flag = _flag_keyword(module, train_arg, eval_arg)
    norms = (nn.BatchNorm, nn.GroupNorm, nn.LayerNorm)

    def variables(key):
        # the norm layers pass their input on: initializing needs only the shapes
        with nn.intercept_methods(_interceptor(nn, norms, lambda h: h, train=False)):
            return module.init(key, jnp.zeros((2, *input_shape), jnp.float32), **_flag_kwargs(flag, False))

    others = sorted(set(jax.eval_shape(variables, jax.random.PRNGKey(0))) - {"params"})
    if others:
        raise ValueError(f"{type(module).__name__} makes variables outside 'params' ({', '.join(others)}): "
                         "bnbench runs a pure function of the parameters; keep state out of the module")

    def init(key):
        return variables(key).get("params", {})

    def apply(params, x, norm, *, train, key):
        rngs = {"dropout": key} if train and key is not None else {}
        with nn.intercept_methods(_interceptor(nn, norms, norm, train)):
            return module.apply({"params": params}, x, rngs=rngs, **_flag_kwargs(flag, train))

    return plugin.Network(init, apply, placement_fixed=True)


def _flag_keyword(module, train_arg: str | None, eval_arg: str | None) -> tuple[str, bool] | None:
    """The keyword the module's training flag goes to and whether it takes the negation, or None to
    pass none; a keyword named explicitly that ``__call__`` does not take is refused."""
    name, inverted = (eval_arg, True) if eval_arg is not None else (train_arg, False)
    if name is None:
        return None
    parameters = inspect.signature(type(module).__call__).parameters.values()
    if name in {p.name for p in parameters} or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return name, inverted
    if name == DEFAULT_TRAIN_ARG and not inverted:
        return None  # the default: a module without a training flag
    raise TypeError(f"{type(module).__name__}.__call__ takes no argument {name!r}: name its training flag with "
                    "adapters.linen(..., train_arg=...) (eval_arg=... for an inverted one), or pass train_arg=None")


def _flag_kwargs(flag: tuple[str, bool] | None, train: bool) -> dict:
    return {flag[0]: train != flag[1]} if flag else {}


def _interceptor(nn, norms: tuple, normalize, train: bool):
    """The method interceptor of one call of the module: a norm layer's ``__call__`` is ``normalize``
    (the next site) on its input laid out as :func:`_layout` says (its own code, which would create its
    variables, never runs); dropout is off in evaluation."""

    def intercept(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if isinstance(context.module, norms):
            if kwargs.get("mask") is not None:
                raise ValueError(f"{_layer_name(context.module)}: a norm layer called with mask= cannot be a "
                                 "bnbench site (its statistics would skip the masked entries); drop the mask")
            x = _argument(args, kwargs, "x")
            return _as_site(normalize, x, _layout(nn, context.module, x.ndim))
        if isinstance(context.module, nn.Dropout) and not train:
            return _argument(args, kwargs, "inputs")
        return next_fun(*args, **kwargs)

    return intercept


def _argument(args: tuple, kwargs: dict, name: str) -> Any:
    """The first argument of a layer's ``__call__``, given by position or by ``name``."""
    return args[0] if args else kwargs[name]


def _layer_name(layer) -> str:
    return f"{type(layer).__name__} {layer.name!r}" if layer.name else type(layer).__name__


def _axes(axes, ndim: int) -> tuple[int, ...]:
    return tuple(sorted(a % ndim for a in (axes if isinstance(axes, (tuple, list)) else (axes,))))


def _layout(nn, layer, ndim: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The axes of the layer's input as its site takes them: ``(examples, reduced, features)``. BN
    reduces over every axis but its features (``axis``), the batch's included; a LayerNorm or GroupNorm
    normalizes each slice along the axes it does not reduce (``reduction_axes``) on its own, so those
    axes are the site's examples, with the batch axis: a per-position LayerNorm is one per position."""
    if isinstance(layer, nn.BatchNorm):
        features = _axes(layer.axis, ndim)
        reduced = tuple(a for a in range(1, ndim) if a not in features)
        examples = (0,)
    else:
        if isinstance(layer, nn.LayerNorm):
            features, reduction = _axes(layer.feature_axes, ndim), _axes(layer.reduction_axes, ndim)
        else:  # Linen's GroupNorm: channels last, by default reduced with every axis but the batch's
            features, reduction = (ndim - 1,), _axes(layer.reduction_axes or tuple(range(1, ndim)), ndim)
        if not set(features) <= set(reduction):
            raise ValueError(f"{_layer_name(layer)}: its feature axes {features} are not among its reduction axes "
                             f"{reduction}, which no bnbench site normalizes as; reduce over the features too")
        reduced = tuple(a for a in reduction if a not in features)
        examples = tuple(a for a in range(ndim) if a not in reduction)
    if 0 not in examples or 0 in features:
        raise ValueError(f"{_layer_name(layer)}: its {'feature' if 0 in features else 'reduction'} axes include the "
                         f"batch axis 0 of its {ndim}-D input, where a bnbench site takes the examples; leave axis 0 out")
    return examples, reduced, features


def _as_site(fn, x: jax.Array, layout: tuple[tuple[int, ...], ...]) -> jax.Array:
    """``fn`` (channels last) on ``x`` reshaped to ``(examples, *reduced, features)``, its example axes
    and its feature axes each flattened into one, then put back: a layer's statistics and affine over
    several feature axes are per element of their product."""
    examples, reduced, features = layout
    order = (*examples, *reduced, *features)
    moved = jnp.transpose(x, order)
    sizes = moved.shape
    inner = moved.reshape(math.prod(sizes[: len(examples)]), *sizes[len(examples): len(examples) + len(reduced)],
                          math.prod(sizes[len(examples) + len(reduced):]))
    return jnp.transpose(fn(inner).reshape(sizes), tuple(order.index(a) for a in range(x.ndim)))
