"""BN variants (ghost BN, Batch Renormalization, unbiased running variance) and GroupNorm/LayerNorm
against float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnbench.norm import bn
from bnbench.norm import per_example
from test_bn import random_inputs, reference_bn

pytestmark = pytest.mark.unit


def test_ghost_batches_are_normalized_separately_and_the_ema_averages_their_statistics():
    x, params, state = random_inputs((12, 3, 4), seed=10)
    eps, momentum = 1e-3, 0.8
    y, new_state = bn.batch_norm(x, params, state, train=True, momentum=momentum, epsilon=eps, ghost_batch_size=4)
    parts = [reference_bn(x[i : i + 4], params.scale, params.offset, eps) for i in range(0, 12, 4)]
    np.testing.assert_allclose(y, np.concatenate([p[0] for p in parts]), rtol=1e-5, atol=1e-5)
    mean_ref = np.mean([p[1] for p in parts], axis=0)
    var_ref = np.mean([p[2] for p in parts], axis=0)
    np.testing.assert_allclose(new_state.mean, momentum * np.asarray(state.mean) + (1 - momentum) * mean_ref, rtol=1e-5)
    np.testing.assert_allclose(new_state.var, momentum * np.asarray(state.var) + (1 - momentum) * var_ref, rtol=1e-5)
    # Whole-batch BN would differ: the sub-batches have their own statistics.
    whole, _ = bn.batch_norm(x, params, state, train=True, epsilon=eps)
    assert np.abs(np.asarray(whole) - np.asarray(y)).max() > 1e-2


def test_ghost_gradients_match_float64_sub_batch_by_sub_batch():
    x, params, state = random_inputs((12, 2, 3), seed=15)
    weights = np.random.default_rng(16).normal(size=x.shape)

    def loss(x, scale, offset):
        y, _ = bn.batch_norm(x, bn.BNParams(scale, offset), state, train=True, epsilon=1e-3, ghost_batch_size=4)
        return jnp.sum(jnp.asarray(weights, jnp.float32) * y)

    def reference_loss(x, scale, offset):
        ghosts = x.reshape(3, 4, 2, 3)
        mean = ghosts.mean(axis=(1, 2), keepdims=True)
        var = ((ghosts - mean) ** 2).mean(axis=(1, 2), keepdims=True)
        y = scale * (ghosts - mean) / jnp.sqrt(var + 1e-3) + offset
        return jnp.sum(weights * y.reshape(x.shape))

    grads = jax.grad(loss, argnums=(0, 1, 2))(x, params.scale, params.offset)
    with jax.enable_x64(True):
        args = [np.asarray(a, np.float64) for a in (x, params.scale, params.offset)]
        ref = [np.asarray(g) for g in jax.grad(reference_loss, argnums=(0, 1, 2))(*args)]
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-4 * np.abs(r).max())


def test_ghost_batch_size_must_divide_the_batch():
    x, params, state = random_inputs((10, 3))
    with pytest.raises(ValueError, match="does not divide"):
        bn.batch_norm(x, params, state, train=True, ghost_batch_size=4)


def reference_renorm(x, scale, offset, running_mean, running_var, eps, rmax, dmax):
    """Float64 Batch Renormalization forward (Ioffe 2017, Algorithm 1), training mode."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    sigma_b = np.sqrt(((x - mean) ** 2).mean(axis=axes) + eps)
    sigma = np.sqrt(np.asarray(running_var, np.float64) + eps)
    r = np.clip(sigma_b / sigma, 1 / rmax, rmax)
    d = np.clip((mean - np.asarray(running_mean, np.float64)) / sigma, -dmax, dmax)
    return np.asarray(scale, np.float64) * ((x - mean) / sigma_b * r + d) + np.asarray(offset, np.float64), r, d


