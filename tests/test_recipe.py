"""The training recipe: schedules against their closed forms (and the rates the optimizer applies),
Nesterov momentum, crop-and-flip augmentation, dropout and where it acts."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnbench.training import optimizers
from bnbench.training import recipe
from bnbench.training import signature
from bnbench.training import program
from bnbench.experiment.fields import RunConfig
from bnbench.data.registry import Dataset
from bnbench.models import dropout, make_model

pytestmark = pytest.mark.unit


def closed_form(kind, t, lr, steps, warmup, milestones=(), decay=0.1):
    """The module docstring's formulas in float64 Python."""
    if t < warmup:
        return lr * t / warmup
    if kind == "step":
        return lr * decay ** sum(t >= round(m * steps) for m in milestones)
    if kind == "cosine":
        return lr * (1 + math.cos(math.pi * (t - warmup) / (steps - warmup))) / 2
    return lr


@pytest.mark.parametrize("kind, warmup", [("constant", 10), ("step", 0), ("step", 7), ("cosine", 0), ("cosine", 12)])
def test_learning_rate_of_every_step_equals_the_closed_form(kind, warmup):
    steps, lr, milestones, decay = 100, 0.4, (0.5, 0.75), 0.2
    schedule = recipe.Schedule(kind, steps, milestones if kind == "step" else (), warmup > 0)
    rates = jax.vmap(lambda t: recipe.learning_rate(schedule, t, lr, warmup, decay))(jnp.arange(steps))
    expected = [closed_form(kind, t, lr, steps, warmup, milestones, decay) for t in range(steps)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6, atol=1e-7)


def hparams(**changes):
    return signature.HParams.of(RunConfig(optimizer="sgd", optimizer_momentum=0.0, **changes))


def test_the_optimizer_applies_the_scheduled_rate_at_every_step():
    steps = 20
    config = dict(lr=0.3, schedule="step", lr_milestones=(0.25, 0.6), lr_decay=0.5, warmup_steps=3, steps=steps)
    hp = hparams(**config)
    schedule = recipe.Schedule("step", steps, (0.25, 0.6), True)
    tx = optimizers.make_optimizer("sgd", hp, schedule=schedule)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    applied = []
    for _ in range(steps):
        updates, state = tx.update({"w": jnp.ones(())}, state, params)  # gradient 1: the update is -lr
        applied.append(-float(updates["w"]))
    expected = [closed_form("step", t, 0.3, steps, 3, (0.25, 0.6), 0.5) for t in range(steps)]
    np.testing.assert_allclose(applied, expected, rtol=1e-6)


def test_nesterov_momentum_follows_its_formula():
    hp = signature.HParams.of(RunConfig(optimizer="sgd", lr=0.1, optimizer_momentum=0.9, nesterov=True))
    tx = optimizers.make_optimizer("sgd", hp, nesterov=True)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    velocity, updates = 0.0, []
    for g in (1.0, -2.0, 0.5):
        u, state = tx.update({"w": jnp.asarray(g)}, state, params)
        velocity = 0.9 * velocity + g
        updates.append((float(u["w"]), -0.1 * (g + 0.9 * velocity)))
    for got, want in updates:
        assert got == pytest.approx(want, rel=1e-6)


def test_crop_flip_crops_within_four_pixels_flips_about_half_and_is_deterministic():
    x = jax.random.normal(jax.random.PRNGKey(0), (400, 12, 10, 2))
    key = jax.random.PRNGKey(5)
    out = recipe.crop_flip(key, x)
    offsets, flips = recipe.crop_flip_draws(key, len(x))
    assert out.shape == x.shape
    assert np.abs(np.asarray(offsets) - recipe.CROP_PADDING).max() <= 4
    assert len(np.unique(np.asarray(offsets)[:, 0])) == 9  # every offset in -4..4 occurs
    assert 0.4 < float(flips.mean()) < 0.6
    padded = np.pad(np.asarray(x), [(0, 0), (4, 4), (4, 4), (0, 0)])
    for i in range(0, 400, 37):
        (r, c), flip = np.asarray(offsets[i]), bool(flips[i])
        window = padded[i, r:r + 12, c:c + 10]
        np.testing.assert_array_equal(out[i], window[:, ::-1] if flip else window)
    np.testing.assert_array_equal(recipe.crop_flip(key, x), out)
    assert not np.array_equal(recipe.crop_flip(jax.random.PRNGKey(6), x), out)


