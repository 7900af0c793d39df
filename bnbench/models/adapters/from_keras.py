"""Keras 3 models under bnbench (:func:`keras`).

Keras reads its backend once, when it is first imported, and that may be the plugin's own
``import keras`` right after ``from bnbench import adapters``: importing this module therefore sets
``KERAS_BACKEND=jax`` over the user's environment, unless Keras is already imported.

The adapter reaches into a few of Keras's internals, each for want of a public way: a variable's
initializer (``Variable._initializer``, kept while a variable is created in a ``StatelessScope``), a
layer's sub-layers (``_flatten_layers``), and a Sequential or functional model's graph
(``_functional``, ``_nodes_by_depth``, ``_keras_history``, the ``Functional`` class).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import inspect
import os
import sys
from typing import Callable

import jax
import jax.numpy as jnp

from bnbench.data.references import ReferenceLoadError
from bnbench.models import plugin
from bnbench.models.adapters.sites import current, norm_in_use

if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "jax"

_NORM_LAYERS = ("BatchNormalization", "GroupNormalization", "LayerNormalization")
# Layers that end by applying their ``activation`` to their output, which the adapter may take out.
_FUSED_LAYERS = ("Dense", "EinsumDense", "Activation", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose",
                 "Conv2DTranspose", "Conv3DTranspose", "SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D",
                 "DepthwiseConv2D")


def keras(make: Callable) -> plugin.Network:
    """A Keras 3 model ``make()`` (Sequential, functional or subclassed, built: its input shape known)
    with its BatchNormalization, GroupNormalization and LayerNormalization layers swapped for bnbench's
    norm sites, called through Keras's stateless API on the JAX backend.

    Its parameters are its trainable variables, but the norm layers', in the model's order; each run
    draws them with the variable's own Keras initializer from the run's key (a variable ``make`` set
    itself keeps that value). Non-trainable variables keep the values ``make`` gave them, and Keras's
    random layers (``Dropout``) draw from bnbench's key in training and are off in evaluation.

    In a Sequential or functional model a norm layer fed only by a layer with a fused ``activation``
    (``Dense(..., activation="relu")``, a convolution's, an ``Activation`` layer) is the site
    ``norm.act(h, activation)``, so ``placement = "post"`` is the model as written; the others are bare
    sites ``norm(h)``. A softmax on the model's output (a layer's ``activation="softmax"``, a final
    ``Softmax`` or ``Activation("softmax")``) is taken off: bnbench trains on logits. A subclassed
    model's ``call`` fixes its placement, so it cannot be swept (``placement_fixed``), and must return
    logits.
    """
    where = _where(make)
    keras_ = _keras_on_jax(where)
    with keras_.StatelessScope() as scope:  # variables created here keep their initializers
        model = _built(make(), keras_, where)
        first_values = {id(v): _first_value(v, scope) for v in model.trainable_variables}
    layers = model._flatten_layers(include_self=False)
    norm_layers = [layer for layer in layers if _is(layer, keras_, _NORM_LAYERS)]
    graph = _graph(model, keras_)
    fused = _fused_activations(graph, keras_) if graph is not None else {}
    for layer in norm_layers:
        layer.call = _site_call(_channel_axis(layer), fused.get(id(layer)))
    if graph is not None:
        _strip_softmax(graph, keras_)

    swapped = {id(v) for layer in norm_layers for v in layer.weights}
    trained = [(v, first_values[id(v)]) for v in model.trainable_variables if id(v) not in swapped]
    # The states of the model's keras.random.SeedGenerators (Dropout's...), by the name Keras gives them.
    seeds = [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]

    def init(key):
        keys = jax.random.split(key, len(trained))
        return [first(k) for (_, first), k in zip(trained, keys)]

    def apply(params, x, norm, *, train, key):
        mapping = [(v, value) for (v, _), value in zip(trained, params)]
        if train and key is not None:  # a probe's forward pass in training mode may have no key
            mapping += [(v, _seed(jax.random.fold_in(key, i))) for i, v in enumerate(seeds)]
        # the swapped norm layers read the norm from here: a layer's ``call`` takes no extra argument
        with norm_in_use(norm), keras_.StatelessScope(state_mapping=mapping):
            return model(x, training=train)

    return plugin.Network(init, apply, placement_fixed=graph is None)


def _where(make: Callable) -> str:
    """``file:line`` of ``make``'s code, for messages (``make`` itself where Python cannot tell)."""
    with contextlib.suppress(TypeError, OSError):
        return f"{inspect.getsourcefile(make)}:{inspect.getsourcelines(make)[1]}"
    return repr(make)


def _keras_on_jax(where: str):
    """The ``keras`` module, on the JAX backend (see the module docstring)."""
    import keras as keras_

    if keras_.backend.backend() != "jax":
        raise ReferenceLoadError(
            f"{where}: Keras was imported with the {keras_.backend.backend()!r} backend before bnbench could "
            "choose JAX: import bnbench (from bnbench import adapters) before keras, or set KERAS_BACKEND=jax")
    return keras_


