"""BN against float64 references: forward, statistics, EMA, eval mode, gradients, dtypes, numerics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnbench.norm import bn
from bnbench.norm.settings import BNSettings

pytestmark = pytest.mark.unit

SHAPES = [(32, 5), (8, 12, 6), (4, 6, 5, 3)]


def reference_bn(x, scale, offset, eps):
    """Float64 NumPy BN, training mode: returns (y, batch mean, biased batch var)."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    var = ((x - mean) ** 2).mean(axis=axes)
    y = np.asarray(scale, np.float64) * (x - mean) / np.sqrt(var + eps) + np.asarray(offset, np.float64)
    return y, mean, var


def random_inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    x = (rng.normal(size=shape) * rng.uniform(0.5, 3.0, c) + rng.normal(size=c) * 2).astype(np.float32)
    params = bn.BNParams(
        scale=jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32),
        offset=jnp.asarray(rng.normal(size=c), jnp.float32),
    )
    state = bn.BNState(
        mean=jnp.asarray(rng.normal(size=c), jnp.float32),
        var=jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32),
        count=jnp.asarray(3, jnp.int32),
    )
    return x, params, state


def test_init_is_identity_with_unit_running_var():
    params, state = bn.init(4)
    np.testing.assert_array_equal(params.scale, np.ones(4))
    np.testing.assert_array_equal(params.offset, np.zeros(4))
    np.testing.assert_array_equal(state.mean, np.zeros(4))
    np.testing.assert_array_equal(state.var, np.ones(4))
    assert int(state.count) == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_train_forward_statistics_and_ema_match_float64(shape):
    x, params, state = random_inputs(shape)
    eps, momentum = 1e-3, 0.9
    y, new_state = bn.batch_norm(x, params, state, train=True, momentum=momentum, epsilon=eps)
    y_ref, mean_ref, var_ref = reference_bn(x, params.scale, params.offset, eps)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    # running = momentum * running + (1 - momentum) * batch, with the biased batch variance.
    np.testing.assert_allclose(new_state.mean, 0.9 * np.asarray(state.mean) + 0.1 * mean_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state.var, 0.9 * np.asarray(state.var) + 0.1 * var_ref, rtol=1e-5, atol=1e-6)
    assert int(new_state.count) == 4


def test_momentum_zero_records_exactly_the_biased_batch_statistics():
    x = np.array([[1.0], [2.0], [3.0], [6.0]], np.float32)
    params, state = bn.init(1)
    _, new_state = bn.batch_norm(x, params, state, train=True, momentum=0.0)
    np.testing.assert_allclose(new_state.mean, [3.0])
    np.testing.assert_allclose(new_state.var, [3.5])  # biased: 14 / 4, not 14 / 3


@pytest.mark.parametrize("shape", SHAPES)
def test_eval_uses_running_statistics_and_keeps_state(shape):
    x, params, state = random_inputs(shape, seed=1)
    eps = 1e-5
    y, new_state = bn.batch_norm(x, params, state, train=False, epsilon=eps)
    mean, var = np.asarray(state.mean, np.float64), np.asarray(state.var, np.float64)
    y_ref = np.asarray(params.scale) * (x.astype(np.float64) - mean) / np.sqrt(var + eps) + np.asarray(params.offset)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(new_state, state):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("train", [True, False])
def test_jit_and_eager_agree(train):
    x, params, state = random_inputs((16, 4, 3), seed=2)
    y_jit, s_jit = bn.batch_norm(x, params, state, train=train, momentum=0.8, epsilon=1e-4)
    with jax.disable_jit():
        y_eager, s_eager = bn.batch_norm(x, params, state, train=train, momentum=0.8, epsilon=1e-4)
    np.testing.assert_allclose(y_jit, y_eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s_jit.var, s_eager.var, rtol=1e-6)


