"""ResNet and VGG: parameter counts, each residual unit's order of operations against an independent
re-implementation, identity at initialization for Fixup and SkipInit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnbench.models import Normalization, make_model, num_params
from bnbench.options import RESIDUAL_UNITS

pytestmark = pytest.mark.unit


def hand_count(depth, widths=(16, 32, 64), channels_in=3, classes=10):
    """Learned parameters of the option-A ResNet with BN, counted from the paper's description: the 3x3
    stem, two 3x3 convolutions per unit, scale and offset per channel of every BN, the dense head."""
    n = (depth - 2) // 6
    total, c = 9 * channels_in * widths[0] + 2 * widths[0], widths[0]
    for width in widths:
        total += 9 * c * width + 9 * width * width * (2 * n - 1) + 2 * width * 2 * n
        c = width
    return total + c * classes + classes


@pytest.mark.parametrize("depth, published", [(20, 0.27), (56, 0.85), (110, 1.7)])
def test_resnet_parameter_counts_match_the_paper(depth, published):
    count = num_params("resnet", input_shape=(32, 32, 3), widths=(16, 32, 64), num_classes=10, depth=depth)
    assert count == hand_count(depth)
    # He et al. 2016 (Table 6) give the counts to two significant digits.
    assert round(count / 1e6, 2 if published < 1 else 1) == published


def test_projection_shortcuts_add_a_convolution_and_a_norm_per_stage_transition():
    options = dict(input_shape=(32, 32, 3), widths=(16, 32, 64), num_classes=10, depth=20)
    extra = num_params("resnet", shortcut="projection", **options) - num_params("resnet", **options)
    assert extra == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_vgg_parameter_count_and_output_shape():
    widths = (8, 16, 16, 32, 32)
    convs = [(3, 8), (8, 16), (16, 16), (16, 16), (16, 32), (32, 32), (32, 32), (32, 32)]  # VGG-11: 1,1,2,2,2
    expected = sum(9 * a * b + b + 2 * b for a, b in convs) + 32 * 10 + 10  # 32x32 pooled 5 times: 1x1
    assert num_params("vgg", input_shape=(32, 32, 3), widths=widths, num_classes=10, depth=11) == expected
    model = make_model("vgg", input_shape=(28, 28, 1), widths=widths, num_classes=10, depth=16)
    params, state = model.init(jax.random.PRNGKey(0))
    logits, new_state = model.apply(params, state, jnp.ones((2, 28, 28, 1)), train=True)
    assert logits.shape == (2, 10) and model.hidden_layers == 13 and len(new_state) == 13


def reference_resnet(params, x, unit, shortcut, eps=1e-5):
    """ResNet-8 in training mode written from He et al. 2016, Fig. 4, independently of bnbench: BN with
    batch statistics, ReLU; layers and norm layers consumed in forward order."""
    layers = [p["w"] for p in params["layers"]]
    norms = params["norm"]

    def bn(h, j):
        mean, var = h.mean((0, 1, 2)), h.var((0, 1, 2))
        return (h - mean) / jnp.sqrt(var + eps) * norms[j].scale + norms[j].offset

    def conv(h, j, stride=1):
        pad = (layers[j].shape[0] - 1) // 2
        return jax.lax.conv_general_dilated(h, layers[j], (stride, stride), [(pad, pad)] * 2,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    relu = jax.nn.relu
    preact = unit in ("relu_preact", "full_preact")
    li, ni = 1, 0
    h = conv(x, 0)
    if not preact:
        h, ni = relu(bn(h, 0)), 1
    c = h.shape[-1]
    for stage, width in enumerate((4, 8, 8)):
        stride = 2 if stage else 1
        c1, c2, n1, n2 = li, li + 1, ni, ni + 1
        li, ni = li + 2, ni + 2
        needs = stride != 1 or c != width
        if needs and shortcut == "projection" and unit != "none":
            s = bn(conv(h, li, stride), ni)
            li, ni = li + 1, ni + 1
        elif needs:
            s = jnp.pad(h[:, ::stride, ::stride], [(0, 0)] * 3 + [(0, width - c)])
        else:
            s = h
        if unit == "original":
            h = relu(s + bn(conv(relu(bn(conv(h, c1, stride), n1)), c2), n2))
        elif unit == "bn_after_add":
            h = relu(bn(s + conv(relu(bn(conv(h, c1, stride), n1)), c2), n2))
        elif unit == "relu_before_add":
            h = s + relu(bn(conv(relu(bn(conv(h, c1, stride), n1)), c2), n2))
        elif unit == "relu_preact":
            h = s + bn(conv(relu(bn(conv(relu(h), c1, stride), n1)), c2), n2)
        elif unit == "full_preact":
            h = s + conv(relu(bn(conv(relu(bn(h, n1)), c1, stride), n2)), c2)
        else:
            h = relu(bn(conv(relu(bn(conv(h, c1, stride), n1)), c2), n2))
        c = width
    if preact:
        h = relu(bn(h, ni))
    return h.mean((1, 2)) @ params["head"]["w"] + params["head"]["b"]


def random_norm_params(params, key):
    """BN scale and offset away from 1 and 0, so that where a norm layer sits changes the output."""
    keys = jax.random.split(key, len(params["norm"]))
    params["norm"] = [
        type(p)(1 + 0.5 * jax.random.normal(k, p.scale.shape), 0.5 * jax.random.normal(jax.random.fold_in(k, 1), p.offset.shape))
        for p, k in zip(params["norm"], keys)
    ]
    return params


@pytest.mark.parametrize("shortcut", ["pad", "projection"])
def test_each_residual_unit_computes_its_arrangement(shortcut):
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, 3))
    outputs = {}
    for unit in RESIDUAL_UNITS:
        model = make_model("resnet", input_shape=(8, 8, 3), widths=(4, 8, 8), num_classes=5, depth=8,
                           residual_unit=unit, shortcut=shortcut)
        params, state = model.init(jax.random.PRNGKey(0))
        params = random_norm_params(params, jax.random.PRNGKey(2))
        logits, _ = model.apply(params, state, x, train=True)
        np.testing.assert_allclose(logits, reference_resnet(params, x, unit, shortcut), rtol=2e-4, atol=2e-4)
        outputs[unit] = np.asarray(logits)
    # The arrangements are distinct computations: no two give the same output.
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(outputs[a] - outputs[b]).max() > 1e-2, (a, b)


@pytest.mark.parametrize("init", ["fixup", "skipinit"])
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_fixup_and_skipinit_units_are_the_identity_at_initialization(init, norm):
    model = make_model("resnet", input_shape=(8, 8, 3), widths=(4, 4, 4), num_classes=5, depth=14, init=init,
                       norm=Normalization(norm))
    params, state = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 8, 8, 3))
    preacts = model.preactivations(params, state, x)
    # Inputs to the activations: the stem's, then per unit the branch's and the sum's (original unit).
    unit_inputs = [jax.nn.relu(preacts[0])] + [jax.nn.relu(p) for p in preacts[2::2]]
    sums = preacts[2::2]
    for k, (before, after) in enumerate(zip(unit_inputs, sums)):
        if before.shape == after.shape:  # same-shape units (the pad shortcut elsewhere)
            np.testing.assert_array_equal(after, before, err_msg=f"unit {k}")
        else:
            padded = jnp.pad(before[:, ::2, ::2], [(0, 0)] * 3 + [(0, after.shape[-1] - before.shape[-1])])
            np.testing.assert_array_equal(after, padded, err_msg=f"unit {k}")
    if init == "fixup":  # the head starts at zero too
        logits, _ = model.apply(params, state, x, train=False)
        np.testing.assert_array_equal(logits, 0)


def test_fixup_rescales_the_first_convolution_of_each_branch():
    options = dict(input_shape=(8, 8, 3), widths=(4, 4, 4), num_classes=5, depth=14)
    default, _ = make_model("resnet", **options).init(jax.random.PRNGKey(0))
    fixup, _ = make_model("resnet", init="fixup", **options).init(jax.random.PRNGKey(0))
    branches = 3 * 2  # L = 3n, n = 2
    for first in range(1, 13, 2):  # each unit's first convolution (layer 0 is the stem)
        np.testing.assert_allclose(fixup["layers"][first]["w"], default["layers"][first]["w"] * branches ** -0.5, rtol=1e-6)
        np.testing.assert_array_equal(fixup["layers"][first + 1]["w"], 0)


@pytest.mark.parametrize("init", ["default", "fixup", "skipinit"])
def test_bfloat16_computes_in_bfloat16_and_keeps_float32_parameters_and_statistics(init):
    model = make_model("resnet", input_shape=(8, 8, 3), widths=(4, 4, 4), num_classes=5, depth=8, dtype="bfloat16",
                       init=init)
    params, state = model.init(jax.random.PRNGKey(0))
    x = jnp.ones((4, 8, 8, 3))
    jaxpr = jax.make_jaxpr(lambda p, s: model.apply(p, s, x, train=True))(params, state)
    convs = [e for e in jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert convs and all(v.aval.dtype == jnp.bfloat16 for e in convs for v in e.invars)
    logits, new_state = model.apply(params, state, x, train=True)
    grads = jax.grad(lambda p: model.apply(p, state, x, train=True)[0].sum())(params)
    assert logits.dtype == jnp.float32
    floats = {leaf.dtype for leaf in jax.tree_util.tree_leaves((params, grads, new_state)) if jnp.issubdtype(leaf.dtype, jnp.floating)}
    assert floats == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize(
    "norm, bn_layers",
    [(Normalization("group", groups=2), 0), (Normalization("layer"), 0), (Normalization(ghost_batch_size=4), 9),
     (Normalization(renorm=True), 9), (Normalization("none"), 0)],
    ids=["group", "layer", "ghost", "renorm", "none"],
)
def test_every_norm_layer_of_a_resnet_is_the_chosen_norm(norm, bn_layers):
    model = make_model("resnet", input_shape=(8, 8, 3), widths=(4, 8, 8), num_classes=5, depth=8, norm=norm,
                       shortcut="projection")
    params, state = model.init(jax.random.PRNGKey(0))
    assert model.bn_layers == len(state) == bn_layers
    assert len(params["norm"]) == (0 if norm.kind == "none" else 9)  # stem, 2 per unit, 2 projections
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, 3))
    logits, new_state = model.apply(params, state, x, train=True)
    assert np.isfinite(np.asarray(logits)).all() and len(new_state) == bn_layers
    if norm.kind == "group":  # per-example: an example's output does not depend on the rest of the batch
        alone, _ = model.apply(params, state, x[:1], train=True)
        np.testing.assert_allclose(alone, logits[:1], rtol=1e-5, atol=1e-5)