def _built(model, keras_, where: str):
    """``model``, checked to be a Keras model whose every layer has its variables (Keras creates a
    layer's variables on its first call, which must not happen while JAX traces)."""
    if not isinstance(model, keras_.Model):
        raise ReferenceLoadError(f"{where}: make() returned {type(model).__name__}, not a keras.Model")
    if not model.built or not all(layer.built for layer in model._flatten_layers()):
        raise ReferenceLoadError(
            f"{where}: make() returned a Keras model that is not built: start it with "
            "keras.Input(shape=ctx.input_shape), or call it once on a batch, model(np.zeros((1, *ctx.input_shape))), "
            "before returning it")
    return model


def _is(layer, keras_, names: tuple[str, ...]) -> bool:
    return isinstance(layer, tuple(getattr(keras_.layers, name) for name in names))


def _first_value(variable, scope) -> Callable:
    """``key -> the variable's first value``: drawn by its initializer with a seed from ``key``, or, for a
    variable ``make`` assigned (or one made from a value), that value."""
    assigned = scope.get_current_value(variable)
    initializer = variable._initializer
    if assigned is not None or initializer is None:
        value = assigned if assigned is not None else variable.value
        return lambda key: jnp.asarray(value)

    def draw(key):
        seeded = initializer
        if hasattr(initializer, "seed"):  # keras.initializers' random ones: seeded by bnbench's key, not Keras's
            seeded = copy.copy(initializer)
            seeded.seed = _seed(key)
        return seeded(variable.shape, dtype=variable.dtype)

    return draw


def _seed(key) -> jax.Array:
    """``key`` as Keras's JAX backend takes a seed: two uint32 words."""
    return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def _channel_axis(layer) -> int:
    """The axis a norm layer keeps its features on: BN's and GroupNorm's ``axis``, the last of
    LayerNorm's."""
    return layer.axis[-1] if isinstance(layer.axis, (list, tuple)) else layer.axis


def _site_call(axis: int, activation: Callable | None) -> Callable:
    """A norm layer's ``call``: the next norm site, on its features moved last (and back), with the
    ``activation`` taken from the layer before it if any."""

    def moved(fn):
        return lambda h: jnp.moveaxis(fn(jnp.moveaxis(h, -1, axis)), axis, -1)

    def call(inputs, *args, **kwargs):
        norm, h = current(), jnp.moveaxis(inputs, axis, -1)
        return jnp.moveaxis(norm(h) if activation is None else norm.act(h, moved(activation)), -1, axis)

    return call


def _graph(model, keras_):
    """The functional model that runs a Sequential or functional ``model`` (its graph of layers), or
    None for a subclassed one, whose ``call`` the adapter cannot read."""
    from keras.src.models.functional import Functional

    if type(model).call is keras_.Sequential.call:
        model = model._functional
    return model if isinstance(model, Functional) and type(model).call is Functional.call else None


def _nodes(graph) -> list:
    return [node for nodes in graph._nodes_by_depth.values() for node in nodes]


def _fused_activations(graph, keras_) -> dict[int, Callable]:
    """``id(norm layer) -> activation`` for each norm layer of ``graph`` (nested Sequential and
    functional models included) fed only by a layer with a fused activation, which this takes out of
    that layer (set to linear): the norm site applies it, in the run's placement. A layer called more
    than once, or whose output goes elsewhere too (or is an output of the model), keeps its own."""
    nodes = _nodes(graph)
    calls = collections.Counter(id(node.operation) for node in nodes)
    consumers = collections.Counter(id(parent) for node in nodes for parent in node.parent_nodes)
    outputs = {id(tensor) for tensor in graph.outputs}
    found = {}
    for node in nodes:
        layer = node.operation
        if (inner := _graph(layer, keras_) if isinstance(layer, keras_.Model) else None) is not None:
            found |= _fused_activations(inner, keras_)
        if not _is(layer, keras_, _NORM_LAYERS) or calls[id(layer)] != 1 or len(node.parent_nodes) != 1:
            continue
        parent = node.parent_nodes[0]
        before = parent.operation
        if (_is(before, keras_, _FUSED_LAYERS) and before.activation is not keras_.activations.linear
                and calls[id(before)] == 1 and consumers[id(parent)] == 1
                and not outputs & {id(tensor) for tensor in parent.outputs}):
            found[id(layer)], before.activation = before.activation, keras_.activations.linear
    return found


def _strip_softmax(graph, keras_) -> None:
    """Takes the softmax off the output of ``graph`` (a model with one output), so that it returns logits."""
    if len(graph.outputs) != 1:
        return
    last = graph.outputs[0]._keras_history.operation
    inner = _graph(last, keras_) if isinstance(last, keras_.Model) else None
    if inner is not None:
        _strip_softmax(inner, keras_)
    elif isinstance(last, keras_.layers.Softmax):
        last.call = lambda inputs, *args, **kwargs: inputs
    elif _is(last, keras_, _FUSED_LAYERS) and last.activation is keras_.activations.softmax:
        last.activation = keras_.activations.linear