def _reference_loss(x, scale, offset, weights, eps):
    """Independent float64 BN written in jnp (run under x64), reduced to a scalar loss."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean((x - mean) ** 2, axis=axes)
    return jnp.sum(weights * (scale * (x - mean) / jnp.sqrt(var + eps) + offset))


@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_match_float64_autodiff(shape):
    x, params, state = random_inputs(shape, seed=3)
    weights = np.random.default_rng(4).normal(size=shape)  # makes every output element matter differently
    eps = 1e-3

    def loss(x, scale, offset):
        y, _ = bn.batch_norm(x, bn.BNParams(scale, offset), state, train=True, epsilon=eps)
        return jnp.sum(jnp.asarray(weights, jnp.float32) * y)

    grads = jax.grad(loss, argnums=(0, 1, 2))(x, params.scale, params.offset)
    with jax.enable_x64(True):
        args64 = [np.asarray(a, np.float64) for a in (x, params.scale, params.offset)]
        ref = jax.grad(_reference_loss, argnums=(0, 1, 2))(*args64, weights, eps)
        ref = [np.asarray(r) for r in ref]
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-4 * np.abs(r).max())


def test_gradient_wrt_x_matches_finite_differences():
    x, params, state = random_inputs((6, 3), seed=5)
    w = np.random.default_rng(6).normal(size=x.shape)

    def loss64(x64):
        return float((w * reference_bn(x64, params.scale, params.offset, 1e-3)[0]).sum())

    grad = jax.grad(lambda x: jnp.sum(w * bn.batch_norm(x, params, state, train=True, epsilon=1e-3)[0]))(x)
    h = 1e-6
    x64 = x.astype(np.float64)
    numeric = np.zeros_like(x64)
    for idx in np.ndindex(x.shape):
        plus, minus = x64.copy(), x64.copy()
        plus[idx] += h
        minus[idx] -= h
        numeric[idx] = (loss64(plus) - loss64(minus)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-3)


def _reference_loss_with_state(x, scale, offset, eps, weights, mean_weights, var_weights, momentum, state):
    """Float64 loss that reads the output, the updated running statistics and epsilon."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean((x - mean) ** 2, axis=axes)
    y = scale * (x - mean) / jnp.sqrt(var + eps) + offset
    new_mean = momentum * state.mean + (1 - momentum) * mean
    new_var = momentum * state.var + (1 - momentum) * var
    return jnp.sum(weights * y) + jnp.sum(mean_weights * new_mean) + jnp.sum(var_weights * new_var)


def _loss_with_state(shape, seed):
    """bnbench's loss matching :func:`_reference_loss_with_state`, that float64 reference, and float32 arguments."""
    x, params, state = random_inputs(shape, seed=seed)
    rng = np.random.default_rng(seed + 100)
    weights, mean_weights, var_weights = rng.normal(size=shape), rng.normal(size=shape[-1]), rng.normal(size=shape[-1])

    def loss(x, scale, offset, eps):
        y, new_state = bn.batch_norm(x, bn.BNParams(scale, offset), state, train=True, epsilon=eps, momentum=0.5)
        return (
            jnp.sum(jnp.asarray(weights, jnp.float32) * y)
            + jnp.sum(jnp.asarray(mean_weights, jnp.float32) * new_state.mean)
            + jnp.sum(jnp.asarray(var_weights, jnp.float32) * new_state.var)
        )

    def reference(x, scale, offset, eps):
        state64 = bn.BNState(*(np.asarray(a, np.float64) for a in state))
        return _reference_loss_with_state(x, scale, offset, eps, weights, mean_weights, var_weights, 0.5, state64)

    args = (x, params.scale, params.offset, jnp.float32(1e-2))
    return loss, reference, args


@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_through_the_running_statistics_and_epsilon_match_float64(shape):
    loss, reference, args = _loss_with_state(shape, seed=20)
    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*args)
    with jax.enable_x64(True):
        ref = jax.grad(reference, argnums=(0, 1, 2, 3))(*(np.asarray(a, np.float64) for a in args))
        ref = [np.asarray(r) for r in ref]
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-4 * np.abs(r).max())


