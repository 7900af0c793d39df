"""A researcher's network (:mod:`bnbench.models.plugin`) as a bnbench model, with bnbench's norm layers injected.

:func:`plugged` calls the plugin function with the run's :class:`bnbench.models.plugin.Context`, finds its
norm sites by tracing ``apply`` abstractly (with and without training, at two batch sizes: the sites
must not depend on either), creates their parameters and running state, and wraps the network into a
:class:`bnbench.models.layers.Model` whose parameters are ``{"model": the plugin's, "norm": the
sites'}``. Every site runs the run's norm layer through :class:`bnbench.models.layers.BlockNorm`, the
same code the built-in chains run, so a plugin that re-implements a built-in network gives the same
numbers.
"""

from __future__ import annotations

import inspect
import traceback
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp

from bnbench.norm import bn
from bnbench.models import plugin
from bnbench.models.layers import COMPUTE_DTYPES, BlockNorm, Model, Normalization, from_forward
from bnbench.data.references import ReferenceLoadError, root_cause, user_frame

DISCOVERY_BATCHES = (2, 3)  # two batch sizes: sites, and the logits' shape, must not depend on it


class _Recorder:
    """The ``norm`` of a discovery trace: notes each site's channels and the line of the plugin's file
    (``where``) that called it, and passes values through."""

    def __init__(self, where: str):
        self.where = where
        self.channels: list[int] = []
        self.lines: list[int | None] = []
        self.per_example_called = False

    def _note(self, h) -> None:
        self.channels.append(h.shape[-1])
        calls = [f.lineno for f in traceback.extract_stack() if Path(f.filename) == Path(self.where)]
        self.lines.append(calls[-1] if calls else None)

    def __call__(self, h):
        self._note(h)
        return h

    def act(self, h, fn):
        self._note(h)
        return fn(h)

    def per_example(self, axis_name: str) -> _Recorder:
        """As :meth:`_Sites.per_example`: the sites a per-example network calls are the same sites."""
        self.per_example_called = True
        return self

    def absorb(self, new_states: list, preacts: list) -> None:
        """As :meth:`_Sites.absorb`; discovery keeps no states."""

    new_states: list = []
    preacts: list = []


class _Sites:
    """The ``norm`` of one forward pass: site ``i`` is the ``i``-th call, with its parameters and state."""

    def __init__(self, blocks: BlockNorm, params: list, state: list | None, first: int = 0):
        self.blocks, self.params, self.state, self.first = blocks, params, state, first
        self.new_states: list = []
        self.preacts: list = []

    def _next(self) -> tuple[int, object, object]:
        i = self.first + len(self.new_states)
        return i, self.params[i] if self.blocks.active else None, self.state[i] if self.state is not None else None

    def per_example(self, axis_name: str) -> _Sites:
        """The sites as a network written for one example sees them under ``jax.vmap(axis_name=...)``
        (:func:`bnbench.models.adapters.equinox`): BN's statistics across that axis. Their new states and
        inputs to nonlinearities come out of the vmap and back through :meth:`absorb`."""
        return _Sites(self.blocks._replace(axis_name=axis_name), self.params, self.state, self.first + len(self.new_states))

    def absorb(self, new_states: list, preacts: list) -> None:
        self.new_states += list(new_states)
        self.preacts += list(preacts)

    def __call__(self, h):
        i, params, state = self._next()
        out, new = self.blocks.normalize(h, i, params, state)
        self.new_states.append(new)
        return out

    def act(self, h, fn: Callable):
        i, params, state = self._next()
        out, pre, new = self.blocks.block(h, i, fn, params, state)
        self.new_states.append(new)
        self.preacts.append(pre)
        return out


def _user_call(where: str, what: str, fn: Callable, *args, **kwargs):
    """Calls plugin code, turning what it raises into one line naming the plugin's file and line."""
    try:
        return fn(*args, **kwargs)
    except ReferenceLoadError:
        raise
    except (jax.errors.TracerBoolConversionError, jax.errors.ConcretizationTypeError) as err:
        raise ReferenceLoadError(f"{user_frame(err, where)}: {what}: a Python `if`, `bool()` or `int()` on a "
                                 "traced value; use jnp.where or jax.lax.cond") from None
    except Exception as err:  # noqa: BLE001 - any failure of the user's code is reported, with where it happened
        raise ReferenceLoadError(f"{user_frame(err, where)}: {what} failed ({root_cause(err)})") from None


def _check_call(fn: Callable, contract: str, where: str, *args, **kwargs) -> None:
    """Refuses ``fn`` if it cannot be called as the plugin contract calls it, at the line that defines
    it: a call that does not fit raises in bnbench's frame, which names no line of the plugin's."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C function: its call reports itself
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        try:
            line = f"{inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]}"
        except (OSError, TypeError):
            line = where
        raise ReferenceLoadError(f"{line}: {getattr(fn, '__name__', contract)}{signature} cannot be called as "
                                 f"{contract} ({err})") from None


def build(function: Callable, ctx: plugin.Context, model_args: dict, where: str) -> plugin.Network:
    """The plugin's :class:`bnbench.models.plugin.Network` for ``ctx``; raises :class:`ReferenceLoadError`."""
    net = _user_call(where, f"{function.__name__}(ctx, ...)", function, ctx, **model_args)
    if not isinstance(net, plugin.Network):
        raise ReferenceLoadError(f"{where}: {function.__name__} returned {type(net).__name__}, not a "
                                 "bnbench.plugin.Network (return plugin.Network(init, apply))")
    return net


