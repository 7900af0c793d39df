"""Mechanism probes against direct float64 computations on a tiny MLP, noisy BN, both engines."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from bnbench import data, options
from bnbench.norm import bn
from bnbench.training import probes
from bnbench.experiment.fields import RunConfig
from bnbench.engine import run_all, train_run
from bnbench.models import add_noise, make_model
from bnbench.models.layers import layer_weights
from bnbench.training.signature import HParams, Signature
from bnbench.training.program import make_program

EPS, LR, BATCH = 1e-5, 0.1, 16
CONFIG = RunConfig(dataset="synthetic", num_samples=1200, widths=(6, 5), batch_size=BATCH, optimizer="sgd", lr=LR,
                   optimizer_momentum=0.9, epsilon=EPS, steps=4, eval_every=2,
                   probes=("grad_norm", "weight_norm", "ics", "smoothness"))


def program_and_state(config=CONFIG):
    dataset = data.load("synthetic", 1200)
    sig = Signature.of(config, dataset)
    program = make_program(sig)
    hp = HParams.of(config)
    return sig, program, hp, program.init(np.uint32(config.seed), hp), dataset


def reference_loss(params, x, y):
    """The MLP by hand in float64: linear -> BN (batch statistics, biased variance) -> ReLU, then the head."""
    h = x
    for layer, norm in zip(params["layers"], params["norm"]):
        z = h @ layer["w"] + layer["b"]
        mean, var = z.mean(0), ((z - z.mean(0)) ** 2).mean(0)
        h = jax.nn.relu(norm["scale"] * (z - mean) / jnp.sqrt(var + EPS) + norm["offset"])
    logits = h @ params["head"]["w"] + params["head"]["b"]
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])


def to_float64(params):
    return {
        "layers": [{k: jnp.asarray(v, jnp.float64) for k, v in layer.items()} for layer in params["layers"]],
        "norm": [{"scale": jnp.asarray(p.scale, jnp.float64), "offset": jnp.asarray(p.offset, jnp.float64)} for p in params["norm"]],
        "head": {k: jnp.asarray(v, jnp.float64) for k, v in params["head"].items()},
    }


@pytest.mark.unit
def test_every_probe_matches_a_float64_computation_by_hand():
    sig, program, hp, state, dataset = program_and_state()
    got = dict(zip(sig.probe_labels, np.asarray(program.probe(state, np.uint32(0), hp, 0, dataset.x_train, dataset.y_train))))
    with jax.enable_x64():
        x, y = jnp.asarray(dataset.x_train[:BATCH], jnp.float64), jnp.asarray(dataset.y_train[:BATCH])
        params = to_float64(state.params)

        # jitted: one compilation each, where op by op every operation compiled for every shape
        loss = jax.jit(lambda p: reference_loss(p, x, y))
        grad = jax.jit(jax.grad(loss))
        grads = grad(params)
        weights = [layer["w"] for layer in params["layers"]] + [params["head"]["w"]]
        gradients = [layer["w"] for layer in grads["layers"]] + [grads["head"]["w"]]
        expected = {}
        for i, (w, g) in enumerate(zip(weights, gradients), start=1):
            expected[(i, "grad_norm")] = np.linalg.norm(g)
            expected[(i, "weight_norm")] = np.linalg.norm(w)
            if i <= 2:
                expected[(i, "effective_lr")] = LR / np.linalg.norm(w) ** 2
            # ICS: the first SGD-with-momentum step from a fresh state is -lr * g; update layers before i.
            moved = {
                "layers": [jax.tree_util.tree_map(lambda p, d: p - LR * d, l, dl) if j < i - 1 else l
                           for j, (l, dl) in enumerate(zip(params["layers"], grads["layers"]))],
                "norm": [jax.tree_util.tree_map(lambda p, d: p - LR * d, n, dn) if j < i - 1 else n
                         for j, (n, dn) in enumerate(zip(params["norm"], grads["norm"]))],
                "head": params["head"],
            }
            moved_grads = grad(moved)
            shifted = ([layer["w"] for layer in moved_grads["layers"]] + [moved_grads["head"]["w"]])[i - 1]
            expected[(i, "ics_distance")] = np.linalg.norm(g - shifted)
            expected[(i, "ics_cosine")] = np.sum(g * shifted) / (np.linalg.norm(g) * np.linalg.norm(shifted))
        flat = jnp.concatenate([leaf.ravel() for leaf in jax.tree_util.tree_leaves(grads)])
        losses, distances, ratios = [], [], []
        for factor in probes.STEP_FACTORS:
            eta = LR * factor
            moved = jax.tree_util.tree_map(lambda p, d: p - eta * d, params, grads)
            moved_flat = jnp.concatenate([leaf.ravel() for leaf in jax.tree_util.tree_leaves(grad(moved))])
            losses.append(loss(moved))
            distances.append(np.linalg.norm(flat - moved_flat))
            ratios.append(distances[-1] / (eta * np.linalg.norm(flat)))
        expected.update({(0, "loss_min"): min(losses), (0, "loss_max"): max(losses),
                         (0, "grad_predictiveness"): max(distances), (0, "beta_smoothness"): max(ratios)})
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert math.isclose(got[key], float(value), rel_tol=2e-4, abs_tol=1e-6), (key, got[key], float(value))
    assert got[(1, "ics_distance")] == 0.0 and got[(1, "ics_cosine")] == pytest.approx(1.0)


@pytest.mark.unit
def test_stats_gap_is_zero_at_the_population_and_the_hand_value_elsewhere():
    pop = [bn.BNState(mean=jnp.array([1.0, -2.0]), var=jnp.array([4.0, 9.0]), count=jnp.array(0))]
    running = [bn.BNState(mean=jnp.array([1.5, -2.0]), var=jnp.array([4.0, 6.0]), count=jnp.array(0))]

    def values(state):
        return np.asarray(probes.values(("stats_gap",), lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.ones(2)}, None, None,
                                        jnp.float32(0.1), True, state, lambda: pop))

    np.testing.assert_array_equal(values(pop), [0.0, 0.0])
    np.testing.assert_allclose(values(running), [0.5 / math.sqrt(13.0), 3.0 / math.sqrt(16.0 + 81.0)], rtol=1e-6)
    assert probes.labels(("stats_gap",), 3, True, 3) == tuple((i, n) for i in (1, 2, 3) for n in ("mean_gap", "var_gap"))


@pytest.mark.integration
def test_probes_at_step_0_are_those_of_the_initialization():
    sig, program, hp, state, _ = program_and_state()
    result = train_run(CONFIG)
    at_start = {(p.layer, p.probe): p.value for p in result.probes if p.step == 0}
    for i, w in enumerate(layer_weights(state.params), start=1):
        assert at_start[(i, "weight_norm")] == pytest.approx(float(np.linalg.norm(w)), rel=1e-6)
    assert sorted({p.step for p in result.probes}) == [0, 2, 4]
    assert len(result.probes) == 3 * len(sig.probe_labels)


@pytest.mark.integration
@pytest.mark.parametrize("engine", ["vectorized", "sequential"])
def test_effective_lr_follows_the_schedule(engine):
    """Under warm-up then cosine decay, effective_lr * weight_norm^2 is the rate of the next update, in
    float64 by hand: lr * t / W during warm-up, lr * (1 + cos(pi (t - W) / (T - W))) / 2 after."""
    config = RunConfig(dataset="synthetic", num_samples=1200, widths=(6, 5), batch_size=BATCH, optimizer="sgd", lr=LR,
                       steps=12, eval_every=3, schedule="cosine", warmup_steps=4, probes=("weight_norm",))
    ((_, result),) = run_all([config], engine=engine)
    values = {(p.step, p.layer, p.probe): p.value for p in result.probes}
    for step in (0, 3, 6, 9, 12):
        expected = LR * step / 4 if step < 4 else LR * (1 + math.cos(math.pi * (step - 4) / 8)) / 2
        for layer in (1, 2):
            got = values[(step, layer, "effective_lr")] * values[(step, layer, "weight_norm")] ** 2
            assert got == pytest.approx(expected, rel=1e-5, abs=1e-9), (step, layer)


@pytest.mark.unit
def test_zero_noise_is_bit_identical_and_noise_is_redrawn_every_step():
    h = jax.random.normal(jax.random.PRNGKey(0), (8, 3))
    np.testing.assert_array_equal(add_noise(h, jax.random.PRNGKey(1), 0.0), h)
    model = make_model("mlp", input_shape=(16,), widths=(6,), num_classes=4, activation="relu", placement="pre")
    params, state = model.init(jax.random.PRNGKey(2))
    x = jax.random.normal(jax.random.PRNGKey(3), (8, 16))
    plain = model.apply(params, state, x, train=True)[0]
    zero = model.apply(params, state, x, train=True, noise_key=jax.random.PRNGKey(4), noise_strength=0.0)[0]
    np.testing.assert_array_equal(zero, plain)
    noisy = [model.apply(params, state, x, train=True, noise_key=jax.random.PRNGKey(k), noise_strength=0.5)[0] for k in (4, 5)]
    assert not np.allclose(noisy[0], plain) and not np.allclose(noisy[0], noisy[1])
    assert np.array_equal(model.apply(params, state, x, train=False, noise_key=jax.random.PRNGKey(4), noise_strength=0.5)[0],
                          model.apply(params, state, x, train=False)[0])  # evaluation is never noisy


NOISY_SPEC = """
name = "probed"
dataset = "synthetic"
widths = [8, 8]
batch_size = 16
steps = 20
eval_every = 10
optimizer = "sgd"
lr = 0.1
probes = ["grad_norm", "weight_norm", "ics", "smoothness", "stats_gap"]
[grid]
placement = ["pre", "none"]
noisy_bn = [0.25, 0.5]
"""


@pytest.mark.integration
def test_both_engines_give_the_same_probe_values(write_spec, workdir, cli):
    spec = write_spec(NOISY_SPEC)
    for engine in ("vectorized", "sequential"):
        assert cli("sweep", spec, "--engine", engine, "--out", engine, "--no-plots").exit_code == 0
    vectorized, sequential = (pd.read_csv(workdir / e / "probes.csv") for e in ("vectorized", "sequential"))
    assert len(vectorized) == len(sequential) > 0
    merged = vectorized.merge(sequential, on=["run_id", "step", "layer", "probe"])
    # The engines' SGD runs part by rounding only (tests/test_engine.py's ENGINE_LOSS_BOUND says why at
    # all); the bound is over a hundred times the largest difference measured (AVX-512), an ICS probe's.
    np.testing.assert_allclose(merged["value_x"], merged["value_y"], rtol=1e-4, atol=1e-5)
    runs = pd.read_csv(workdir / "vectorized" / "runs.csv")
    assert set(runs["noisy_bn"]) == {0.25, 0.5} and set(runs["probes"]) == {"grad_norm-weight_norm-ics-smoothness-stats_gap"}
    # Both strengths train in one program (the strength is traced): the runs part only if it reaches the steps.
    loss = runs.set_index(["placement", "noisy_bn"])["test_loss"]
    assert loss[("pre", 0.5)] != loss[("pre", 0.25)] and loss[("none", 0.5)] != loss[("none", 0.25)]


@pytest.mark.unit
@pytest.mark.parametrize(
    "line, message",
    [
        ('probes = ["grad_norm", "curvature"]', "probes: must be a list of 'grad_norm'"),
        ('probes = "ics"', "probes: must be a list of"),
        ('probes = ["ics", "ics"]', "lists a probe twice"),
        ("noisy_bn = -0.5", "noisy_bn: must be a finite number >= 0"),
    ],
)
def test_bad_probe_fields_are_refused_in_one_line(line, message, write_spec, cli):
    result = cli("sweep", write_spec(f'dataset = "synthetic"\n{line}\n'))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("model, norm", [("cnn", "batch"), ("cnn", "group"), ("mlp", "layer")])
def test_probes_work_on_every_model_and_norm(model, norm):
    config = RunConfig(dataset="synthetic", num_samples=1200, model=model, widths=(8, 8), norm=norm, groups=2,
                       batch_size=16, optimizer="sgd", lr=0.1, steps=4, eval_every=2, probes=options.PROBES)
    result = train_run(config)
    names = {p.probe for p in result.probes}
    assert {"grad_norm", "weight_norm", "effective_lr", "ics_cosine", "beta_smoothness"} <= names
    assert ("mean_gap" in names) == (norm == "batch")  # running statistics exist for BN only
    assert all(math.isfinite(p.value) for p in result.probes)