def test_forward_mode_and_hessian_vector_products_match_float64():
    loss, reference, (x, *rest) = _loss_with_state((16, 4), seed=21)
    tangent = np.random.default_rng(22).normal(size=x.shape)

    def loss_of_x(x):
        return loss(x, *rest)

    _, directional = jax.jvp(loss_of_x, (x,), (jnp.asarray(tangent, jnp.float32),))
    _, hvp = jax.jvp(jax.grad(loss_of_x), (x,), (jnp.asarray(tangent, jnp.float32),))
    with jax.enable_x64(True):
        rest64 = [np.asarray(a, np.float64) for a in rest]

        def reference_of_x(x):
            return reference(x, *rest64)

        x64 = np.asarray(x, np.float64)
        _, directional_ref = jax.jvp(reference_of_x, (x64,), (tangent,))
        _, hvp_ref = jax.jvp(jax.grad(reference_of_x), (x64,), (tangent,))
        directional_ref, hvp_ref = float(directional_ref), np.asarray(hvp_ref)
    np.testing.assert_allclose(directional, directional_ref, rtol=2e-4)
    np.testing.assert_allclose(hvp, hvp_ref, rtol=1e-3, atol=1e-3 * np.abs(hvp_ref).max())


def test_cross_device_gradients_are_those_of_the_concatenated_batch():
    x, params, state = random_inputs((32, 3), seed=23)
    weights = np.random.default_rng(24).normal(size=x.shape)

    def sharded_loss(x, scale, offset):
        def per_shard(xs, ws):
            y, new_state = bn.batch_norm(xs, bn.BNParams(scale, offset), state, train=True, axis_name="devices")
            # Every shard holds the same running variance: a quarter of it each counts it once.
            return jnp.sum(ws * y) + jnp.sum(new_state.var) / 4

        shard_weights = jnp.asarray(weights, jnp.float32).reshape(4, 8, 3)
        return jax.vmap(per_shard, axis_name="devices")(x.reshape(4, 8, 3), shard_weights).sum()

    def reference(x, scale, offset):
        var = jnp.mean((x - x.mean(axis=0)) ** 2, axis=0)
        y = scale * (x - x.mean(axis=0)) / jnp.sqrt(var + BNSettings().epsilon) + offset
        return jnp.sum(weights * y) + (1 - BNSettings().momentum) * jnp.sum(var)

    grads = jax.grad(sharded_loss, argnums=(0, 1, 2))(x, params.scale, params.offset)
    with jax.enable_x64(True):
        ref = jax.grad(reference, argnums=(0, 1, 2))(*(np.asarray(a, np.float64) for a in (x, params.scale, params.offset)))
        ref = [np.asarray(r) for r in ref]
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-4 * np.abs(r).max())


def test_bfloat16_gradients_keep_dtypes_and_match_float32_on_the_same_values():
    x, params, state = random_inputs((64, 8), seed=25)
    xb = jnp.asarray(x, jnp.bfloat16)
    weights = jnp.asarray(np.random.default_rng(26).normal(size=x.shape), jnp.float32)

    def loss(x, scale, offset):
        y, _ = bn.batch_norm(x, bn.BNParams(scale, offset), state, train=True)
        return jnp.sum(weights * y.astype(jnp.float32))

    grads = jax.grad(loss, argnums=(0, 1, 2))(xb, params.scale, params.offset)
    assert grads[0].dtype == jnp.bfloat16 and grads[1].dtype == jnp.float32
    exact = jax.grad(loss, argnums=(0, 1, 2))(jnp.asarray(xb, jnp.float32), params.scale, params.offset)
    np.testing.assert_allclose(np.asarray(grads[0], np.float32), exact[0], rtol=2e-2, atol=2e-2 * np.abs(exact[0]).max())
    for g, r in zip(grads[1:], exact[1:]):
        np.testing.assert_allclose(g, r, rtol=2e-2, atol=2e-2 * np.abs(r).max())


def test_bfloat16_input_keeps_float32_statistics_and_output_dtype():
    x, params, state = random_inputs((64, 8), seed=7)
    xb = jnp.asarray(x, jnp.bfloat16)
    y, new_state = bn.batch_norm(xb, params, state, train=True, momentum=0.0, epsilon=1e-5)
    assert y.dtype == jnp.bfloat16
    assert new_state.mean.dtype == jnp.float32 and new_state.var.dtype == jnp.float32
    exact = np.asarray(xb, np.float64)  # the values the bfloat16 input really holds
    y_ref, mean_ref, var_ref = reference_bn(exact, params.scale, params.offset, 1e-5)
    # float32 accumulation: far tighter than bfloat16's ~3 significant digits.
    np.testing.assert_allclose(new_state.mean, mean_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_state.var, var_ref, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(y, np.float64), y_ref, rtol=1e-2, atol=2e-2)


