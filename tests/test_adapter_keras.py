"""Keras 3 models under bnbench (bnbench.adapters.keras): the norm layers swapped for bnbench's sites
normalize as Keras's own do, an adapted conv net trains as its native twin, placement sweeps over the
model as written, softmax heads train on logits, Dropout draws from bnbench's key, and what cannot work
is refused in one line."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bnbench.models import adapters, plugin  # before keras: bnbench selects Keras's JAX backend

keras = pytest.importorskip("keras")

import jax  # noqa: E402 - after the skip: these tests need Keras
import jax.numpy as jnp  # noqa: E402

from bnbench.data.references import ReferenceLoadError  # noqa: E402
from bnbench.models.layers import Normalization  # noqa: E402
from bnbench.models.plugged import plugged  # noqa: E402
from bnbench.norm.settings import BNSettings  # noqa: E402
from bnbench.sweeping import plan  # noqa: E402
from tests.plugins import keras_nets  # noqa: E402
from tests.test_plugins import ADAPTED, PLUGINS, results  # noqa: E402

CTX = plugin.Context((16,), 4, np.float32)
KERAS_BN = BNSettings(epsilon=1e-3)  # Keras's default epsilon, so that its own layers compute the same
HEAD = 'dataset = "synthetic"\nnum_samples = 400\nbatch_size = 16\nsteps = 20\neval_every = 10\nseeds = 1\n'


def _model(function=keras_nets.adapted, *, placement: str = "post", norm: str = "batch", **model_args):
    """The plugin ``function`` of tests/plugins/keras_nets.py as bnbench runs it."""
    return plugged(function, model_args, where=keras_nets.__file__, input_shape=CTX.input_shape,
                   num_classes=CTX.num_classes, placement=placement, norm=Normalization(kind=norm))


def _batch(seed: int = 4, n: int = 16):
    return jax.random.normal(jax.random.PRNGKey(seed), (n, *CTX.input_shape)) * 3 + 1  # far from BN's output


@pytest.mark.slow  # a framework conv net and its twin compiled three ways: make test-slow, not in CI
def test_an_adapted_keras_conv_net_trains_as_its_native_twin(workdir, write_spec):
    shutil.copy(PLUGINS / "keras_nets.py", workdir / "keras_nets.py")
    body = 'placement = "post"\n' + ADAPTED
    adapted = plan.load_checked(write_spec(f'model = "./keras_nets.py:conv_net"\n{HEAD}{body}', "a.toml")).expand()
    native = plan.load_checked(write_spec(f'model = "./keras_nets.py:conv_native"\n{HEAD}{body}', "n.toml")).expand()
    assert [c.norm for c in adapted] == ["batch", "layer", "none"] and all(c.steps == 20 for c in adapted)
    for config, a, b in zip(adapted, results(adapted), results(native)):
        assert a.status == b.status == "ok", config.norm
        assert abs(a.test_loss - b.test_loss) <= 1e-5, config.norm  # bitwise equal when measured
        assert abs(a.final_train_loss - b.final_train_loss) <= 1e-5, config.norm
        assert a.test_acc_by_stats == b.test_acc_by_stats, config.norm


@pytest.mark.unit
def test_the_parameters_are_the_models_weights_without_its_norm_layers():
    params = keras_nets.conv_net(CTX, channels=4).init(jax.random.PRNGKey(0))
    assert [p.shape for p in params] == [(3, 3, 1, 4), (4,), (64, 4), (4,)]  # conv, dense: no gamma, beta, stats


@pytest.mark.unit
@pytest.mark.parametrize("name, norm", [("conv", "batch"), ("channels_first", "batch"), ("layer_norm", "layer"),
                                        ("subclassed", "batch")])
def test_a_keras_norm_layer_normalizes_over_its_own_axis_as_keras_does(name, norm):
    """bnbench's site against Keras's own layer in training mode (BatchNormalization, also on axis 1,
    and LayerNormalization), from the same weights."""
    model = _model(name=name, norm=norm, placement="pre" if name == "subclassed" else "post")
    params, state = model.init(jax.random.PRNGKey(3))
    ours, _ = model.apply(params, state, _batch(), train=True, bn_settings=KERAS_BN)
    own = keras_nets.own_forward(keras_nets.MAKERS[name](CTX, 4), params["model"], _batch())
    np.testing.assert_allclose(ours, own, rtol=1e-5, atol=1e-5)


@pytest.mark.unit
@pytest.mark.parametrize("placement", ["post", "pre", "none"])
def test_placement_moves_the_norm_layer_around_the_fused_activation(placement):
    """``post`` is the model as written (Conv2D(..., activation="relu"), then BatchNormalization), ``pre``
    the same Keras model written with BN between a linear convolution and the ReLU, ``none`` without BN."""
    model = _model(placement=placement)
    params, state = model.init(jax.random.PRNGKey(3))
    ours, _ = model.apply(params, state, _batch(), train=True, bn_settings=KERAS_BN)
    written = keras_nets.own_forward(keras_nets._conv(CTX, 4, placement), params["model"], _batch())
    np.testing.assert_allclose(ours, written, rtol=1e-5, atol=1e-5)


@pytest.mark.unit
@pytest.mark.parametrize("form", ["fused", "layer", "activation"])
def test_a_softmax_head_gives_its_logits(form):
    """Dense(..., activation="softmax"), a Softmax layer and Activation("softmax") are taken off: the
    adapted model returns the logits whose softmax is the Keras model's output."""
    model = _model(keras_nets.softmax_head, form=form)
    params, state = model.init(jax.random.PRNGKey(1))
    logits, _ = model.apply(params, state, _batch(), train=True, bn_settings=KERAS_BN)
    probabilities = keras_nets.own_forward(keras_nets._softmax_head(CTX, form), params["model"], _batch())
    np.testing.assert_allclose(jax.nn.softmax(logits), probabilities, rtol=1e-5, atol=1e-6)
    assert not np.allclose(logits, probabilities, atol=1e-2)  # logits, not probabilities