def discover(net: plugin.Network, ctx: plugin.Context, where: str) -> tuple[list[int], bool]:
    """The channels of each norm site, in call order, and whether the network calls them per example
    (:meth:`_Sites.per_example`); checks the logits' shape and that the sites are the same in training
    and evaluation and at two batch sizes."""
    _check_call(net.init, "init(key)", where, None)
    _check_call(net.apply, "apply(params, x, norm, *, train, key)", where, None, None, None, train=True, key=None)
    params = _user_call(where, "init", jax.eval_shape, net.init, jax.random.PRNGKey(0))
    found, lines = None, []
    for train in (True, False):
        for n in DISCOVERY_BATCHES:
            recorder = _Recorder(where)
            key = jax.random.PRNGKey(0) if train else None
            x = jax.ShapeDtypeStruct((n, *ctx.input_shape), ctx.dtype)
            what = f"apply (train={train}, a batch of {n})"
            logits = _user_call(where, what, jax.eval_shape,
                                lambda p, x: net.apply(p, x, recorder, train=train, key=key), params, x)
            if getattr(logits, "shape", None) != (n, ctx.num_classes) or not jnp.issubdtype(logits.dtype, jnp.floating):
                raise ReferenceLoadError(
                    f"{where}: {what} returned {getattr(logits, 'shape', type(logits).__name__)} "
                    f"{getattr(logits, 'dtype', '')}; expected float logits of shape ({n}, {ctx.num_classes})")
            if found is not None and recorder.channels != found:
                raise ReferenceLoadError(
                    _sites_differ(where, what, (found, lines), (recorder.channels, recorder.lines)))
            found, lines = recorder.channels, recorder.lines
    return found, recorder.per_example_called


def _sites_differ(where: str, what: str, first: tuple[list, list], then: tuple[list, list]) -> str:
    """The message for sites that differ between two discovery traces: the first site one has and the
    other lacks (or sees with other channels), by its line."""
    i = next((i for i, pair in enumerate(zip(first[0], then[0])) if pair[0] != pair[1]), min(len(first[0]), len(then[0])))
    line = (first[1] + [None])[i] if i < len(first[0]) else then[1][i]
    return (f"{where}{f':{line}' if line else ''}: the norm sites differ between calls ({first[0]} channels in the "
            f"first, {then[0]} in {what}); they must not depend on train or on the data")


def default_weights(params) -> list[jax.Array]:
    """A plugin's weights for the probes: its parameters of two or more dimensions, in pytree order."""
    return [leaf for leaf in jax.tree_util.tree_leaves(params) if leaf.ndim >= 2]


def plugged(
    function: Callable,
    model_args: dict,
    *,
    where: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    placement: str = "pre",
    norm: Normalization = Normalization(),
    dropout_placement: str = "after_activation",
    dtype: str = "float32",
) -> Model:
    """The plugin ``function`` (from the file ``where``) as a :class:`Model` (see the module docstring)."""
    ctx = plugin.Context(tuple(input_shape), num_classes, COMPUTE_DTYPES[dtype])
    net = build(function, ctx, model_args, where)
    if net.placement_fixed and placement != "pre":
        raise ReferenceLoadError(f"{where}: this network places its own norm layers (an adapted model whose "
                                 "code calls them: Flax NNX, Linen, Equinox, a subclassed Keras model): placement "
                                 "cannot be swept; norm and its options can")
    channels, per_example = discover(net, ctx, where)
    if not channels and norm.kind != "none" and placement != "none":
        raise ReferenceLoadError(f"{where}: {function.__name__}'s network calls no norm site, so every {norm.kind} norm "
                                 "setting would train the same network: call norm(h) or norm.act(h, fn) where it "
                                 'normalizes (adapters.* do it for a framework\'s norm layers), or sweep norm = "none" only')
    if per_example and norm.ghost_batch_size:
        raise ReferenceLoadError(f"{where}: ghost_batch_size needs a batch axis, and this network runs per "
                                 "example (an adapted Equinox model); BN's other options apply")
    active = placement != "none" and norm.kind != "none"
    has_state = active and norm.kind == "batch"

    def init(key):
        pairs = [bn.init(c) for c in channels] if active else []
        return {"model": net.init(key), "norm": [p for p, _ in pairs]}, [s for _, s in pairs] if has_state else []

    def forward(params, state, x, train, eval_stats, scalars):
        sites = _Sites(BlockNorm(norm, placement, dropout_placement, train, eval_stats, scalars), params["norm"],
                       state if has_state else None)
        logits = net.apply(params["model"], x.astype(ctx.dtype), sites, train=train,
                           key=scalars.model_key if train else None)
        return logits.astype(jnp.float32), sites.new_states if has_state else [], sites.preacts

    def weights(params):
        return list((net.weights or default_weights)(params["model"]))

    hidden_layers = len(weights(jax.eval_shape(init, jax.random.PRNGKey(0))[0])) - 1
    return from_forward(init, forward, hidden_layers, len(channels) if has_state else 0, weights)


def convolutional(model: Model, input_shape: tuple[int, ...]) -> bool:
    """Whether a model convolves (a ``conv_general_dilated`` in its traced forward pass, sub-programs
    included): the engine runs such plugins as it runs bnbench's conv nets. Traced in evaluation, whose
    layers are training's, at a batch of 2 that training's ghost batches need not divide."""
    params, state = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda p, s, x: model.apply(p, s, x, train=False))(params, state, x).jaxpr
    return _has_primitive(jaxpr, "conv_general_dilated")


def _has_primitive(jaxpr, name: str) -> bool:
    for equation in jaxpr.eqns:
        if equation.primitive.name == name:
            return True
        for value in equation.params.values():
            inner = getattr(value, "jaxpr", value)
            if hasattr(inner, "eqns") and _has_primitive(inner, name):
                return True
    return False