@pytest.mark.parametrize("rmax, dmax", [(1.5, 0.5), (100.0, 100.0)])
def test_renorm_forward_matches_float64(rmax, dmax):
    x, params, state = random_inputs((64, 5), seed=11)
    state = state._replace(var=state.var * 4)  # batch and running scales differ: r and d are not 1 and 0
    y, new_state = bn.batch_norm(
        x, params, state, train=True, epsilon=1e-3, momentum=0.9, renorm=True, renorm_rmax=rmax, renorm_dmax=dmax
    )
    y_ref, r, d = reference_renorm(x, params.scale, params.offset, state.mean, state.var, 1e-3, rmax, dmax)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    if rmax == 1.5:
        assert (r == 1.5).any() or (r == 1 / 1.5).any(), "the test should exercise the clipping"
        assert (np.abs(d) == 0.5).any()
    # The running statistics are those of plain BN.
    _, plain_state = bn.batch_norm(x, params, state, train=True, epsilon=1e-3, momentum=0.9)
    np.testing.assert_allclose(new_state.mean, plain_state.mean, rtol=1e-6)
    np.testing.assert_allclose(new_state.var, plain_state.var, rtol=1e-6)


def test_renorm_with_running_statistics_equal_to_the_batch_ones_is_plain_bn():
    x, params, _ = random_inputs((32, 4), seed=12)
    _, mean, var = reference_bn(x, params.scale, params.offset, 1e-3)
    state = bn.BNState(jnp.asarray(mean, jnp.float32), jnp.asarray(var, jnp.float32), jnp.asarray(0))
    y, _ = bn.batch_norm(x, params, state, train=True, epsilon=1e-3, renorm=True)
    y_plain, _ = bn.batch_norm(x, params, state, train=True, epsilon=1e-3)
    np.testing.assert_allclose(y, y_plain, rtol=1e-5, atol=1e-5)


def test_renorm_gradients_treat_r_and_d_as_constants():
    x, params, state = random_inputs((16, 3), seed=13)
    state = state._replace(var=state.var * 3)
    weights = np.random.default_rng(14).normal(size=x.shape)
    eps, rmax, dmax = 1e-3, 1.2, 0.3

    def loss(x, scale, offset):
        y, _ = bn.batch_norm(
            x, bn.BNParams(scale, offset), state, train=True, epsilon=eps, renorm=True, renorm_rmax=rmax, renorm_dmax=dmax
        )
        return jnp.sum(jnp.asarray(weights, jnp.float32) * y)

    def reference_loss(x, scale, offset, running_mean, running_var):
        mean = x.mean(axis=0)
        sigma_b = jnp.sqrt(((x - mean) ** 2).mean(axis=0) + eps)
        sigma = jnp.sqrt(running_var + eps)
        r = jax.lax.stop_gradient(jnp.clip(sigma_b / sigma, 1 / rmax, rmax))
        d = jax.lax.stop_gradient(jnp.clip((mean - running_mean) / sigma, -dmax, dmax))
        return jnp.sum(weights * (scale * ((x - mean) / sigma_b * r + d) + offset))

    grads = jax.grad(loss, argnums=(0, 1, 2))(x, params.scale, params.offset)
    with jax.enable_x64(True):
        args = [np.asarray(a, np.float64) for a in (x, params.scale, params.offset, state.mean, state.var)]
        ref = [np.asarray(g) for g in jax.grad(reference_loss, argnums=(0, 1, 2))(*args)]
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-4 * np.abs(r).max())


