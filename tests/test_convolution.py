"""Convolutions as patches and oneDNN's (bnbench.models.convolution, bnbench.kernels.onednn) against a
float64 reference and XLA's own: forward and gradient, every stride and padding the models use, 1-D and
2-D, float32 and bfloat16, any layout, vmapped over runs; and the rewrite of whole networks, bnbench's
and a researcher's own."""

import itertools
import os
import platform
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnbench.models import convolution
from bnbench.norm.settings import BNSettings

pytestmark = pytest.mark.unit
# oneDNN's wheels (the onednn extra, in the test extra) exist for Linux x86_64 only, and its kernels
# are built with a C++ compiler, which a fresh machine may lack (the README's `make test` must pass
# there; .ci/run requires one, so CI runs these tests). Otherwise a test of oneDNN's kernels fails,
# never skips, if the extension cannot be had.
needs_onednn = pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64" and shutil.which(os.environ.get("CXX", "g++"))),
    reason="oneDNN's kernels need Linux x86_64 (its wheels) and a C++ compiler ($CXX, default g++)")
# Each kernel a program's convolutions may have: XLA's own, and the two rewrites (oneDNN's needs its extension).
FORMS = ["xla", "patches", pytest.param("onednn", marks=needs_onednn)]

# (input shape, kernel shape, stride, padding): the CNN's 1-D stride-2 SAME convolutions, VGG's 3x3
# SAME, the ResNets' 3x3 with explicit padding at strides 1 and 2, 1x1 projections, a 1-D ResNet.
CASES = [
    ((3, 40, 4), (5, 4, 6), 2, "SAME"),
    ((2, 9, 9, 3), (3, 3, 3, 5), 1, "SAME"),
    ((2, 8, 8, 4), (3, 3, 4, 6), 1, [(1, 1), (1, 1)]),
    ((2, 8, 8, 4), (3, 3, 4, 6), 2, [(1, 1), (1, 1)]),
    ((2, 8, 8, 4), (1, 1, 4, 8), 2, [(0, 0), (0, 0)]),
    ((2, 7, 7, 2), (3, 3, 2, 3), 2, "VALID"),
    ((3, 20, 4), (3, 4, 4), 1, [(1, 1)]),
]


