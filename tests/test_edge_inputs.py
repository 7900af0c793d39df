"""Inputs that other libraries' BN test suites probe: empty batches, complex dtypes, a huge mean."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnbench.norm import bn
from bnbench.norm import per_example

pytestmark = pytest.mark.unit


def _params_state(channels: int):
    params = bn.BNParams(scale=jnp.linspace(0.5, 2.0, channels), offset=jnp.linspace(-1.0, 1.0, channels))
    state = bn.BNState(mean=jnp.full((channels,), 0.3), var=jnp.full((channels,), 1.7), count=jnp.asarray(5, jnp.int32))
    return params, state


@pytest.mark.parametrize("shape, ghost", [((0, 4), None), ((0, 3, 3, 4), None), ((2, 0, 4), None), ((0, 4), 2)])
def test_empty_batch_gives_empty_output_unchanged_state_and_zero_gradients(shape, ghost):
    params, state = _params_state(4)
    x = jnp.zeros(shape, jnp.float32)
    y, new_state = bn.batch_norm(x, params, state, train=True, momentum=0.5, ghost_batch_size=ghost)
    assert y.shape == shape and y.dtype == jnp.float32
    for new, old in zip(new_state, state):
        np.testing.assert_array_equal(new, old)

    def loss(p):
        return bn.batch_norm(x, p, state, train=True)[0].sum()

    grads = jax.grad(loss)(params)
    np.testing.assert_array_equal(grads.scale, np.zeros(4))
    np.testing.assert_array_equal(grads.offset, np.zeros(4))
    assert bn.batch_norm(x, params, state, train=False)[0].shape == shape


def test_empty_batch_matches_pytorch():
    torch = pytest.importorskip("torch")
    layer = torch.nn.BatchNorm1d(4)
    before = layer.running_mean.clone(), layer.running_var.clone()
    out = layer.train()(torch.zeros(0, 4))
    assert tuple(out.shape) == (0, 4)
    assert torch.equal(layer.running_mean, before[0]) and torch.equal(layer.running_var, before[1])
    params, state = bn.init(4)
    y, new_state = bn.batch_norm(jnp.zeros((0, 4)), params, state, train=True)
    assert y.shape == tuple(out.shape)
    np.testing.assert_array_equal(new_state.mean, before[0].numpy())
    np.testing.assert_array_equal(new_state.var, before[1].numpy())


@pytest.mark.parametrize("fn", [lambda x, p: per_example.group_norm(x, p, groups=2, epsilon=1e-5), lambda x, p: per_example.layer_norm(x, p, epsilon=1e-5)])
def test_group_and_layer_norm_of_an_empty_batch_are_empty(fn):
    params, _ = bn.init(4)
    for shape in ((0, 4), (0, 5, 5, 4)):
        y = fn(jnp.zeros(shape, jnp.bfloat16), params)
        assert y.shape == shape and y.dtype == jnp.bfloat16


def test_complex_inputs_are_refused_with_a_clear_error():
    params, state = bn.init(3)
    x = jnp.ones((4, 3), jnp.complex64)
    for train in (True, False):
        with pytest.raises(TypeError, match="complex input"):
            bn.batch_norm(x, params, state, train=train)
    with pytest.raises(TypeError, match="complex input"):
        per_example.group_norm(x, params, groups=1, epsilon=1e-5)


def test_output_is_exact_at_a_mean_of_a_million_in_float32():
    """mean 1e6, std 1: float32 rounds the mean to a multiple of 1/16, and subtracting that rounded mean
    shifts every output by up to 0.03; normalizing as (x - shift) - mean_offset keeps it at float32
    rounding of the centered values."""
    rng = np.random.default_rng(21)
    x = (1e6 + rng.normal(size=(4096, 3))).astype(np.float32)
    params, state = bn.init(3)
    y, new_state = bn.batch_norm(x, params, state, train=True, momentum=0.0)
    x64 = x.astype(np.float64)
    reference = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-5)
    error = np.abs(np.asarray(y, np.float64) - reference).max()
    assert error < 2e-3, error
    # What the fix removed: x - mean with the mean rounded to float32 is off by far more.
    rounded = (x64 - np.float32(x64.mean(0))) / np.sqrt(x64.var(0) + 1e-5)
    assert np.abs(rounded - reference).max() > 5 * error
    np.testing.assert_allclose(new_state.var, x64.var(0), rtol=1e-3)

    weights = rng.normal(size=x.shape)
    grad = np.asarray(jax.grad(lambda z: (bn.batch_norm(z, params, state, train=True)[0] * weights).sum())(jnp.asarray(x)))
    with jax.enable_x64():
        z64 = jnp.asarray(x64)
        grad64 = np.asarray(jax.grad(lambda z: ((z - z.mean(0)) / jnp.sqrt(z.var(0) + 1e-5) * weights).sum())(z64))
    assert np.abs(grad - grad64).max() < 1e-3 * np.abs(grad64).max()
