"""Convolutions computed by other kernels than XLA's, for the programs XLA:CPU convolves slowly.

Two kernels (:data:`KERNELS`):

* ``"patches"``: ``k`` shifted (strided) slices of the padded input, concatenated on the channel axis,
  times the kernel reshaped to ``(k * C_in, C_out)``. XLA:CPU runs its convolution many times slower
  inside a ``lax.scan`` and vmapped over runs (a grouped convolution), which is what the vectorized
  engine compiles; as patches a convolution stays a matrix product in a scan, its gradient stays
  matrix products, slices and pads, and vmapped over runs it becomes a batched product
  (``make bench-conv-policy`` measures both forms).
* ``"onednn"``: oneDNN's convolution primitives through XLA's FFI (:mod:`bnbench.kernels.onednn`),
  where the extension can be had.

:func:`with_kernel` rewrites every convolution of a function, bnbench's models and a researcher's
own network alike, from its traced program: no model is written twice. The kernels compute the same
sums in another order, so their float32 roundings differ: the kernel is part of a run's execution
context (``convolution``), chosen by :func:`bnbench.engine.policy.conv_form`.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
from jax.extend import core

from bnbench.kernels import onednn


def patches(h: jax.Array, w: jax.Array, strides: tuple[int, ...], padding: tuple[tuple[int, int], ...]) -> jax.Array:
    """The convolution of ``h`` (``(N, *spatial, C_in)``) with ``w`` (``(*kernel, C_in, C_out)``, of
    ``h``'s dtype), ``strides`` and ``padding`` (one ``(low, high)`` pair) per spatial axis: the
    shifted slices of the padded input, concatenated in the kernel's order, times the reshaped kernel.
    The product accumulates in float32 whatever the dtype, as XLA's convolution does, and returns
    ``h``'s dtype."""
    spatial = h.ndim - 2
    kernel = w.shape[:spatial]
    padded = jnp.pad(h, [(0, 0), *padding, (0, 0)])
    out = [(padded.shape[1 + d] - kernel[d]) // strides[d] + 1 for d in range(spatial)]
    shifted = [
        jax.lax.slice(padded, (0, *offset, 0),
                      (h.shape[0], *(o + (n - 1) * s + 1 for o, n, s in zip(offset, out, strides)), h.shape[-1]),
                      (1, *strides, 1))
        for offset in itertools.product(*(range(k) for k in kernel))
    ]
    columns = shifted[0] if len(shifted) == 1 else jnp.concatenate(shifted, axis=-1)
    product = jnp.dot(columns, w.reshape(-1, w.shape[-1]), preferred_element_type=jnp.float32)
    return product.astype(h.dtype)


# The kernels a program's convolutions may be rewritten to, by form: each takes channels-last
# activations (N, *spatial, C_in), a kernel (*spatial, C_in, C_out), strides and explicit padding.
KERNELS = {"patches": patches, "onednn": onednn.convolve}


def _as_kernel(lhs: jax.Array, rhs: jax.Array, params: dict, form: str) -> jax.Array | None:
    """A ``conv_general_dilated`` equation computed by the kernel of ``form`` (:data:`KERNELS`) in any
    layout (NCHW, NHWC, ...); None for what the kernels do not cover (dilation, feature or batch
    groups; for oneDNN, a dtype it lacks on this CPU), which XLA keeps."""
    dilated = any(d != 1 for d in (*params["lhs_dilation"], *params["rhs_dilation"]))
    if dilated or params["feature_group_count"] != 1 or params["batch_group_count"] != 1:
        return None
    if form == "onednn" and not onednn.supports(jnp.dtype(lhs.dtype).name):
        return None
    numbers = params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = numbers.lhs_spec, numbers.rhs_spec, numbers.out_spec
    h = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
    w = jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
    out = KERNELS[form](h, w.astype(h.dtype), tuple(params["window_strides"]), tuple(map(tuple, params["padding"])))
    if params["preferred_element_type"] is not None:
        out = out.astype(params["preferred_element_type"])
    # out is (N, *spatial, C); out_spec names, for each of those, the axis it takes in the result.
    return jnp.transpose(out, [(out_spec[0], *out_spec[2:], out_spec[1]).index(axis) for axis in range(out.ndim)])


def _evaluate(form: str, jaxpr: core.Jaxpr, consts, *args) -> list:
    """Evaluates ``jaxpr`` with every convolution computed by the kernel of ``form``, inlining the
    programs it calls (``jit``); other sub-programs (control flow, custom derivatives) run as they are."""
    env = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))

    def read(var):
        return var.val if isinstance(var, core.Literal) else env[var]

    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        result = _as_kernel(*inputs, eqn.params, form) if name == "conv_general_dilated" else None
        if result is not None:
            outputs = [result]
        elif name in ("jit", "pjit"):
            inner = eqn.params["jaxpr"]
            outputs = _evaluate(form, inner.jaxpr, inner.consts, *inputs)
        else:
            outputs = eqn.primitive.bind(*inputs, **eqn.primitive.get_bind_params(eqn.params))
            outputs = outputs if eqn.primitive.multiple_results else [outputs]
        env.update(zip(eqn.outvars, outputs))
    return [read(v) for v in jaxpr.outvars]


def with_kernel(fn, form: str):
    """``fn`` with every convolution it computes done by the kernel of ``form`` (:data:`KERNELS`): the
    same function, to float32 rounding. Array arguments (leaves of any pytree) are traced; every other
    argument (``train=True``, ``eval_stats="running"``, a Python float) is a constant of the rewritten
    program."""

    @functools.wraps(fn)
    def rewritten(*args, **kwargs):
        leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
        traced = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.Array)]  # tracers too

        def with_traced(*values):
            merged = list(leaves)
            for i, value in zip(traced, values):
                merged[i] = value
            args_, kwargs_ = jax.tree_util.tree_unflatten(tree, merged)
            return fn(*args_, **kwargs_)

        values = [leaves[i] for i in traced]
        closed, shapes = jax.make_jaxpr(with_traced, return_shape=True)(*values)
        flat = _evaluate(form, closed.jaxpr, closed.consts, *values)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), flat)

    return rewritten