@pytest.mark.parametrize("shape, ghost", [((20, 3), None), ((8, 5, 3), None), ((8, 5, 3), 2)])
def test_unbiased_running_variance_uses_bessels_correction(shape, ghost):
    x, params, state = random_inputs(shape, seed=15)
    _, biased = bn.batch_norm(x, params, state, train=True, momentum=0.0, ghost_batch_size=ghost)
    y_unbiased, unbiased = bn.batch_norm(
        x, params, state, train=True, momentum=0.0, ghost_batch_size=ghost, running_var="unbiased"
    )
    per_batch = (ghost or shape[0]) * int(np.prod(shape[1:-1]))
    groups = np.split(np.asarray(x, np.float64), shape[0] // (ghost or shape[0]))
    reduce = tuple(range(len(shape) - 1))
    expected = np.mean([g.var(axis=reduce, ddof=1) for g in groups], axis=0)
    np.testing.assert_allclose(unbiased.var, expected, rtol=1e-5)
    np.testing.assert_allclose(unbiased.var, np.asarray(biased.var) * per_batch / (per_batch - 1), rtol=1e-6)
    # Training normalizes with the biased variance either way.
    y_biased, _ = bn.batch_norm(x, params, state, train=True, ghost_batch_size=ghost)
    np.testing.assert_array_equal(y_unbiased, y_biased)


def reference_group_norm(x, scale, offset, groups, eps):
    x = np.asarray(x, np.float64)
    n, c = x.shape[0], x.shape[-1]
    xg = x.reshape(n, -1, groups, c // groups)
    mean = xg.mean(axis=(1, 3), keepdims=True)
    var = xg.var(axis=(1, 3), keepdims=True)
    return ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape) * np.asarray(scale) + np.asarray(offset)


@pytest.mark.parametrize("shape, groups", [((6, 8), 4), ((4, 7, 6), 3), ((3, 5, 4, 8), 2), ((3, 5, 4, 8), 8)])
def test_group_norm_matches_float64(shape, groups):
    x, params, _ = random_inputs(shape, seed=16)
    y = per_example.group_norm(x, params, groups=groups, epsilon=1e-3)
    np.testing.assert_allclose(y, reference_group_norm(x, params.scale, params.offset, groups, 1e-3), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(6, 8), (3, 5, 4, 8)])
def test_layer_norm_normalizes_each_example_over_all_features(shape):
    x, params, _ = random_inputs(shape, seed=17)
    x = x + np.arange(shape[0], dtype=np.float32).reshape(-1, *[1] * (len(shape) - 1)) * 1000  # per-example means
    y = per_example.layer_norm(x, params, epsilon=1e-5)
    x64 = x.astype(np.float64).reshape(shape[0], -1)
    ref = ((x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)).reshape(shape)
    np.testing.assert_allclose(y, ref * np.asarray(params.scale) + np.asarray(params.offset), rtol=1e-4, atol=1e-4)


def test_group_norm_gradients_match_float64_autodiff():
    x, params, _ = random_inputs((4, 3, 6), seed=18)
    weights = np.random.default_rng(19).normal(size=x.shape)

    def loss(x, scale, offset):
        return jnp.sum(jnp.asarray(weights, jnp.float32) * per_example.group_norm(x, bn.BNParams(scale, offset), groups=2, epsilon=1e-3))

    def reference_loss(x, scale, offset):
        xg = x.reshape(4, -1, 2, 3)
        mean = xg.mean(axis=(1, 3), keepdims=True)
        var = ((xg - mean) ** 2).mean(axis=(1, 3), keepdims=True)
        return jnp.sum(weights * (((xg - mean) / jnp.sqrt(var + 1e-3)).reshape(x.shape) * scale + offset))

    grads = jax.grad(loss, argnums=(0, 1, 2))(x, params.scale, params.offset)
    with jax.enable_x64(True):
        ref = jax.grad(reference_loss, argnums=(0, 1, 2))(*(np.asarray(a, np.float64) for a in (x, params.scale, params.offset)))
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, np.asarray(r), rtol=2e-4, atol=2e-4 * np.abs(np.asarray(r)).max())


def test_group_norm_does_not_depend_on_the_rest_of_the_batch():
    x, params, _ = random_inputs((8, 6), seed=20)
    full = per_example.group_norm(x, params, groups=3, epsilon=1e-5)
    alone = per_example.group_norm(x[:1], params, groups=3, epsilon=1e-5)
    np.testing.assert_allclose(full[:1], alone, rtol=1e-6)


def test_group_norm_rejects_groups_that_do_not_divide_the_channels():
    x, params, _ = random_inputs((4, 6))
    with pytest.raises(ValueError, match="does not divide"):
        per_example.group_norm(x, params, groups=4, epsilon=1e-5)
