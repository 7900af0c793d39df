"""Norm variants inside training runs: PreciseBN, batch-statistics evaluation, weight-decay masking,
and a sweep over norms whose CSV holds one accuracy per evaluation mode."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

from bnbench import data
from bnbench.experiment.fields import RunConfig
from bnbench.models import make_model
from bnbench.training.signature import HParams, Signature
from bnbench.training.optimizers import make_optimizer
from bnbench.training.program import cross_entropy, make_program


def _program(config: RunConfig):
    dataset = data.load(config.dataset, config.num_samples)
    return make_program(Signature.of(config, dataset)), HParams.of(config), dataset


@pytest.mark.unit
def test_precise_statistics_are_the_pooled_statistics_of_the_next_training_batches():
    config = RunConfig(dataset="synthetic", num_samples=1200, widths=(6,), batch_size=16, precise_batches=5, steps=3, eval_every=3)
    program, hp, dataset = _program(config)
    seed = np.uint32(0)
    state = program.init(seed, hp)
    (precise,) = program.precise_bn_state(state, seed, hp, jnp.asarray(dataset.x_train))
    idx = np.asarray(program.batch_indices(seed, config.steps, config.precise_batches)).reshape(-1)
    assert len(set(idx)) == 5 * 16
    layer = state.params["layers"][0]
    pre = dataset.x_train[idx].astype(np.float64) @ np.asarray(layer["w"], np.float64) + np.asarray(layer["b"])
    np.testing.assert_allclose(precise.mean, pre.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(precise.var, pre.var(0), rtol=1e-5)


@pytest.mark.unit
def test_batch_statistics_evaluation_normalizes_each_test_batch_with_its_own_statistics():
    # 240 test examples in batches of 50: four full batches and one of 40.
    config = RunConfig(dataset="synthetic", num_samples=1200, widths=(6,), batch_size=50, eval_stats=("batch", "running"), steps=2, eval_every=2)
    program, hp, dataset = _program(config)
    seed = np.uint32(0)
    state = program.init(seed, hp)
    losses, accuracies, _ = program.evaluate(state, seed, hp, dataset.x_train, dataset.x_test, dataset.y_test)
    model = make_model("mlp", input_shape=(16,), widths=(6,), num_classes=4, activation="relu", placement="pre")
    logits = np.concatenate(
        [
            np.asarray(model.apply(state.params, state.bn_state, dataset.x_test[i : i + 50], train=True)[0])
            for i in range(0, 240, 50)
        ]
    )
    np.testing.assert_allclose(losses[0], cross_entropy(jnp.asarray(logits), dataset.y_test), rtol=1e-5)
    np.testing.assert_allclose(accuracies[0], np.mean(logits.argmax(-1) == dataset.y_test), rtol=1e-6)
    running = np.asarray(model.apply(state.params, state.bn_state, dataset.x_test, train=False)[0])
    np.testing.assert_allclose(accuracies[1], np.mean(running.argmax(-1) == dataset.y_test), rtol=1e-6)
    assert losses[0] != losses[1]


@pytest.mark.unit
def test_bn_weight_decay_false_leaves_the_norm_parameters_alone():
    model = make_model("mlp", input_shape=(4,), widths=(3,), num_classes=2, activation="relu", placement="pre")
    params, _ = model.init(jax.random.PRNGKey(0))
    params["norm"][0] = params["norm"][0]._replace(offset=jnp.ones(3))
    hp = HParams.of(RunConfig(optimizer="sgd", lr=0.1, weight_decay=0.5, optimizer_momentum=0.0))
    zero_grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    for decay_bn, factor in ((True, 1 - 0.1 * 0.5), (False, 1.0)):
        optimizer = make_optimizer("sgd", hp, bn_weight_decay=decay_bn)
        updates, _ = optimizer.update(zero_grads, optimizer.init(params), params)
        new = optax.apply_updates(params, updates)
        np.testing.assert_allclose(new["norm"][0].scale, factor * np.ones(3), rtol=1e-6)
        np.testing.assert_allclose(new["norm"][0].offset, factor * np.ones(3), rtol=1e-6)
        np.testing.assert_allclose(new["layers"][0]["w"], 0.95 * np.asarray(params["layers"][0]["w"]), rtol=1e-6)


@pytest.mark.integration
def test_sweep_over_norms_records_one_accuracy_per_evaluation_mode(write_spec, cli, workdir):
    spec = write_spec(
        """
        dataset = "synthetic"
        widths = [8, 8]
        batch_size = 16
        lr = 0.01
        steps = 100
        eval_every = 50
        eval_stats = ["running", "batch", "precise"]
        precise_batches = 4
        groups = 2
        seeds = 1

        [grid]
        norm = ["batch", "group", "layer"]
        """
    )
    result = cli("sweep", spec, "--no-plots")
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(workdir / "results" / "spec" / "runs.csv").set_index("norm")
    assert (runs["status"] == "ok").all()
    assert (runs["eval_stats"] == "running-batch-precise").all()
    np.testing.assert_array_equal(runs["test_acc"], runs["test_acc_running"])
    for norm in ("group", "layer"):  # no batch statistics: every mode evaluates the same function
        row = runs.loc[norm]
        assert row["test_acc_running"] == row["test_acc_batch"] == row["test_acc_precise"]
    assert (runs["test_acc"] > 0.5).all()  # four classes: chance is 0.25
