"""A Flax Linen model under bnbench (bnbench.adapters.linen): its norm layers become bnbench's sites over their
own feature axes, its training flag and dropout follow bnbench's training, and it trains as a native plugin of
the same network does. The networks are in tests/plugins/linen_nets.py."""

import shutil

import numpy as np
import pandas as pd
import pytest

from bnbench.sweeping import plan
from tests.test_plugins import ADAPTED, HEAD, PLUGINS, _load, results

pytest.importorskip("flax.linen")

NETS = PLUGINS / "linen_nets.py"
TWENTY_STEPS = HEAD.replace("steps = 12\neval_every = 6", "steps = 20\neval_every = 10")


def _plugged(function: str, norm: str = "batch", **model_args):
    """The network ``function`` of linen_nets.py as bnbench builds it, for 16 features and 3 classes."""
    from bnbench.models.layers import Normalization
    from bnbench.models.plugged import plugged

    return plugged(getattr(_load(NETS), function), model_args, where=str(NETS), input_shape=(16,), num_classes=3,
                   norm=Normalization(norm, groups=2))


def _batch():
    import jax

    return jax.random.normal(jax.random.PRNGKey(4), (16, 16)) * 3 + 1


@pytest.mark.slow  # a framework conv net and its twin compiled three ways: make test-slow, not in CI
def test_an_adapted_linen_conv_net_trains_as_its_native_twin_with_no_norm_parameters_left(workdir, write_spec):
    import jax

    from bnbench.models import plugin

    shutil.copy(NETS, workdir / "linen_nets.py")
    adapted = plan.load_checked(write_spec(f'model = "./linen_nets.py:conv_net"\n{TWENTY_STEPS}{ADAPTED}', "a.toml")).expand()
    native = plan.load_checked(write_spec(f'model = "./linen_nets.py:conv_native"\n{TWENTY_STEPS}{ADAPTED}', "n.toml")).expand()
    assert [c.norm for c in adapted] == ["batch", "layer", "none"]
    for config, a, b in zip(adapted, results(adapted), results(native)):
        assert a.status == b.status == "ok", config.norm
        assert abs(a.test_loss - b.test_loss) <= 1e-5 and abs(a.final_train_loss - b.final_train_loss) <= 1e-5, config.norm
        assert a.test_acc_by_stats == b.test_acc_by_stats, config.norm
    params = _load(NETS).conv_net(plugin.Context((16,), 4, np.float32)).init(jax.random.PRNGKey(0))
    paths = sorted(jax.tree_util.keystr(p, simple=True, separator=".") for p, _ in jax.tree_util.tree_leaves_with_path(params))
    # no BatchNorm_0, LayerNorm_0: Linen's norm layers made no variables, bnbench's sites hold the norm parameters
    assert paths == [f"{layer}.{name}" for layer in ("Conv_0", "Dense_0", "Dense_1") for name in ("bias", "kernel")]


@pytest.mark.unit
@pytest.mark.parametrize("layout, norm, channels", [
    ("last", "batch", 6), ("first", "batch", 6), ("both", "batch", 48),
    ("layer_first", "layer", 6), ("position", "layer", 6), ("group", "group", 6),
])
def test_an_adapted_norm_layer_normalizes_over_its_own_axes_as_linens_does(layout, norm, channels):
    """The run's norm kind as the layer's own (training mode): BN over every axis but its features,
    LayerNorm and GroupNorm over their reduction axes only (a per-position LayerNorm stays one)."""
    import jax

    from bnbench.models import plugin
    from bnbench.norm.settings import BNSettings

    model = _plugged("one_norm", norm, layout=layout)
    key, x = jax.random.PRNGKey(3), _batch()
    params, state = model.init(key)
    assert [p.scale.shape for p in params["norm"]] == [(channels,)]  # one site, of the layer's features
    ours, _ = model.apply(params, state, x, train=True, bn_settings=BNSettings(epsilon=1e-5))
    own = _load(NETS).one_norm_own_training(plugin.Context((16,), 3, np.float32), key, x, layout=layout)
    np.testing.assert_allclose(ours, own, rtol=1e-5, atol=1e-5)