def test_large_mean_input_still_normalizes_to_unit_variance():
    rng = np.random.default_rng(8)
    x = (1e4 + rng.normal(size=(4096, 4))).astype(np.float32)
    params, state = bn.init(4)
    y, new_state = bn.batch_norm(x, params, state, train=True, momentum=0.0)
    y64 = np.asarray(y, np.float64)
    np.testing.assert_allclose(y64.var(axis=0), 1.0, atol=1e-3)
    np.testing.assert_allclose(y64.mean(axis=0), 0.0, atol=1e-3)
    _, _, var_ref = reference_bn(x, 1.0, 0.0, 1e-5)
    np.testing.assert_allclose(new_state.var, var_ref, rtol=1e-4)


def test_one_pass_formula_would_fail_on_the_large_mean_input():
    """Guards the test above: E[x^2] - E[x]^2 in float32 is far off on the same data."""
    rng = np.random.default_rng(8)
    x = jnp.asarray((1e4 + rng.normal(size=(4096, 4))).astype(np.float32))
    one_pass = jnp.mean(x * x, axis=0) - jnp.mean(x, axis=0) ** 2
    assert np.max(np.abs(np.asarray(one_pass) - 1.0)) > 0.1


def test_constant_channel_gives_offset_without_nan():
    rng = np.random.default_rng(9)
    x = np.stack([np.full(32, 3.7), rng.normal(size=32)], axis=1).astype(np.float32)
    params = bn.BNParams(scale=jnp.array([2.0, 1.0]), offset=jnp.array([0.25, 0.0]))
    _, state = bn.init(2)
    y, new_state = bn.batch_norm(x, params, state, train=True)
    assert np.isfinite(np.asarray(y)).all() and np.isfinite(np.asarray(new_state.var)).all()
    np.testing.assert_allclose(y[:, 0], 0.25, atol=1e-4)


def test_batch_of_one_in_training_gives_offset():
    params = bn.BNParams(scale=jnp.array([1.5, 2.0]), offset=jnp.array([0.5, -1.0]))
    _, state = bn.init(2)
    y, _ = bn.batch_norm(jnp.array([[3.0, -7.0]]), params, state, train=True)
    np.testing.assert_allclose(y, [[0.5, -1.0]])


def test_axis_name_averages_statistics_across_the_named_axis():
    x, params, state = random_inputs((32, 3), seed=10)
    shards = x.reshape(4, 8, 3)

    def per_shard(xs):
        return bn.batch_norm(xs, params, state, train=True, momentum=0.5, axis_name="devices")

    y, new_state = jax.vmap(per_shard, axis_name="devices")(shards)
    y_full, state_full = bn.batch_norm(x, params, state, train=True, momentum=0.5)
    np.testing.assert_allclose(y.reshape(32, 3), y_full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_state.var[0], state_full.var, rtol=1e-5)


@pytest.mark.parametrize("magnitude", [1e-30, 1e-15, 1e15])
def test_huge_and_tiny_magnitudes_match_the_float64_reference(magnitude):
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(64, 3)) * magnitude).astype(np.float32)
    params, state = bn.init(3)
    y, new_state = bn.batch_norm(x, params, state, train=True, momentum=0.0)
    y_ref, _, var_ref = reference_bn(x, 1.0, 0.0, 1e-5)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new_state.var, var_ref, rtol=1e-4, atol=1e-44)
    y_eval, _ = bn.batch_norm(x, params, new_state, train=False)
    assert np.isfinite(np.asarray(y_eval)).all()


def test_variance_beyond_float32_range_gives_no_nan():
    """std 1e30: the variance (1e60) overflows float32. bnbench documents the limit (std < ~1e19):
    the running variance becomes inf and outputs collapse to offset, but nothing turns NaN."""
    x = (np.random.default_rng(12).normal(size=(64, 3)) * 1e30).astype(np.float32)
    params = bn.BNParams(scale=jnp.ones(3), offset=jnp.full((3,), 0.5))
    _, state = bn.init(3)
    y, new_state = bn.batch_norm(x, params, state, train=True)
    y_eval, _ = bn.batch_norm(x, params, new_state, train=False)
    assert not np.isnan(np.asarray(y)).any() and not np.isnan(np.asarray(y_eval)).any()
    assert np.isinf(np.asarray(new_state.var)).all()
