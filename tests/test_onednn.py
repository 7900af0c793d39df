"""oneDNN's convolutions through XLA's FFI (bnbench.kernels.onednn) beyond what tests/test_convolution.py
compares for every kernel: three spatial axes, bitwise repeats under jit and in a scan, the extension's
build and its one-line refusals, and a sweep's context and fallback where the extension cannot be had.
The engines' agreement with oneDNN's convolutions is in tests/test_deep_runs.py (ResNets and VGG on
images train with them natively on CPU)."""

import importlib.metadata
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from bnbench import engine
from bnbench.experiment.fields import RunConfig
from bnbench.kernels import onednn
from bnbench.training.signature import Signature
from tests.test_convolution import needs_onednn, rounding_bound, xla
from tests.test_deep_runs import images

pytestmark = needs_onednn


@pytest.mark.unit
def test_a_3d_convolution_and_its_gradients_agree_with_xlas():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, 5, 6, 7, 3)).astype(np.float32), rng.normal(size=(3, 3, 3, 3, 4)).astype(np.float32)
    strides, padding = (1, 2, 1), ((1, 1), (1, 0), (0, 2))
    ours, theirs = (jax.value_and_grad(lambda a, b, f=f: jnp.sum(f(a, b, strides, padding) ** 2), (0, 1))
                    for f in (onednn.convolve, xla))
    (value, grads), (expected, grads_xla) = ours(x, w), theirs(x, w)
    assert float(value) == pytest.approx(float(expected), rel=1e-5)
    for a, b in zip(grads, grads_xla):  # sums of products of sums: a relative bound well above float32 rounding
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


@pytest.mark.unit
def test_repeats_bitwise_jitted_and_in_a_scan():
    rng = np.random.default_rng(1)
    x, w = jnp.asarray(rng.normal(size=(8, 12, 12, 4)), jnp.float32), jnp.asarray(rng.normal(size=(3, 3, 4, 8)), jnp.float32)

    def step(k, _):  # a gradient step on the kernel: forward, input and kernel gradients
        loss, grads = jax.value_and_grad(lambda a, b: jnp.sum(onednn.convolve(a, b, (2, 2), ((1, 1), (1, 1))) ** 2),
                                         (0, 1))(x, k)
        return k - 1e-4 * grads[1], (loss, grads[0])

    scanned = jax.jit(lambda k: jax.lax.scan(step, k, None, length=3))
    first, again = scanned(w), scanned(w)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    kernel, stepped = w, jax.jit(step)
    for i in range(3):  # the scan's steps are the jitted step's, bit for bit
        kernel, (loss, grad_x) = stepped(kernel, None)
        np.testing.assert_array_equal(np.asarray(loss), np.asarray(first[1][0][i]))
        np.testing.assert_array_equal(np.asarray(grad_x), np.asarray(first[1][1][i]))
    out = np.asarray(onednn.convolve(x, w, (1, 1), ((1, 1), (1, 1))))
    assert (np.abs(out - np.asarray(xla(x, w, (1, 1), ((1, 1), (1, 1))))) <=
            rounding_bound(np.asarray(x), np.asarray(w), 1, [(1, 1), (1, 1)])).all()


@pytest.mark.unit
def test_the_context_names_onednns_version_instruction_set_and_threads():
    described = onednn.describe()
    version = ".".join(importlib.metadata.version("onednn-cpu-gomp").split(".")[:2])  # 2023.2 ships oneDNN 3.2
    assert described.startswith("onednn 3.") and described.endswith(" threads"), described
    assert version == "2023.2" and described.split()[1] == "3.2.0"
    assert onednn.supports("float32") and not onednn.supports("float16")


@pytest.mark.unit
def test_what_is_missing_is_said_in_one_line(tmp_path, monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    with monkeypatch.context() as patch:  # no wheel: what importlib.metadata says of a package not installed
        patch.setattr(importlib.metadata, "files", not_installed)
        with pytest.raises(onednn.OnednnUnavailable, match=r"^oneDNN is not installed \(pip install 'bnbench\[onednn\]'\)$"):
            onednn.build(tmp_path)
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(onednn.OnednnUnavailable, match="^no C\\+\\+ compiler 'no-such-compiler' to build"):
        onednn.build(tmp_path)
    monkeypatch.setenv("CXX", "false")  # a compiler that fails, silently
    with pytest.raises(onednn.OnednnUnavailable, match=r"^oneDNN's kernels did not build \(false exited 1\)$"):
        onednn.build(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind
    (tmp_path / "taken").write_text("a file where the cache folder would be")
    with pytest.raises(onednn.OnednnUnavailable, match=r"^cannot build oneDNN's kernels into .*taken/onednn \(Not a directory\)$"):
        onednn.build(tmp_path / "taken" / "onednn")
    with pytest.raises(ValueError, match="^oneDNN's convolution takes x and w of one dtype, not float32 and bfloat16"):
        onednn.convolve(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2), jnp.bfloat16), (1, 1), ((1, 1), (1, 1)))
    # The handler guards itself too: it reads every operand with the first one's element size.
    monkeypatch.delenv("CXX")
    with pytest.raises(Exception, match="bnbench oneDNN convolution: operands of different dtypes"):
        onednn._call("forward", jax.ShapeDtypeStruct((1, 4, 4, 2), jnp.float32), jnp.ones((1, 4, 4, 2)),
                     jnp.ones((3, 3, 2, 2), jnp.bfloat16), (1, 1), ((1, 1), (1, 1)))