def reference(x: np.ndarray, w: np.ndarray, stride: int, padding) -> np.ndarray:
    """The convolution by its definition, in float64: out[n, i, o] = sum over k, c of
    x_padded[n, i * stride + k, c] * w[k, c, o]."""
    spatial = x.ndim - 2
    kernel = w.shape[:spatial]
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(x.shape[1:-1], kernel, (stride,) * spatial, padding)
    padded = np.pad(x.astype(np.float64), [(0, 0), *padding, (0, 0)])
    out_shape = [(padded.shape[1 + d] - kernel[d]) // stride + 1 for d in range(spatial)]
    out = np.zeros((x.shape[0], *out_shape, w.shape[-1]))
    for index in itertools.product(*(range(n) for n in out_shape)):
        window = tuple(slice(i * stride, i * stride + k) for i, k in zip(index, kernel))
        patch = padded[(slice(None), *window, slice(None))]
        out[(slice(None), *index, slice(None))] = np.tensordot(patch, w.astype(np.float64), axes=spatial + 1)
    return out


def rounding_bound(x: np.ndarray, w: np.ndarray, stride: int, padding) -> np.ndarray:
    """The most two float32 evaluations of the convolution may differ by, elementwise, whatever order
    each sums in: an output sums K = (kernel size x input channels) float32 products, so each evaluation
    lies within gamma_K * sum |x w| of the exact value (gamma_K = K u / (1 - K u), u = 2**-24; Higham,
    Accuracy and Stability of Numerical Algorithms, sec. 3.1), and two of them within twice that. A
    bound from the arithmetic, not from one CPU's kernels: it holds for any vector width."""
    k = np.prod(w.shape[:-1])
    u = np.finfo(np.float32).eps / 2
    return 2 * k * u / (1 - k * u) * reference(np.abs(x), np.abs(w), stride, padding)


def xla(h, w, stride, padding):
    """XLA's convolution of channels-last ``h`` by ``w`` (``*spatial, C_in, C_out``); ``stride`` one for
    every spatial axis, or a tuple of them."""
    spatial = h.ndim - 2
    strides = (stride,) * spatial if isinstance(stride, int) else tuple(stride)
    return jax.lax.conv_general_dilated(h, w.astype(h.dtype), strides, padding, dimension_numbers={
        1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}[spatial])


def conv(how):
    """The convolution of ``CASES`` in the form ``how``: XLA's, or XLA's rewritten to another kernel."""
    return xla if how == "xla" else convolution.with_kernel(xla, how)


def inputs(case, seed=0):
    x_shape, w_shape, _, _ = case
    rng = np.random.default_rng(seed)
    return rng.normal(size=x_shape).astype(np.float32), rng.normal(size=w_shape).astype(np.float32)


@pytest.mark.parametrize("how", FORMS)
@pytest.mark.parametrize("case", CASES, ids=[f"{len(c[0]) - 2}d-s{c[2]}-{c[3]}" for c in CASES])
def test_every_kernel_equals_the_float64_definition_forward_and_gradient(case, how):
    x, w = inputs(case)
    _, _, stride, padding = case
    out = np.asarray(conv(how)(jnp.asarray(x), jnp.asarray(w), stride, padding))
    expected = reference(x, w, stride, padding)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # The gradient of <conv(x, w), g> is the reference's own adjoint: compare to central differences
    # of the float64 reference along a random direction, for the input and the kernel.
    g = np.random.default_rng(1).normal(size=expected.shape)
    grad_x, grad_w = jax.grad(lambda a, b: jnp.sum(conv(how)(a, b, stride, padding) * g), (0, 1))(
        jnp.asarray(x), jnp.asarray(w))
    for value, grad, wrt in ((x, grad_x, 0), (w, grad_w, 1)):
        direction = np.random.default_rng(2).normal(size=value.shape)
        def along(t):
            moved = [x.astype(np.float64), w.astype(np.float64)]
            moved[wrt] = moved[wrt] + t * direction
            return np.sum(reference(*moved, stride, padding) * g)
        numeric = (along(1e-3) - along(-1e-3)) / 2e-3  # exact up to rounding: the map is linear
        assert np.sum(np.asarray(grad, np.float64) * direction) == pytest.approx(numeric, rel=1e-4)


@pytest.mark.parametrize("how", FORMS[1:])
@pytest.mark.parametrize("case", CASES[1:4], ids=["3x3-same", "3x3-s1", "3x3-s2"])
def test_the_forms_agree_with_xlas_to_float32_rounding_and_in_bfloat16(case, how):
    x, w = inputs(case, seed=3)
    _, _, stride, padding = case
    a, b = (np.asarray(conv(form)(jnp.asarray(x), jnp.asarray(w), stride, padding)) for form in ("xla", how))
    scale = np.abs(reference(x, w, stride, padding)).max()
    assert (np.abs(a - b) <= rounding_bound(x, w, stride, padding)).all()
    # oneDNN's bfloat16 kernels need AVX-512 or newer; without them the rewrite keeps XLA's (a fallback: still right).
    low = [conv(form)(jnp.asarray(x, jnp.bfloat16), jnp.asarray(w), stride, padding) for form in ("xla", how)]
    assert all(o.dtype == jnp.bfloat16 for o in low)
    exact = reference(np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32), np.asarray(jnp.asarray(w, jnp.bfloat16), np.float32),
                      stride, padding)
    for o in low:  # the inputs rounded to bfloat16, the sum accumulated in float32, the output rounded once
        np.testing.assert_allclose(np.asarray(o, np.float32), exact, rtol=2 ** -7, atol=2 ** -7 * scale)


