"""Adapted 2-D conv nets (Flax NNX, Equinox) under bnbench's default engine, where the CPU rewrites their
convolutions as patches; the Equinox adapter's channels-first examples; and the crash of an Equinox
BatchNorm's derivative outside the vmap that names its axis (``NameError: unbound axis name``)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from bnbench import engine
from bnbench.sweeping import plan
from tests.test_plugins import ADAPTED

PLUGINS = Path(__file__).parent / "plugins"
IMAGES = 'dataset = "npz:images.npz"\nbatch_size = 16\nsteps = 20\neval_every = 10\nseeds = 1\n' + ADAPTED


def write_images(folder: Path, n_train: int = 96, n_test: int = 32) -> None:
    """``images.npz``: 8x8 one-channel images (channels last), three classes told apart by a ramp."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 3, n)
        ramp = (y[:, None, None, None] - 1) * np.linspace(-1, 1, 8)[None, :, None, None]
        arrays |= {f"x_{split}": (rng.normal(size=(n, 8, 8, 1)) + ramp).astype(np.float32), f"y_{split}": y}
    np.savez(folder / "images.npz", **arrays)


def _frameworks():
    pytest.importorskip("flax.nnx")
    pytest.importorskip("equinox")
    import importlib.util

    loader = importlib.util.spec_from_file_location("conv_frameworks_under_test", PLUGINS / "conv_frameworks.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def _plugged(module, name: str, input_shape: tuple, **options):
    from bnbench.models.plugged import plugged

    return plugged(getattr(module, name), {}, where=str(PLUGINS / "conv_frameworks.py"), input_shape=input_shape,
                   num_classes=3, **options)


@pytest.mark.slow  # a framework conv net and its twin compiled three ways: make test-slow, not in CI
@pytest.mark.parametrize("framework", ["nnx", "eqx"])
def test_an_adapted_2d_conv_net_trains_as_its_native_twin_on_the_default_engine(framework, workdir, write_spec):
    _frameworks()
    shutil.copy(PLUGINS / "conv_frameworks.py", workdir / "conv_frameworks.py")
    write_images(workdir)
    adapted, native = (plan.load_checked(write_spec(f'model = "./conv_frameworks.py:{framework}_conv2d{twin}"\n{IMAGES}',
                                                    f"spec{twin}.toml")).expand() for twin in ("", "_native"))
    for config, (_, a), (_, b) in zip(adapted, engine.run_all(adapted), engine.run_all(native)):
        assert a.status == b.status == "ok", config.norm
        assert a.context.execution == b.context.execution == "vmapped"  # on the CPU, convolutions as patches
        # Measured over these 20 steps: NNX bitwise equal to its twin, Equinox within 1e-7 (it runs per
        # example, its BN's sums and JAX's derivative of them round in another order); 1e-5 is 100 times that.
        losses = [(p.train_loss, q.train_loss) for p, q in zip(a.curve, b.curve)] + [
            (p.test_loss, q.test_loss) for p, q in zip(a.curve, b.curve)] + [
            (a.final_train_loss, b.final_train_loss), (a.test_loss, b.test_loss)]
        assert max(abs(p - q) for p, q in losses) <= 1e-5, config.norm
        assert a.test_acc_by_stats == b.test_acc_by_stats, config.norm


@pytest.mark.unit
@pytest.mark.parametrize("input_shape", [(8, 8, 1), (12, 2), (6,)], ids=["image", "signal", "features"])
def test_the_equinox_adapter_hands_each_example_channels_first(input_shape):
    import jax

    from bnbench.models import plugin
    from bnbench.norm.settings import BNSettings

    module = _frameworks()
    model = _plugged(module, "eqx_first_layer", input_shape)
    key = jax.random.PRNGKey(3)
    x = jax.random.normal(jax.random.PRNGKey(4), (16, *input_shape)) * 3 + 1
    params, state = model.init(key)
    ours, _ = model.apply(params, state, x, train=True, bn_settings=BNSettings(epsilon=1e-5))
    theirs = module.eqx_first_layer_own(plugin.Context(input_shape, 3, np.float32), key, x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.unit
def test_an_equinox_conv_nets_batchnorm_differentiates_with_its_convolutions_as_patches():
    """The reported crash: the engine rewrites the convolutions from the traced program, recorded inside
    the adapter's vmap, and differentiates it outside; BN's written-out derivative, traced then, found
    its pmean's axis unbound."""
    import jax

    from bnbench.models.convolution import with_kernel
    from bnbench.norm.settings import BNSettings

    model = _plugged(_frameworks(), "eqx_conv2d", (8, 8, 1))
    params, state = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, 1))

    def gradient(apply):
        def loss(p):
            logits, _ = apply(p, state, x, train=True, bn_settings=BNSettings())
            return (logits**2).mean()

        return jax.grad(loss)(params)

    for ours, xla in zip(jax.tree_util.tree_leaves(gradient(with_kernel(model.apply, "patches"))),
                         jax.tree_util.tree_leaves(gradient(model.apply))):
        np.testing.assert_allclose(ours, xla, rtol=1e-4, atol=1e-6)


@pytest.mark.unit
def test_bn_across_a_named_axis_differentiates_outside_the_program_that_named_it():
    """BN across ``axis_name`` in a vmap, recorded by ``jax.jit`` and differentiated outside it: JAX's
    derivative of the forward pass, that of BN of the whole batch to float32 rounding."""
    import jax

    from bnbench.norm import bn

    params, state = bn.init(3)
    params = params._replace(scale=params.scale * 1.5, offset=params.offset + 0.25)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 4, 3)) * 2 + 1

    def across(x):
        y = jax.vmap(lambda e: bn.batch_norm(e, params, state, train=True, axis_name="batch")[0], axis_name="batch")(x)
        return (y**3).sum()

    def whole(x):
        return (bn.batch_norm(x, params, state, train=True)[0] ** 3).sum()

    np.testing.assert_allclose(jax.grad(jax.jit(across))(x), jax.grad(whole)(x), rtol=1e-4, atol=1e-5)
