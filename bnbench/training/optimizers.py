"""The optimizers a run trains with: bnbench's ``sgd`` and ``adam``, and any optax optimizer by name.

* ``sgd``: L2 weight decay added to the gradient, then SGD with momentum ``optimizer_momentum``
  (Nesterov's with ``nesterov``).
* ``adam``: AdamW (decoupled weight decay).
* any other ``optax.<name>`` optimizer that takes a learning rate (``adamw``, ``lamb``, ``lion``,
  ``rmsprop``, ``adagrad``, ...), with ``optimizer_args`` as its keyword arguments. ``weight_decay`` is
  passed as its own ``weight_decay`` argument where it has one (decoupled, as optax defines it), and is
  otherwise added to the gradient (L2) before it.

Every learning rate follows the run's schedule (:func:`bnbench.training.recipe.learning_rate`). Float arguments
that optax accepts as traced values (:func:`traced_args` finds out by tracing the optimizer) are traced,
so runs that differ only in them share one compilation; the others are part of the compiled program.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from bnbench.training import recipe
from bnbench.options import OPTIMIZERS

# optax functions that take a learning rate but are not optimizers a run can train with.
_NOT_OPTIMIZERS = ("lbfgs", "scale_by_learning_rate", "scale_by_rprop")
# Arguments a run's fields set: optimizer_args may not set them too.
_SET_BY_FIELDS = ("learning_rate", "weight_decay")
FIXUP_SCALAR_LR = 0.1


@functools.cache
def optax_names() -> tuple[str, ...]:
    """The optax optimizers by name: its functions that take a ``learning_rate``."""
    names = []
    for name in dir(optax):
        function = getattr(optax, name)
        if name.startswith("_") or name in _NOT_OPTIMIZERS or inspect.isclass(function) or not callable(function):
            continue
        try:
            if "learning_rate" in inspect.signature(function).parameters:
                names.append(name)
        except (TypeError, ValueError):
            continue
    return tuple(names)


def choices() -> tuple[str, ...]:
    """Every ``optimizer`` a spec may name."""
    return (*OPTIMIZERS, *(n for n in optax_names() if n not in OPTIMIZERS))


def _parameters(name: str) -> list[str]:
    return list(inspect.signature(getattr(optax, name)).parameters)


def check_args(name: str, args: dict[str, Any]) -> str | None:
    """An error message if ``args`` are not keyword arguments of optimizer ``name`` (suggesting the
    closest), or set what a run field sets; None if they are."""
    if args and name in OPTIMIZERS:
        return f"bnbench's {name!r} takes no optimizer_args (its settings are fields); name an optax optimizer"
    accepted = [p for p in _parameters(name) if p not in _SET_BY_FIELDS] if name not in OPTIMIZERS else []
    for key in args:
        if key in _SET_BY_FIELDS:
            return f"{key!r} is set by the run field {'lr' if key == 'learning_rate' else key!r}, not optimizer_args"
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"it takes {', '.join(accepted)}"
            return f"optax.{name} takes no argument {key!r} ({hint})"
    return None


@functools.lru_cache(maxsize=256)
def traced_args(name: str, args: tuple[tuple[str, Any], ...]) -> tuple[str, ...]:
    """The float arguments of ``args`` that optimizer ``name`` accepts traced: with each traced in turn,
    its ``init`` and ``update`` trace on a small pytree."""
    given = dict(args)
    traced = []
    for key, value in args:
        if isinstance(value, bool) or not isinstance(value, float):
            continue

        def trial(v, key=key):
            optimizer = getattr(optax, name)(learning_rate=1e-3, **{**given, key: v})
            params = {"w": jnp.ones((2, 2), jnp.float32)}
            return optimizer.update(params, optimizer.init(params), params)[0]

        try:
            jax.eval_shape(trial, jnp.float32(value))
        except Exception:  # noqa: BLE001 - optax used the value as a Python number: keep it static
            continue
        traced.append(key)
    return tuple(traced)


def _all_but_norm_layers(params):
    """The weight-decay mask that leaves the norm layers' scale and offset (``params["norm"]``) alone."""
    return {k: jax.tree_util.tree_map(lambda _: k != "norm", v) for k, v in params.items()}


def _fixup_scalars(params):
    """The mask of Fixup's scalar multipliers and biases."""
    return {k: jax.tree_util.tree_map(lambda _: k in ("branch", "head_bias"), v) for k, v in params.items()}


def _optax(name: str, lr, weight_decay, mask, args: dict[str, Any]) -> optax.GradientTransformation:
    parameters = _parameters(name)
    if "weight_decay" in parameters:
        extra = {"weight_decay": weight_decay} | ({"mask": mask} if "mask" in parameters else {})
        return getattr(optax, name)(learning_rate=lr, **extra, **args)
    return optax.chain(optax.add_decayed_weights(weight_decay, mask=mask), getattr(optax, name)(learning_rate=lr, **args))


def make_optimizer(
    kind: str,
    hp,
    bn_weight_decay: bool = True,
    schedule: recipe.Schedule = recipe.Schedule(),
    nesterov: bool = False,
    fixup: bool = False,
    static_args: tuple[tuple[str, Any], ...] = (),
    traced_names: tuple[str, ...] = (),
) -> optax.GradientTransformation:
    """The optimizer of a run (see the module docstring), its traced scalars from ``hp``
    (:class:`bnbench.training.signature.HParams`; ``hp.optimizer_floats`` holds the values of ``traced_names``).

    With ``bn_weight_decay`` false, the norm layers' parameters (``params["norm"]``) get no decay. With
    ``fixup``, the updates of Fixup's scalars (``params["branch"]``, ``params["head_bias"]``) are scaled by
    :data:`FIXUP_SCALAR_LR`.
    """
    mask = None if bn_weight_decay else _all_but_norm_layers
    lr: Callable | jax.Array = hp.lr if schedule.constant else functools.partial(
        recipe.learning_rate, schedule, lr=hp.lr, warmup_steps=hp.warmup_steps, lr_decay=hp.lr_decay
    )
    if kind == "sgd":
        base = optax.chain(
            optax.add_decayed_weights(hp.weight_decay, mask=mask),
            optax.sgd(lr, hp.optimizer_momentum, nesterov=nesterov),
        )
    elif kind == "adam":
        base = optax.adamw(lr, weight_decay=hp.weight_decay, mask=mask)
    else:
        args = dict(static_args) | {name: hp.optimizer_floats[i] for i, name in enumerate(traced_names)}
        base = _optax(kind, lr, hp.weight_decay, mask, args)
    # Fixup trains its scalar multipliers and biases at a tenth of the learning rate (Zhang et al. 2019).
    return optax.chain(base, optax.masked(optax.scale(FIXUP_SCALAR_LR), _fixup_scalars)) if fixup else base