@pytest.mark.parametrize("how", FORMS[1:])
def test_vmapped_over_runs_a_run_depends_on_its_kernel_only(how):
    x, w = inputs(CASES[3], seed=4)
    pads = [(1, 1), (1, 1)]

    def block(scales):
        kernels = jnp.stack([jnp.asarray(w) * s for s in scales])
        return np.asarray(jax.vmap(lambda k: conv(how)(jnp.asarray(x), k, 2, pads))(kernels))

    first, other = block((1.0, -0.5, 2.0)), block((1.0, 3.0, 0.25))
    # A batched product rounds as the single one may not; a run's numbers depend on the block size
    # (bnbench.engine.blocks' fixed blocks), never on its neighbours.
    np.testing.assert_array_equal(first[0], other[0])
    alone = np.asarray(conv(how)(jnp.asarray(x), jnp.asarray(w), 2, pads))
    assert (np.abs(first[0] - alone) <= rounding_bound(x, w, 2, pads)).all()


@pytest.mark.parametrize("how", FORMS[1:])
def test_the_rewrite_covers_every_layout_and_leaves_no_convolution(how):
    x, w = inputs(CASES[3], seed=5)

    def nchw(h, k):  # an equinox-style convolution: channels first, kernel OIHW
        return jax.lax.conv_general_dilated(h, k, (2, 2), [(1, 1), (1, 1)], dimension_numbers=("NCHW", "OIHW", "NCHW"))

    h, k = jnp.asarray(x.transpose(0, 3, 1, 2)), jnp.asarray(w.transpose(3, 2, 0, 1))
    rewritten = convolution.with_kernel(jax.jit(nchw), how)  # through a jit, as library code calls it
    difference = np.abs(np.asarray(rewritten(h, k)) - np.asarray(nchw(h, k))).transpose(0, 2, 3, 1)
    assert (difference <= rounding_bound(x, w, 2, [(1, 1), (1, 1)])).all()
    primitives = {e.primitive.name for e in jax.make_jaxpr(rewritten)(h, k).jaxpr.eqns}
    assert "conv_general_dilated" not in primitives
    assert {"patches": "dot_general", "onednn": "custom_vjp_call"}[how] in primitives
    # Dilated convolutions are not patches: they stay XLA's, and stay right.
    dilated = lambda a, b: jax.lax.conv_general_dilated(a, b, (1, 1), "SAME", rhs_dilation=(2, 2),
                                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    a, b = jnp.asarray(x), jnp.asarray(w)
    np.testing.assert_array_equal(np.asarray(convolution.with_kernel(dilated, how)(a, b)), np.asarray(dilated(a, b)))


@pytest.mark.parametrize("how", FORMS[1:])
def test_a_resnet_rewritten_trains_as_the_original_to_float32_rounding(how):
    from bnbench.models import make_model

    model = make_model("resnet", input_shape=(8, 8, 3), widths=(4, 8, 8), num_classes=3, depth=8, shortcut="projection")
    params, state = model.init(jax.random.PRNGKey(0))
    x = jnp.asarray(np.random.default_rng(6).normal(size=(4, 8, 8, 3)), jnp.float32)

    def loss(apply, p):
        logits, new_state = apply(p, state, x, train=True, bn_settings=BNSettings(momentum=0.9))
        return jnp.sum(logits ** 2), new_state

    rewritten = convolution.with_kernel(model.apply, how)
    # jitted, as the engine runs them (and one compilation each, not one per operation)
    (value, new), grads = jax.jit(jax.value_and_grad(lambda p: loss(model.apply, p), has_aux=True))(params)
    (value_p, new_p), grads_p = jax.jit(jax.value_and_grad(lambda p: loss(rewritten, p), has_aux=True))(params)
    assert float(value_p) == pytest.approx(float(value), rel=1e-5)
    for a, b in zip(jax.tree.leaves((grads, new)), jax.tree.leaves((grads_p, new_p))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-4, atol=2e-5 * max(1.0, float(jnp.abs(a).max())))
    assert "conv_general_dilated" not in str(jax.make_jaxpr(lambda p: loss(rewritten, p))(params))