def test_a_training_step_augments_the_images_and_keeps_their_labels():
    rng = np.random.default_rng(0)
    x_train = jnp.asarray(rng.normal(size=(64, 8, 8, 1)), jnp.float32)
    y_train = jnp.asarray(rng.integers(0, 3, 64), jnp.int32)
    dataset = Dataset("images", np.asarray(x_train), np.asarray(y_train), np.asarray(x_train[:8]), np.asarray(y_train[:8]), 3)
    config = RunConfig(model="cnn", widths=(4,), batch_size=16, steps=2, augment="crop_flip", optimizer="sgd")
    run_program = program.make_program(signature.Signature.of(config, dataset))
    hp = signature.HParams.of(config)
    state = run_program.init(0, hp)
    idx = run_program.batch_indices(0, 0, 1)[0]
    _, loss = run_program.step(state, idx, hp, x_train, y_train)
    key = jax.random.split(state.key)[1]
    augmented = recipe.crop_flip(jax.random.fold_in(key, program._AUGMENT_STREAM), x_train[idx])
    model = make_model("cnn", input_shape=(8, 8, 1), widths=(4,), num_classes=3)
    logits, _ = model.apply(state.params, state.bn_state, augmented, train=True, bn_settings=hp.bn_settings)
    assert float(loss) == pytest.approx(float(program.cross_entropy(logits, y_train[idx])), rel=1e-6)
    plain_logits, _ = model.apply(state.params, state.bn_state, x_train[idx], train=True, bn_settings=hp.bn_settings)
    assert float(loss) != pytest.approx(float(program.cross_entropy(plain_logits, y_train[idx])), rel=1e-3)


def test_dropout_keeps_the_expectation_and_drops_the_rate():
    h = jnp.ones((200, 500))
    out = dropout(h, jax.random.PRNGKey(0), 0.3)
    assert float((out == 0).mean()) == pytest.approx(0.3, abs=0.01)
    np.testing.assert_allclose(np.asarray(out)[np.asarray(out) != 0], 1 / 0.7, rtol=1e-6)
    assert float(out.mean()) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("where", ["before_norm", "after_activation"])
def test_dropout_acts_where_its_placement_says(where):
    model = make_model("mlp", input_shape=(6,), widths=(5,), num_classes=3, activation="relu", placement="pre",
                       dropout_placement=where)
    params, state = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 6))
    key, rate = jax.random.PRNGKey(3), 0.4
    logits, _ = model.apply(params, state, x, train=True, dropout_key=key, dropout_rate=rate)

    def bn(z):
        return (z - z.mean(0)) / jnp.sqrt(z.var(0) + 1e-5)

    layer_key = jax.random.fold_in(key, 0)
    z = x @ params["layers"][0]["w"] + params["layers"][0]["b"]
    if where == "before_norm":
        h = jax.nn.relu(bn(dropout(z, layer_key, rate)))
    else:
        h = dropout(jax.nn.relu(bn(z)), layer_key, rate)
    np.testing.assert_allclose(logits, h @ params["head"]["w"] + params["head"]["b"], rtol=1e-5, atol=1e-5)
    # Evaluation never drops.
    eval_logits, _ = model.apply(params, state, x, train=False, dropout_key=key, dropout_rate=rate)
    plain, _ = make_model("mlp", input_shape=(6,), widths=(5,), num_classes=3, activation="relu",
                          placement="pre").apply(params, state, x, train=False)
    np.testing.assert_array_equal(eval_logits, plain)


def test_fixup_scalars_train_at_a_tenth_of_the_learning_rate():
    hp = hparams(lr=0.5)
    params = {"layers": [{"w": jnp.zeros((2,))}], "branch": [{"scale": jnp.ones(())}], "head_bias": jnp.zeros(())}
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    tx = optimizers.make_optimizer("sgd", hp, fixup=True)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["layers"][0]["w"], -0.5)
    np.testing.assert_allclose(updates["branch"][0]["scale"], -0.05, rtol=1e-6)
    np.testing.assert_allclose(updates["head_bias"], -0.05, rtol=1e-6)
