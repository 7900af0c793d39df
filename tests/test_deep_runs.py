"""Deep networks and recipes end to end: both engines, a grid mixing model families, the columns they
write, the execution path and the memory estimate."""

import json
from typing import NamedTuple

import jax
import numpy as np
import pandas as pd
import pytest

from bnbench import data, engine
from bnbench.engine import policy, programs
from bnbench.experiment.fields import RunConfig
from bnbench.data.registry import Dataset
from bnbench.results.frames import load_runs
from bnbench.models import num_params
from bnbench.stats.summary import swept_axes
from bnbench.training.signature import HParams, Signature
from bnbench.training.program import device_data, make_program
from tests.test_convolution import needs_onednn


def images(n_train=96, n_test=32, size=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_train + n_test, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 4, n_train + n_test).astype(np.int32)
    return Dataset("images", x[:n_train], y[:n_train], x[n_train:], y[n_train:], 4)


TINY_WIDTHS = {"mlp": (8,), "cnn": (8, 8), "vgg": (8, 8, 16, 16, 16), "resnet": (4, 8, 8)}


def tiny(model: str, **fields) -> RunConfig:
    """A small run of ``model`` (ResNet-8; VGG-11) with ``fields``."""
    return RunConfig(model=model, widths=TINY_WIDTHS[model], depth=8 if model == "resnet" else 0, **fields)


def assert_the_engines_agree(group: engine.Group, **assignment_options) -> list:
    """The vectorized engine vmaps ``group``'s runs and they follow the sequential engine's to float32
    rounding; returns the sequential engine's results. The engines convolve otherwise on the CPU (as
    patches, a product, against XLA's convolution; tests/test_convolution.py bounds one convolution's
    rounding) and SGD compounds that over the steps: the relative bound is a hundred times the largest
    difference measured (the VGG's, on AVX-512)."""
    sequential = [r for _, r in engine.train_blocks(engine.assign_groups([group], engine="sequential"))]
    vmapped = [r for _, r in engine.train_blocks(engine.assign_groups([group], **assignment_options))]
    assert [r.context.execution for r in vmapped] == ["vmapped"] * len(group.configs)
    for got, ref in zip(vmapped, sequential):
        assert got.status == ref.status == "ok"
        np.testing.assert_allclose([p.train_loss for p in got.curve], [p.train_loss for p in ref.curve], rtol=1e-4)
        np.testing.assert_allclose([p.test_loss for p in got.curve], [p.test_loss for p in ref.curve], rtol=1e-4)
    assert sequential[0].curve != sequential[1].curve  # the seeds differ
    return sequential


@pytest.mark.integration
def test_both_engines_agree_on_a_tiny_resnet_with_the_whole_recipe(monkeypatch):
    dataset = images()
    configs = [
        tiny("resnet", batch_size=16, steps=12, eval_every=4, optimizer="sgd", lr=0.05, nesterov=True, schedule="cosine",
             warmup_steps=3, augment="crop_flip", dropout=0.2, shortcut="projection", residual_unit="full_preact",
             seed=seed)
        for seed in (0, 1)
    ]
    group = engine.Group(Signature.of(configs[0], dataset), dataset, configs)
    # On CPU and GPU the vectorized engine runs a ResNet one run at a time; force the vmapped path here.
    monkeypatch.setattr(policy, "ONE_AT_A_TIME", {})
    sequential = assert_the_engines_agree(group, runs_per_device=2, devices=1)
    assert sequential[0].num_params == num_params("resnet", **group.signature.model_options)


@pytest.mark.integration
@pytest.mark.parametrize("model", ["cnn", "vgg"])
def test_the_vectorized_engine_vmaps_the_cnn_and_vgg_and_agrees_with_the_sequential_one(model):
    # VGG's five stages pool 32x32 down to 2x2, the shape XLA:CPU convolves slowest; the CNN needs no more than 8x8
    dataset = images(size=32 if model == "vgg" else 8)
    configs = [tiny(model, batch_size=16, steps=8, eval_every=4, optimizer="sgd", lr=0.05, seed=seed) for seed in (0, 1)]
    assert_the_engines_agree(engine.Group(Signature.of(configs[0], dataset), dataset, configs))


