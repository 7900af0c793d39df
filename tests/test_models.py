"""Models: placement really changes the order of BN and activation; shapes of the MLP and CNN."""

import jax
import numpy as np
import pytest

from bnbench.models import Normalization, make_model

pytestmark = pytest.mark.unit


def numpy_block(h, placement, act):
    """One hidden block in float64 NumPy, BN in training mode with identity scale/offset, eps 1e-5."""

    def norm(z):
        return (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)

    if placement == "pre":
        return act(norm(h))
    if placement == "post":
        return norm(act(h))
    return act(h)


@pytest.mark.parametrize("placement", ["pre", "post", "none"])
def test_mlp_matches_numpy_for_each_placement(placement):
    model = make_model(
        "mlp", input_shape=(6,), widths=(5, 4), num_classes=3, activation="sigmoid", placement=placement
    )
    params, state = model.init(jax.random.PRNGKey(0))
    x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    logits, new_state = model.apply(params, state, x, train=True)
    h = x.astype(np.float64)
    for layer in params["layers"]:
        h = numpy_block(h @ np.asarray(layer["w"]) + np.asarray(layer["b"]), placement, lambda z: 1 / (1 + np.exp(-z)))
    expected = h @ np.asarray(params["head"]["w"]) + np.asarray(params["head"]["b"])
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    assert len(new_state) == (0 if placement == "none" else 2)


def test_pre_and_post_give_different_outputs_from_the_same_weights():
    outputs = {}
    for placement in ("pre", "post"):
        model = make_model("mlp", input_shape=(6,), widths=(8,), num_classes=2, activation="relu", placement=placement)
        params, state = model.init(jax.random.PRNGKey(1))
        x = np.random.default_rng(1).normal(size=(32, 6)).astype(np.float32)
        outputs[placement] = (np.asarray(model.apply(params, state, x, train=True)[0]), params["layers"][0]["w"])
    np.testing.assert_array_equal(outputs["pre"][1], outputs["post"][1])  # same weights for a given seed
    assert np.abs(outputs["pre"][0] - outputs["post"][0]).max() > 0.1


@pytest.mark.parametrize("input_shape", [(40,), (40, 1), (12, 12, 3)])
def test_cnn_shapes_and_bn_state_per_channel(input_shape):
    model = make_model("cnn", input_shape=input_shape, widths=(4, 6), num_classes=10, activation="relu", placement="pre")
    params, state = model.init(jax.random.PRNGKey(0))
    x = np.random.default_rng(2).normal(size=(5, *input_shape)).astype(np.float32)
    logits, new_state = model.apply(params, state, x, train=True)
    assert logits.shape == (5, 10)
    assert [s.mean.shape for s in new_state] == [(4,), (6,)]
    assert [int(s.count) for s in new_state] == [1, 1]
    eval_logits, eval_state = model.apply(params, new_state, x, train=False)
    assert eval_logits.shape == (5, 10) and [int(s.count) for s in eval_state] == [1, 1]


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_norm_none_is_the_no_normalization_baseline_whatever_the_placement(placement):
    kwargs = dict(input_shape=(6,), widths=(5, 4), num_classes=3, activation="tanh")
    x = np.random.default_rng(1).normal(size=(8, 6)).astype(np.float32)
    baseline = make_model("mlp", placement="none", **kwargs)
    params, _ = baseline.init(jax.random.PRNGKey(0))
    model = make_model("mlp", placement=placement, norm=Normalization(kind="none"), **kwargs)
    own_params, state = model.init(jax.random.PRNGKey(0))
    assert state == [] and own_params["norm"] == []
    np.testing.assert_array_equal(model.apply(own_params, state, x, train=True)[0], baseline.apply(params, [], x, train=True)[0])