@pytest.mark.unit
def test_the_extension_builds_into_the_cache_once(tmp_path):
    built = onednn.build(tmp_path)
    assert built.parent == tmp_path and built.suffix == ".so"
    stamp = built.stat().st_mtime_ns
    assert onednn.build(tmp_path) == built and built.stat().st_mtime_ns == stamp


@pytest.mark.system
def test_without_a_compiler_a_sweep_keeps_xlas_convolutions_says_why_and_never_mixes_them(workdir, write_spec, tmp_path):
    pictures = images()
    np.savez(workdir / "pictures.npz", x_train=pictures.x_train, y_train=pictures.y_train, x_test=pictures.x_test,
             y_test=pictures.y_test)
    spec = write_spec('name = "pictures"\ndataset = "npz:pictures.npz"\nmodel = "resnet"\ndepth = 8\nwidths = [4, 8, 8]\n'
                      'batch_size = 16\nsteps = 2\neval_every = 2\nseeds = 1\n[grid]\nepsilon = [1e-5, 1e-3]\n')
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    # A machine without a C++ compiler, whose cache holds no extension yet (the compilation cache stays the tests').
    bare = env | {"CXX": "no-such-compiler", "XDG_CACHE_HOME": str(tmp_path / "fresh")}

    def sweep(out, environment, *args):
        return subprocess.run([sys.executable, "-m", "bnbench", "sweep", str(spec), "--native", "--no-plots", "--out", out,
                               *args], cwd=workdir, env=environment, capture_output=True, text=True)

    with_onednn, without = sweep("with", env, "--set", "epsilon=1e-5"), sweep("without", bare, "--set", "epsilon=1e-5")
    assert with_onednn.returncode == without.returncode == 0, with_onednn.stderr + without.stderr
    described = onednn.describe()
    assert list(pd.read_csv(workdir / "with" / "runs.csv")["convolution"]) == [described]
    assert list(pd.read_csv(workdir / "without" / "runs.csv")["convolution"]) == ["xla"]
    # What each program compiled with: oneDNN's vmapped with XLA's defaults, XLA's stepwise with YNNPACK's
    # element-wise fusions (bnbench.engine.policy).
    metas = {out: json.loads((workdir / out / "meta.json").read_text()) for out in ("with", "without")}
    assert metas["with"]["compiler_options"] == {"resnet": {}} and metas["with"]["execution"] == {"resnet": "vmapped"}
    assert metas["without"]["compiler_options"] == {"resnet": engine.YNN_ELEMENTWISE}
    assert metas["without"]["execution"] == {"resnet": "stepwise"}
    assert metas["with"]["convolution"] == {"resnet": described} and metas["without"]["convolution"] == {"resnet": "xla"}
    # the notes go to stderr
    assert "ResNets and VGG on images do not use oneDNN's convolutions: no C++ compiler 'no-such-compiler'" in without.stderr
    assert "oneDNN" not in with_onednn.stderr + with_onednn.stdout
    extended = sweep("with", bare)  # the whole grid into the folder oneDNN's convolutions trained
    assert extended.returncode == 2 and extended.stderr.count("\n") == 1, extended.stderr
    assert f"convolution is '{described}' there, 'xla' here); resume where their convolutions' kernel ({described}) is" in extended.stderr


@pytest.mark.integration
def test_blocks_side_by_side_train_as_blocks_one_at_a_time_bitwise():
    """XLA calls oneDNN's kernels from two threads at once when two blocks train side by side. Each
    execution has its own scratchpad (onednn_conv.cc): with the library's shared one, these runs
    came out wrong or hung. A run's numbers are the same wherever and beside whatever it trains."""
    dataset = images(size=16)
    configs = [RunConfig(model="vgg", widths=(8, 8, 16, 16, 16), depth=11, batch_size=16, steps=4, eval_every=2,
                         optimizer="sgd", lr=0.05, seed=seed) for seed in (0, 1)]
    group = engine.Group(Signature.of(configs[0], dataset), dataset, configs)

    def curves(**options):
        assignment = engine.assign_groups([group], numerics="native", **options)
        assert {ctx.conv_kernel for ctx in assignment.contexts} == {"onednn"}
        return [r.curve for _, r in engine.train_blocks(assignment)]

    alone = curves(devices=1)
    assert curves(devices=2) == alone and alone[0] != alone[1]


@pytest.mark.unit
def test_a_sweep_says_when_resnets_or_vgg_on_images_could_use_onednn_and_nothing_otherwise():
    from bnbench.data.registry import load
    from bnbench.training import context

    device = jax.devices()[0]

    def note(model, dataset, numerics, convolution, dtype="float32"):
        config = RunConfig(model=model, widths=(4, 8, 8), depth=8 if model == "resnet" else 0, steps=2, eval_every=2,
                           dtype=dtype)
        ctx = context.of(device, "stepwise", 1, numerics, convolution, 2)
        return engine.Assignment([engine.Group(Signature.of(config, dataset), dataset, [config])], [ctx],
                                 (device,)).convolution_note()

    pictures, signals = images(), load("mnist1d", 600)
    assert note("resnet", pictures, "portable", "xla") == (
        "ResNets and VGG on images do not use oneDNN's convolutions in portable numerics; --native uses them, faster "
        "(docs/engine.md)")
    assert note("resnet", pictures, "native", onednn.describe()) is None
    # Natively, with the kernels at hand, runs without them are runs of a dtype this CPU's oneDNN lacks.
    assert note("resnet", pictures, "native", "xla", "bfloat16") == (
        "ResNets and VGG on images in bfloat16 do not use oneDNN's convolutions: oneDNN lacks bfloat16 convolutions "
        "on this CPU")
    assert note("resnet", signals, "portable", "xla") is None and note("cnn", pictures, "portable", "patches") is None