@pytest.mark.unit
def test_the_engine_path_and_convolution_form_per_platform_where_they_measured_faster():
    dataset = data.load("mnist1d", 600)
    signatures = {m: Signature.of(tiny(m, steps=4, eval_every=2), dataset) for m in ("mlp", "cnn", "vgg", "resnet")}

    def paths(engine_name, platform, numerics="portable"):
        return {m: engine.choose_path(sig, engine_name, platform, numerics) for m, sig in signatures.items()}

    one, vmapped = "stepwise", "vmapped"
    # XLA's convolutions (portable numerics, any GPU): ResNets one run at a time.
    assert paths("vectorized", "cpu") == {"cnn": vmapped, "mlp": vmapped, "resnet": one, "vgg": vmapped}
    assert paths("vectorized", "gpu", "native") == {"cnn": vmapped, "mlp": vmapped, "resnet": one, "vgg": vmapped}
    assert set(paths("vectorized", "tpu", "native").values()) == {vmapped}
    assert set(paths("sequential", "gpu").values()) == {one}
    forms = {(m, p, x): engine.conv_form(sig, p, x, "portable") for m, sig in signatures.items()
             for p in ("cpu", "gpu") for x in (vmapped, one)}
    # Where a conv net vmaps on CPU (forced for ResNet with ONE_AT_A_TIME), its convolutions are patches.
    assert {k for k, v in forms.items() if v == "patches"} == {(m, "cpu", vmapped) for m in ("cnn", "vgg", "resnet")}
    assert {v for (m, _, _), v in forms.items() if m == "mlp"} == {"none"}

    class Device(NamedTuple):  # what block_size reads of a device
        platform: str

        def memory_stats(self):
            return {}

    sizes = {(m, p): engine.block_size(sig, 100, Device(p)) for m, sig in signatures.items() for p in ("cpu", "gpu")}
    assert sizes[("mlp", "cpu")] == 2 and sizes[("resnet", "cpu")] == sizes[("cnn", "cpu")] == 1
    assert sizes[("cnn", "gpu")] > 1


@needs_onednn
@pytest.mark.unit
def test_natively_on_cpu_resnets_and_vgg_on_images_vmap_with_onednns_convolutions():
    signals, pictures = data.load("mnist1d", 600), images()
    signatures = {(m, d): Signature.of(tiny(m, steps=4, eval_every=2), dataset) for m in ("mlp", "cnn", "vgg", "resnet")
                  for d, dataset in (("1-D", signals), ("2-D", pictures))}
    paths = {key: engine.choose_path(sig, "vectorized", "cpu", "native") for key, sig in signatures.items()}
    assert {key for key, path in paths.items() if path == "stepwise"} == {("resnet", "1-D")}
    forms = {(*key, x): engine.conv_form(sig, "cpu", x, "native") for key, sig in signatures.items()
             for x in ("vmapped", "stepwise")}
    assert {k for k, v in forms.items() if v == "onednn"} == {(m, "2-D", x) for m in ("vgg", "resnet")
                                                              for x in ("vmapped", "stepwise")}
    assert forms[("cnn", "2-D", "vmapped")] == "patches" and forms[("resnet", "1-D", "stepwise")] == "xla"
    for numerics, platform in (("portable", "cpu"), ("native", "gpu")):
        assert engine.conv_form(signatures[("resnet", "2-D")], platform, "vmapped", numerics) != "onednn"
    # Their programs compile with XLA's default options: YNNPACK's element-wise fusions are for XLA's convolutions.
    assert engine.compiler_options(signatures[("resnet", "2-D")], "cpu", "native", "onednn") == {}