@pytest.mark.unit
@pytest.mark.parametrize("flag", ["train", "training", "deterministic", "none"])
def test_linen_dropout_draws_from_the_runs_key_in_training_and_is_off_in_evaluation(flag):
    import jax

    from bnbench.models import plugin

    model = _plugged("dropping", "none", flag=flag)  # no norm layer: no site
    own = _load(NETS).dropping_own
    ctx, key, x = plugin.Context((16,), 3, np.float32), jax.random.PRNGKey(3), _batch()
    params, state = model.init(key)
    first, second = (model.apply(params, state, x, train=True, model_key=jax.random.PRNGKey(k))[0] for k in (1, 2))
    assert not np.allclose(first, second)  # a fresh mask each step
    np.testing.assert_allclose(first, own(ctx, key, x, flag=flag, dropout_key=jax.random.PRNGKey(1)), rtol=1e-6)
    evaluated = model.apply(params, state, x, train=False)[0]
    np.testing.assert_allclose(evaluated, own(ctx, key, x, flag=flag), rtol=1e-6)


@pytest.mark.unit
def test_an_adapted_linen_model_runs_under_jit_grad_and_vmap_over_runs():
    import jax
    import jax.numpy as jnp

    from bnbench.norm.settings import BNSettings

    model, x = _plugged("conv_net"), _batch()
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    params, state = jax.vmap(model.init)(keys)

    def loss(p, s, k):
        logits, new = model.apply(p, s, x, train=True, bn_settings=BNSettings(), model_key=k)
        return jnp.mean(logits**2), new

    vmapped = jax.jit(jax.vmap(jax.grad(loss, has_aux=True)))(params, state, keys)
    kernels = vmapped[0]["model"]["Conv_0"]["kernel"]
    assert np.all(np.abs(kernels).sum(axis=(1, 2, 3)) > 0) and not np.allclose(kernels[0], kernels[1])
    for run in range(2):
        one = jax.tree_util.tree_map(lambda leaf: leaf[run], (params, state))
        alone = jax.grad(loss, has_aux=True)(*one, keys[run])
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a[run], b, rtol=1e-5, atol=1e-6), vmapped, alone)


@pytest.mark.integration
def test_the_reported_linen_model_no_longer_runs_at_chance(workdir, write_spec, cli):
    """A Linen MLP with its own BatchNorm layers, swept: its two norm layers are bnbench's and it learns."""
    from bnbench.training import inventory

    shutil.copy(NETS, workdir / "linen_nets.py")
    spec = write_spec(f'model = "./linen_nets.py:digits_net"\n{HEAD}lr = 0.01\n[grid]\nnorm = ["batch", "layer"]\n'
                      .replace("steps = 12", "steps = 60"))
    assert [row.norm_sites for row in inventory.resolve(plan.load_checked(spec))] == [2]
    result = cli("sweep", spec, "--no-plots")
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(workdir / "results" / "spec" / "runs.csv")
    assert runs["status"].eq("ok").all() and runs["test_acc"].gt(0.6).all()  # 4 classes: chance is 0.25


@pytest.mark.unit
@pytest.mark.parametrize("network, case, message", [
    ("misnamed", None, "Dropping.__call__ takes no argument 'is_training': name its training flag with"),
    ("unmappable", "over_the_batch", "BatchNorm 'BatchNorm_0': its feature axes include the batch axis 0 of its 3-D input"),
    ("unmappable", "masked", "LayerNorm 'LayerNorm_0': a norm layer called with mask= cannot be a bnbench site"),
    ("unmappable", "features_apart", "LayerNorm 'LayerNorm_0': its feature axes (2,) are not among its reduction axes (1,)"),
    ("counting", None, "makes variables outside 'params' (counters)"),
    ("a_factory", None, "adapters.linen takes a flax.linen Module instance (MyNet(...)), not function"),
])
def test_what_the_linen_adapter_cannot_map_is_refused_in_one_line(network, case, message, workdir, write_spec, cli):
    shutil.copy(NETS, workdir / "linen_nets.py")
    model_args = f'[model_args]\ncase = "{case}"\n' if case else ""
    result = cli("sweep", write_spec(f'model = "./linen_nets.py:{network}"\n{HEAD}{model_args}'))
    assert result.exit_code == 2 and "\n" not in result.output.strip(), result.output
    assert "linen_nets.py:" in result.output and message in result.output, result.output
    assert not (workdir / "results" / "spec" / "runs.csv").exists()