@pytest.mark.integration
def test_a_softmax_head_trains_as_the_same_model_without_it(workdir, write_spec):
    """The loss is on the logits: a model ending in a softmax gives the runs of the same model without it."""
    shutil.copy(PLUGINS / "keras_nets.py", workdir / "keras_nets.py")
    configs = [plan.load_checked(write_spec(f'model = "./keras_nets.py:softmax_head"\n{HEAD}placement = "post"\n'
                                            f'[model_args]\nform = "{form}"\n', f"{form}.toml")).expand()
               for form in ("fused", "logits")]
    fused, logits = (results(c)[0] for c in configs)
    assert fused.status == logits.status == "ok"
    assert fused.final_train_loss == logits.final_train_loss and fused.test_loss == logits.test_loss
    assert fused.final_train_loss < np.log(CTX.num_classes)  # it learns: below chance level


@pytest.mark.unit
def test_keras_dropout_draws_from_bnbenchs_key_and_is_off_in_evaluation():
    model = _model(name="dropout")
    params, state = model.init(jax.random.PRNGKey(0))

    def train(seed):
        key = jax.random.PRNGKey(seed)
        return model.apply(params, state, _batch(), train=True, bn_settings=KERAS_BN, model_key=key)[0]

    np.testing.assert_array_equal(train(1), train(1))
    assert not np.allclose(train(1), train(2))
    evaluated, _ = model.apply(params, state, _batch(), train=False, bn_settings=KERAS_BN)
    own = keras_nets.own_forward(keras_nets.MAKERS["dropout"](CTX, 4), params["model"], _batch(), training=False)
    np.testing.assert_allclose(evaluated, own, rtol=1e-5, atol=1e-5)  # Keras's own eval: no dropout, stats 0 and 1


@pytest.mark.unit
def test_an_adapted_keras_model_runs_under_vmap_jit_and_grad():
    """The engine vmaps runs: each run's weights come from its own key, and the vmapped, jitted gradient
    is each run's."""
    model = _model(name="dropout")
    params, state = jax.vmap(model.init)(jax.random.split(jax.random.PRNGKey(0), 3))
    assert not np.allclose(params["model"][0][0], params["model"][0][1])

    def loss(params, state, key):
        logits, _ = model.apply(params, state, _batch(), train=True, bn_settings=KERAS_BN, model_key=key)
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - logits[:, 0])

    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    batched = jax.jit(jax.vmap(jax.grad(loss)))(params, state, keys)
    for run in range(3):
        one = jax.jit(jax.grad(loss))(*jax.tree_util.tree_map(lambda a: a[run], (params, state, keys)))
        for a, b in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(batched)):
            np.testing.assert_allclose(a, b[run], rtol=1e-5, atol=1e-6)


@pytest.mark.unit
@pytest.mark.parametrize("name, setting, message", [
    ("subclassed", '[grid]\nplacement = ["pre", "post"]\n', "places its own norm layers"),
    ("unbuilt", "", "make() returned a Keras model that is not built: start it with keras.Input"),
])
def test_what_an_adapted_keras_model_cannot_take_is_refused_in_one_line(name, setting, message, workdir, write_spec,
                                                                         cli):
    shutil.copy(PLUGINS / "keras_nets.py", workdir / "keras_nets.py")
    spec = f'model = "./keras_nets.py:adapted"\n{HEAD}{setting}[model_args]\nname = "{name}"\n'
    result = cli("sweep", write_spec(spec))
    assert result.exit_code == 2 and "\n" not in result.output.strip(), result.output
    assert message in result.output and "keras_nets.py" in result.output
    assert not (workdir / "results" / "spec" / "runs.csv").exists()


@pytest.mark.unit
def test_keras_on_another_backend_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ReferenceLoadError, match="Keras was imported with the 'torch' backend") as refused:
        adapters.keras(lambda: keras_nets._conv(CTX, 4))
    assert "\n" not in str(refused.value) and "test_adapter_keras.py" in str(refused.value)


@pytest.mark.system
def test_bnbench_selects_the_jax_backend_whatever_the_environment_says():
    script = "from bnbench import adapters\nimport keras\nprint(keras.backend.backend())"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": "tensorflow"}, check=True)
    assert done.stdout.strip() == "jax"