@pytest.mark.unit
def test_resnets_on_images_compile_with_ynnpack_elementwise_fusions_natively_on_cpu_only():
    signals, pictures = data.load("mnist1d", 600), images()

    def options(model, dataset, platform, numerics="native"):
        return engine.compiler_options(Signature.of(tiny(model, steps=2, eval_every=2), dataset), platform, numerics, "xla")

    assert options("resnet", pictures, "cpu") == engine.YNN_ELEMENTWISE
    assert options("resnet", pictures, "gpu") == options("resnet", signals, "cpu") == {}
    assert options("cnn", pictures, "cpu") == options("vgg", pictures, "cpu") == {}
    # Portable numerics compile every CPU program without YNNPACK's fusions, ResNets included.
    no_ynn = {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert options("resnet", pictures, "cpu", "portable") == options("mlp", signals, "cpu", "portable") == no_ynn
    assert options("resnet", pictures, "gpu", "portable") == {}


@pytest.mark.integration
def test_the_options_reach_xla_move_a_step_by_float32_rounding_only_and_repeat_bitwise():
    dataset = images()
    config = tiny("resnet", batch_size=16, steps=1, eval_every=1)
    program, hp = make_program(Signature.of(config, dataset)), HParams.of(config)
    x_train, y_train, _, _ = device_data(dataset)
    state = jax.jit(program.init)(np.uint32(0), hp)
    args = (state, program.batch_indices(0, 0, 1)[0], hp, x_train, y_train)
    lowered = jax.jit(program.step).lower(*args)
    plain, ynn = lowered.compile(), lowered.compile(compiler_options=engine.YNN_ELEMENTWISE)
    assert "__ynn_fusion" in ynn.as_text() and ynn.as_text().count("__ynn_fusion") > plain.as_text().count("__ynn_fusion")
    expected, got, again = (jax.tree_util.tree_leaves(fn(*args)) for fn in (plain, ynn, ynn))
    for e, g, a in zip(expected, got, again):
        np.testing.assert_array_equal(g, a)
        scale = float(np.max(np.abs(e))) or 1.0
        # one step, its float32 arithmetic fused otherwise: forty times the largest difference measured (AVX-512)
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.integration
def test_a_grid_mixing_mlp_and_resnet_runs_and_records_each_model(write_spec, workdir, cli):
    path = write_spec("""
        name = "mixed"
        num_samples = 600
        batch_size = 32
        steps = 4
        eval_every = 2
        seeds = 1
        dtype = "bfloat16"
        [grid]
        model = ["mlp", "resnet"]
        lr = [0.001, 0.003]
    """)
    result = cli("sweep", path, "--no-plots")
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(workdir / "results" / "mixed" / "runs.csv")
    assert list(runs["model"]) == ["mlp", "mlp", "resnet", "resnet"]
    assert list(runs["widths"]) == ["100-100-100"] * 2 + ["16-32-64"] * 2
    assert list(runs["depth"]) == [0, 0, 20, 20]
    assert (runs["status"] == "ok").all() and (runs["dtype"] == "bfloat16").all()
    mlp_params = 40 * 100 + 100 + 2 * (100 * 100 + 100) + 3 * 2 * 100 + 100 * 10 + 10
    resnet_params = num_params("resnet", input_shape=(40,), widths=(16, 32, 64), num_classes=10, depth=20)
    assert list(runs["num_params"]) == [mlp_params] * 2 + [resnet_params] * 2
    meta = json.loads((workdir / "results" / "mixed" / "meta.json").read_text())
    assert meta["execution"] == {"mlp": "vmapped", "resnet": "stepwise"}
    assert meta["convolution"] == {"mlp": "none", "resnet": "xla"}  # a ResNet on 1-D signals keeps XLA's
    assert meta["compiler_options"] == {"mlp": {}, "resnet": {}}  # natively, as the tests run
    assert list(runs["execution"]) == ["vmapped"] * 2 + ["stepwise"] * 2
    assert list(runs["runs_per_device"]) == [engine.MAX_RUNS_PER_DEVICE["cpu"]] * 2 + [1] * 2
    # widths and depth follow from the model: the swept axes are the two the spec swept.
    assert swept_axes(load_runs(workdir / "results" / "mixed")) == ["model", "lr"]
    assert cli("report", workdir / "results" / "mixed", "--no-plots").exit_code == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    "config, dataset",
    [
        (RunConfig(eval_every=100), "mnist1d"),
        (RunConfig(model="cnn", widths=(16, 16), eval_every=100), "mnist1d"),
        (RunConfig(model="resnet", depth=8, widths=(8, 8, 16), batch_size=64, steps=20, eval_every=10), "mnist1d"),
        (RunConfig(model="resnet", depth=14, widths=(8, 16, 16), batch_size=32, steps=20, eval_every=10), "images"),
        (RunConfig(model="vgg", widths=(8, 8, 16, 16, 16), batch_size=32, steps=20, eval_every=10), "images"),
    ],
    ids=["mlp", "cnn", "resnet-8", "resnet-14", "vgg-11"],
)
def test_memory_estimate_is_at_most_2x_above_xla_buffer_assignment_and_never_below(config, dataset):
    from bnbench import data

    ds = data.load("mnist1d", 2000) if dataset == "mnist1d" else images(512, 256, 16)
    sig, runs = Signature.of(config, ds), 4
    args = (np.arange(runs, dtype=np.uint32), HParams(*(np.stack([v] * runs) for v in HParams.of(config))), *device_data(ds))
    # XLA's convolutions, as on a GPU, where the estimate sizes blocks (on CPU a conv net's hold one run).
    analysis = programs.vmapped_fn(sig, "xla").lower(*args).compile().memory_analysis()
    measured = (analysis.temp_size_in_bytes + analysis.output_size_in_bytes) / runs
    assert 1.0 <= engine.run_memory(sig, len(ds.y_test)) / measured <= 2.0


@pytest.mark.integration
def test_results_written_before_the_new_columns_resume_with_them_added(tiny_results, tiny_spec, cli):
    from bnbench.results.schema import RUN_COLUMNS

    path = tiny_results / "runs.csv"
    new = ["depth", "residual_unit", "dtype", "num_params"]
    pd.read_csv(path).drop(columns=new).to_csv(path, index=False)  # as an earlier bnbench wrote it
    result = cli("sweep", tiny_spec, "--no-plots")
    assert result.exit_code == 0 and "8 already in" in result.stdout
    assert "added the columns newer than its runs (depth, residual_unit, dtype, num_params)" in result.stderr
    runs = pd.read_csv(path)
    assert list(runs.columns) == list(RUN_COLUMNS)
    assert (runs["depth"] == 0).all() and (runs["residual_unit"] == "original").all()
    assert runs["num_params"].isna().all()
