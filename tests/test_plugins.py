"""Your own network (bnbench.models.plugin) and data (bnbench.data.own) under bnbench: faithful injection of the
norm layers, probes, records and caches, the engine's path, and one-line refusals of broken plugins."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bnbench import engine
from bnbench.engine import memory
from bnbench.sweeping import plan
from tests.test_engine import ENGINE_LOSS_BOUND

PLUGINS = Path(__file__).parent / "plugins"
HEAD = 'dataset = "synthetic"\nnum_samples = 400\nbatch_size = 16\nsteps = 12\neval_every = 6\nseeds = 1\n'


def same(a, b) -> bool:
    """Two RunResults equal in every number (their wall time and execution context aside)."""
    return a._replace(wall_s=0, context=None) == b._replace(wall_s=0, context=None)


@pytest.fixture
def twins(tmp_path):
    """``twins(body, family)``: the runs of ``body`` for the built-in ``family`` and for its
    re-implementation as a plugin (tests/plugins/reimplemented.py), configs in the same order."""
    shutil.copy(PLUGINS / "reimplemented.py", tmp_path / "reimplemented.py")

    def make(body: str, family: str = "mlp"):
        builtin, plugged = tmp_path / f"{family}.toml", tmp_path / f"{family}_plugin.toml"
        builtin.write_text(f'model = "{family}"\nwidths = [8, 6]\n{HEAD}{body}')
        plugged.write_text(f'model = "./reimplemented.py:{family}"\n{HEAD}{body}\n[model_args]\nwidths = [8, 6]\n')
        return plan.load_checked(builtin).expand(), plan.load_checked(plugged).expand()

    return make


def results(configs, **options):
    return [result for _, result in engine.run_all(configs, **options)]


GRID = '[grid]\nplacement = ["pre", "post", "none"]\nnorm = ["batch", "group", "layer", "none"]\ngroups = [2]\n'
VARIANTS = {
    "ghost": "ghost_batch_size = 8\n",
    "renorm": "renorm = true\n",
    "running_var": 'running_var = "unbiased"\n',
    "eval_stats": 'eval_stats = ["running", "batch", "precise"]\n',
    "noisy": 'placement = "post"\nnoisy_bn = 0.2\n',
    "dropout_before": 'dropout = 0.2\ndropout_placement = "before_norm"\n',
    "dropout_after": 'placement = "post"\ndropout = 0.2\n',
    "probes": 'track_activations = true\nprobes = ["grad_norm", "weight_norm", "smoothness", "stats_gap"]\n',
    "bfloat16": 'dtype = "bfloat16"\n',
    "sgd": 'optimizer = "sgd"\nlr = 0.1\nweight_decay = 1e-3\nbn_weight_decay = false\n',
}


@pytest.mark.integration
@pytest.mark.parametrize("placement", ["pre", "post", "none"])  # a test each, spread over the workers
def test_a_plugin_mlp_gives_the_built_in_mlps_runs_for_every_placement_and_norm(placement, twins):
    builtin, plugged = twins(GRID.replace('["pre", "post", "none"]', f'["{placement}"]'))
    assert len(builtin) == len(plugged) == 4
    for config, a, b in zip(builtin, results(builtin), results(plugged)):
        assert same(a, b), (config.placement, config.norm)
        assert a.status == "ok" and np.isfinite(a.test_loss)


# The variants whose plugin also trains on the sequential engine: the ones whose step differs most
# (noise, dropout, probes, another dtype); each sequential run is a compilation of its own, and the
# engines are compared variant by variant on built-ins in tests/test_engine.py.
SEQUENTIAL_CHECKED = ("noisy", "dropout_before", "probes", "bfloat16")


@pytest.mark.slow  # the heaviest compilations of the suite: make test-slow, not in CI (its 15 minutes)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_plugin_mlp_gives_the_built_in_mlps_runs_for_every_variant(name, twins):
    (builtin,), (plugged,) = twins(VARIANTS[name])
    ((_, a),), ((_, b),) = engine.run_all([builtin]), engine.run_all([plugged])
    assert same(a, b)
    if name in SEQUENTIAL_CHECKED:
        # the engines agree on plugins as on built-ins (tests/test_engine.py's ENGINE_LOSS_BOUND says how far)
        ((_, c),) = engine.run_all([plugged], engine="sequential")
        assert abs(b.test_loss - c.test_loss) <= ENGINE_LOSS_BOUND and b.test_acc_by_stats == c.test_acc_by_stats
    if name == "eval_stats":
        assert set(b.test_acc_by_stats) == {"running", "batch", "precise"}
    if name == "probes":
        assert len(b.activations) > 0
        assert {"grad_norm", "weight_norm", "mean_gap", "var_gap", "beta_smoothness"} <= {p.probe for p in b.probes}


@pytest.mark.integration
def test_a_plugin_cnn_gives_the_built_in_cnns_runs_and_takes_its_path(twins):
    # each placement and norm kind once: their crossings are the MLP's tests above, the convolution is this one's
    pairs = [twins(body, "cnn") for body in ('placement = "pre"\nnorm = "batch"\n', 'placement = "post"\nnorm = "group"\ngroups = 2\n')]
    builtin, plugged = [c for b, _ in pairs for c in b], [c for _, p in pairs for c in p]
    for a, b in zip(results(builtin), results(plugged)):
        assert same(a, b)  # on the CPU both vmapped, one run per block, convolutions rewritten as patches
        assert a.context.execution == b.context.execution == "vmapped" and a.context.runs_per_device == 1


@pytest.mark.integration
def test_a_plugin_mlp_is_vectorized_as_the_built_in_mlp_is(twins):
    builtin, plugged = twins('[grid]\nepsilon = [1e-5, 1e-3]\n')
    for a, b in zip(results(builtin), results(plugged)):
        assert same(a, b)
        assert a.context.execution == b.context.execution == "vmapped"


GOOD_NET = """
import jax
from bnbench.models import plugin


def net(ctx, *, width=8):
    def init(key):
        return {"w": jax.random.normal(key, (ctx.input_shape[0], width)), "head": jax.numpy.zeros((width, ctx.num_classes))}

    def apply(params, x, norm, *, train, key):
        h = norm.act(x @ params["w"], jax.nn.relu)
        {body}
        return h @ params["head"]

    return plugin.Network(init, apply)
"""
BAD_PLUGINS = {
    # name: (the file, or GOOD_NET's {body}; model_args; what the message says), "# <-" marks the line it names
    "import error": ("import jax\nimport not_a_module_anywhere  # <-\n", "", "ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
    "syntax error": ("def net(ctx:\n", "", "cannot import bad.py (SyntaxError"),
    "missing function": ("def nett(ctx):\n    return None\n", "", "no function 'net' (did you mean 'nett'?)"),
    "wrong return type": ("def net(ctx, *, width=8):\n    return {'init': None}\n", "", "net returned dict, not a bnbench.plugin.Network"),
    "init fails": ("from bnbench import plugin\n\ndef net(ctx):\n    def init(key):\n        raise RuntimeError('no weights')  # <-\n"
                   "    return plugin.Network(init, lambda *a, **k: None)\n", "", "init failed (RuntimeError: no weights)"),
    "logits of the wrong shape": ("params = {**params, 'head': jax.numpy.zeros((8, 5))}", "",
                                  "returned (2, 5) float32; expected float logits of shape (2, 4)"),
    "sites depend on train": ("h = norm(h) if train else h  # <-", "", "the norm sites differ between calls"),
    "sites depend on the batch": ("h = norm(h) if x.shape[0] == 2 else h  # <-", "", "the norm sites differ between calls"),
    "python if on a traced value": ("h = h if h.mean() > 0 else -h  # <-", "", "a Python `if`, `bool()` or `int()` on a traced value"),
    "fails at another batch size": ("h = h.reshape(2, 8)  # <-", "", "apply (train=True, a batch of 3) failed"),
    "unknown model_args key": ("", "widht = 4", "net takes no argument 'widht' (did you mean 'width'?)"),
    "missing model_args": ("def net(ctx, *, depth):\n    pass\n", "", "net needs model_args.depth (it has no default)"),
    "no norm site": (GOOD_NET.replace("norm.act(x @ params[\"w\"], jax.nn.relu)", "jax.nn.relu(x @ params[\"w\"])")
                     .replace("{body}", "pass"), "", "net's network calls no norm site, so every batch norm setting"),
    "apply without key": (GOOD_NET.replace("def apply(params, x, norm, *, train, key):",
                                           "def apply(params, x, norm, *, train):  # <-").replace("{body}", "pass"), "",
                          "apply(params, x, norm, *, train) cannot be called as apply(params, x, norm, *, train, key)"),
}


def write_plugin(folder: Path, text: str) -> int | None:
    """Writes ``bad.py`` (``text``, or GOOD_NET with ``text`` as its body); returns the line marked ``# <-``."""
    source = text if ("def " in text or "import" in text) else GOOD_NET.replace("{body}", text or "pass")
    (folder / "bad.py").write_text(source)
    marked = [i for i, line in enumerate(source.splitlines(), 1) if line.rstrip().endswith("# <-")]
    return marked[0] if marked else None


@pytest.mark.unit
@pytest.mark.parametrize("case", sorted(BAD_PLUGINS))
def test_a_broken_plugin_is_one_line_naming_file_and_line_exit_2_nothing_written(case, workdir, write_spec, cli):
    text, args, expected = BAD_PLUGINS[case]
    line = write_plugin(workdir, text)
    path = write_spec(f'model = "./bad.py:net"\n{HEAD}\n[model_args]\n{args}\n')
    before = sorted(p.name for p in workdir.iterdir())
    for command in (("sweep", path), ("models", path), ("sweep", path, "--dry-run")):
        result = cli(*command)
        assert result.exit_code == 2, result.output
        message = result.output.strip()
        assert "\n" not in message and "Traceback" not in message, message
        assert expected in message and "bad.py" in message, message
        if line:
            assert f"bad.py:{line}" in message, message
    assert sorted(p.name for p in workdir.iterdir()) == before


@pytest.mark.unit
def test_ics_is_refused_for_plugins_with_the_reason(workdir, write_spec, cli):
    write_plugin(workdir, "")
    result = cli("sweep", write_spec(f'model = "./bad.py:net"\nprobes = ["ics"]\n{HEAD}'))
    assert result.exit_code == 2 and "probes: 'ics' updates a chain of layers one by one" in result.output


@pytest.mark.unit
def test_unknown_model_args_on_a_built_in_model_are_refused(workdir, write_spec, cli):
    result = cli("sweep", write_spec(f'model = "mlp"\n{HEAD}\n[model_args]\nwidth = 3\n'))
    assert result.exit_code == 2 and "model_args: applies to plugin networks" in result.output


@pytest.mark.integration
def test_a_model_argument_is_a_grid_axis_and_a_column(workdir, write_spec, cli):
    write_plugin(workdir, "h = norm(h)")
    path = write_spec(f'model = "./bad.py:net"\n{HEAD}\n[grid]\n"model_args.width" = [4, 8]\n')
    result = cli("sweep", path, "--no-plots", "--set", "model_args.width=4,8")
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(workdir / "results" / "spec" / "runs.csv")
    assert runs["model_args.width"].tolist() == [4, 8]
    assert runs["num_params"].tolist() == [16 * 4 + 4 * 4 + 4 * 4, 16 * 8 + 8 * 4 + 8 * 4]  # w, head, 2 norm sites
    assert runs["model_source"].str.endswith("bad.py@" + runs["model_source"][0].rpartition("@")[2]).all()


@pytest.mark.integration
def test_editing_the_plugin_refuses_resume_naming_the_file_and_never_reuses_its_program(workdir, write_spec, cli):
    write_plugin(workdir, "h = norm(h)")
    path = write_spec(f'model = "./bad.py:net"\n{HEAD}')
    assert cli("sweep", path, "--no-plots").exit_code == 0
    first = pd.read_csv(workdir / "results" / "spec" / "runs.csv")
    meta = json.loads((workdir / "results" / "spec" / "meta.json").read_text())
    assert str(workdir / "bad.py") in json.dumps(meta)
    write_plugin(workdir, "h = norm(2 * h) + 1")
    result = cli("sweep", path, "--no-plots", "--seeds", "2")
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "\n" not in message and f"{workdir / 'bad.py'} changed since" in message, message
    assert "restore the code they ran" in message
    assert pd.read_csv(workdir / "results" / "spec" / "runs.csv").equals(first)
    assert cli("sweep", path, "--no-plots", "--out", "edited").exit_code == 0
    edited = pd.read_csv(workdir / "edited" / "runs.csv")
    assert edited["model_source"][0] != first["model_source"][0]
    assert edited["test_loss"][0] != first["test_loss"][0]  # the edited code ran, not the cached program


def arrays(n_train=120, n_test=40, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x_train=rng.normal(size=(n_train, features)).astype(np.float32), y_train=rng.integers(0, classes, n_train),
                x_test=rng.normal(size=(n_test, features)).astype(np.float32), y_test=rng.integers(0, classes, n_test))


OWN_DATA = 'model = "mlp"\nwidths = [8]\nbatch_size = 16\nsteps = 10\neval_every = 5\n'


@pytest.mark.integration
def test_an_npz_data_set_round_trips_and_its_digest_is_recorded(workdir, write_spec, cli):
    from bnbench import data

    (workdir / "data").mkdir()
    np.savez(workdir / "data" / "mine.npz", **arrays(), num_classes=5)
    result = cli("sweep", write_spec(f'dataset = "npz:data/mine.npz"\n{OWN_DATA}'), "--no-plots")
    assert result.exit_code == 0, result.output
    loaded, expected = data.load("npz:data/mine.npz"), arrays()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(loaded, name), expected[name])
    assert loaded.num_classes == 5 and loaded.input_shape == (6,)
    runs = pd.read_csv(workdir / "results" / "spec" / "runs.csv")
    assert runs["data_source"][0].startswith(str(workdir / "data" / "mine.npz") + "@")
    assert runs["model_source"].isna().all()


@pytest.mark.integration
def test_num_samples_and_the_batch_size_check_apply_to_own_data(workdir, write_spec, cli):
    from bnbench import data

    np.savez(workdir / "mine.npz", **arrays())
    ok = cli("sweep", write_spec(f'dataset = "npz:mine.npz"\nnum_samples = 80\n{OWN_DATA}'), "--no-plots")
    assert ok.exit_code == 0, ok.output
    assert len(data.load("npz:mine.npz", 80).y_train) == 60  # the split's proportions, 120:40
    big = cli("sweep", write_spec(f'dataset = "npz:mine.npz"\n{OWN_DATA}batch_size = 200\n'.replace("batch_size = 16\n", "")))
    assert big.exit_code == 2 and "200 is larger than the training split of 'npz:mine.npz' (120 examples)" in big.output


BAD_DATA = {
    "object arrays": (lambda a: {**a, "x_train": np.array([[1.0], "x"], dtype=object)}, "holds object arrays, which need pickle"),
    "NaN": (lambda a: {**a, "x_test": np.where(np.arange(40)[:, None] == 3, np.nan, a["x_test"])}, "x_test holds 6 NaN/inf values"),
    "labels out of range": (lambda a: {**a, "num_classes": 2}, "labels must lie in [0, num_classes=2)"),
    "mismatched lengths": (lambda a: {**a, "y_train": a["y_train"][:-1]}, "x_train has 120 examples, y_train 119 labels"),
    "integer inputs": (lambda a: {**a, "x_train": (a["x_train"] * 10).astype(np.int64)}, "x_train is int64, not floating point"),
    "float labels": (lambda a: {**a, "y_test": a["y_test"].astype(np.float32)}, "y_test must be a 1-D array of integer labels"),
    "a missing array": (lambda a: {k: v for k, v in a.items() if k != "y_test"}, "holds no array 'y_test'"),
    "other example shapes": (lambda a: {**a, "x_test": a["x_test"][:, :5]}, "x_train's examples are (6,), x_test's (5,)"),
    "channels first": (lambda a: {**a, **{k: np.zeros((len(a[k]), 1, 4, 4), np.float32) for k in ("x_train", "x_test")}},
                       "x_train is (120, 1, 4, 4), which looks channels first (N, C, H, W)"),
}


@pytest.mark.unit
@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_npz_data_is_refused_in_one_line_before_anything_is_written(case, workdir, write_spec, cli):
    change, expected = BAD_DATA[case]
    np.savez(workdir / "bad.npz", **change(arrays()))
    path = write_spec(f'dataset = "npz:bad.npz"\n{OWN_DATA}')
    before = sorted(p.name for p in workdir.iterdir())
    result = cli("sweep", path)
    assert result.exit_code == 2 and "\n" not in result.output.strip(), result.output
    assert f"{workdir / 'bad.npz'}: {expected}" in result.output, result.output
    assert sorted(p.name for p in workdir.iterdir()) == before


@pytest.mark.unit
def test_images_that_only_look_channels_first_are_taken_as_they_are_on_request(workdir, write_spec):
    from bnbench import data

    np.savez(workdir / "square.npz", **{**arrays(), **{k: np.ones((n, 3, 5, 5), np.float32) for k, n in
                                                       (("x_train", 120), ("x_test", 40))}})
    spec = plan.load_checked(write_spec(f'dataset = "npz:square.npz"\ndata_layout = "as_is"\n{OWN_DATA}'))
    assert data.info("npz:square.npz").input_shape == (3, 5, 5) and 'data_layout = "as_is"' in spec.to_toml()


@pytest.mark.integration
def test_a_network_with_no_norm_site_runs_where_every_run_has_no_norm(workdir, write_spec):
    write_plugin(workdir, BAD_PLUGINS["no norm site"][0])
    runs = plan.load_checked(write_spec(f'model = "./bad.py:net"\n{HEAD}[grid]\nnorm = ["none"]\n')).expand()
    assert [r.status for r in results(runs)] == ["ok"]


@pytest.mark.unit
def test_a_file_that_is_not_an_npz_or_is_missing_is_refused(workdir, write_spec, cli):
    (workdir / "bad.npz").write_text("not a zip file")
    result = cli("sweep", write_spec(f'dataset = "npz:bad.npz"\n{OWN_DATA}'))
    assert result.exit_code == 2 and "cannot be read as an .npz file" in result.output
    result = cli("sweep", write_spec(f'dataset = "npz:nowhere.npz"\n{OWN_DATA}'))
    assert result.exit_code == 2 and f"no such file {workdir / 'nowhere.npz'}" in result.output


@pytest.mark.unit
def test_a_data_set_too_big_for_the_device_is_refused_before_training(workdir, write_spec, cli, monkeypatch):
    np.savez(workdir / "mine.npz", **arrays())
    monkeypatch.setattr(memory, "memory_available", lambda device: 4096)
    path = write_spec(f'dataset = "npz:mine.npz"\n{OWN_DATA}')
    result = cli("sweep", path)
    assert result.exit_code == 2 and "more than half the memory" in result.output, result.output
    assert not (workdir / "results" / "spec" / "runs.csv").exists()


LOADERS = {
    "a tuple": "return a['x_train'], a['y_train'], a['x_test'], a['y_test']",
    "a mapping": "return a",
    "a Dataset": "return Dataset('mine', a['x_train'], a['y_train'], a['x_test'], a['y_test'], 3)",
}


@pytest.mark.integration
@pytest.mark.parametrize("form", sorted(LOADERS))
def test_a_python_loader_gives_the_same_runs_as_the_npz_of_its_arrays(form, workdir, write_spec, cli):
    np.savez(workdir / "mine.npz", **arrays())
    (workdir / "load.py").write_text(
        "import numpy as np\nfrom bnbench.data.registry import Dataset\n\n\ndef load():\n"
        f"    a = dict(np.load({str(workdir / 'mine.npz')!r}))\n    {LOADERS[form]}\n"
    )
    for name, reference in (("npz", "npz:mine.npz"), ("loader", "./load.py:load")):
        result = cli("sweep", write_spec(f'dataset = "{reference}"\n{OWN_DATA}'), "--no-plots", "--out", name)
        assert result.exit_code == 0, result.output
    npz, loader = pd.read_csv(workdir / "npz" / "runs.csv"), pd.read_csv(workdir / "loader" / "runs.csv")
    assert npz["test_loss"].equals(loader["test_loss"])
    assert npz["data_source"][0].rpartition("@")[2] == loader["data_source"][0].rpartition("@")[2]


@pytest.mark.unit
def test_a_failing_loader_is_one_line_naming_its_line(workdir, write_spec, cli):
    (workdir / "load.py").write_text("def load():\n    raise FileNotFoundError('where are my signals')\n")
    result = cli("sweep", write_spec(f'dataset = "./load.py:load"\n{OWN_DATA}'))
    assert result.exit_code == 2 and "\n" not in result.output.strip()
    assert f"{workdir / 'load.py'}:2: the data loader failed (FileNotFoundError: where are my signals)" in result.output


ENTRY_POINTS = """
import numpy as np
from bnbench.models import plugin
import jax


def net(ctx, *, width=4):
    def init(key):
        return {"w": jax.random.normal(key, (ctx.input_shape[0], width)), "head": jax.numpy.zeros((width, ctx.num_classes))}

    def apply(params, x, norm, *, train, key):
        return norm.act(x @ params["w"], jax.nn.relu) @ params["head"]

    return plugin.Network(init, apply)


def load():
    rng = np.random.default_rng(1)
    return (rng.normal(size=(64, 5)).astype(np.float32), rng.integers(0, 2, 64),
            rng.normal(size=(16, 5)).astype(np.float32), rng.integers(0, 2, 16))
"""


@pytest.mark.integration
def test_models_and_data_sets_of_an_installed_distribution_are_found_by_entry_point(workdir, write_spec, cli, monkeypatch):
    site = workdir / "site"
    (site / "labnets").mkdir(parents=True)
    (site / "labnets" / "__init__.py").write_text(ENTRY_POINTS)
    info = site / "labnets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: labnets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bnbench.models]\nlabnet = labnets:net\n\n[bnbench.datasets]\nlabdata = labnets:load\n")
    monkeypatch.syspath_prepend(str(site))
    path = write_spec('model = "labnet"\ndataset = "labdata"\nbatch_size = 8\nsteps = 6\neval_every = 3\n')
    listing = cli("models", path)
    assert listing.exit_code == 0 and "labnet" in listing.output and "entry point labnet" in listing.output, listing.output
    result = cli("sweep", path, "--no-plots")
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(workdir / "results" / "spec" / "runs.csv")
    assert runs["model_source"][0].startswith("entry point labnet@") and runs["data_source"][0].startswith("entry point labdata@")
    unknown = cli("sweep", write_spec('model = "labnett"\n'))
    assert unknown.exit_code == 2 and "installed: labnet" in unknown.output and "did you mean 'labnet'?" in unknown.output


@pytest.mark.integration
def test_adamw_by_name_is_bnbenchs_adam_and_its_float_arguments_are_traced(workdir, write_spec):
    from bnbench.training.signature import Signature

    base = f'model = "mlp"\nwidths = [8]\nplacement = "none"\n{HEAD}weight_decay = 1e-3\n'
    adam = plan.load_checked(write_spec(base + 'optimizer = "adam"\n', "adam.toml")).expand()
    adamw = plan.load_checked(write_spec(base + 'optimizer = "adamw"\n[grid]\n"optimizer_args.b1" = [0.9, 0.0]\n',
                                         "adamw.toml")).expand()
    datasets = {c.dataset: __import__("bnbench").load_dataset(c.dataset, c.num_samples) for c in adam}
    assert len({Signature.of(c, datasets[c.dataset]) for c in adamw}) == 1  # b1 traced: one program
    (reference,), (same_b1, other_b1) = results(adam), results(adamw)
    # b1 = 0.9 is optax's default, which bnbench's adam has as a constant: traced, it may round otherwise.
    # No norm layer (placement none): no gradient is zero in exact arithmetic, so Adam has no rounding noise
    # to turn into steps of +-lr (the comment above ADAPTED), and rounding moves the loss by a few ulps at
    # most (not at all where measured); another b1 moves it by orders of magnitude more.
    rounding = abs(same_b1.test_loss - reference.test_loss)
    assert rounding <= 1e-5 and abs(other_b1.test_loss - reference.test_loss) > 100 * 1e-5


@pytest.mark.integration
@pytest.mark.parametrize("name", ["lion", "rmsprop", "lamb", "sgd"])
def test_optax_optimizers_by_name_train(name, workdir, write_spec, cli):
    body = f'model = "mlp"\nwidths = [8]\n{HEAD}optimizer = "{name}"\nlr = 0.01\n'
    if name == "rmsprop":
        body += "[optimizer_args]\ndecay = 0.8\ncentered = true\n"
    result = cli("sweep", write_spec(body), "--no-plots")
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(workdir / "results" / "spec" / "runs.csv")
    assert runs["status"].tolist() == ["ok"] and runs["test_loss"][0] < 5
    if name == "rmsprop":
        assert runs["optimizer_args.decay"].tolist() == [0.8] and runs["optimizer_args.centered"].tolist() == [True]


@pytest.mark.unit
@pytest.mark.parametrize("body, expected", [
    ('optimizer = "adamw"\n[optimizer_args]\nbta1 = 0.9\n', "optax.adamw takes no argument 'bta1' (did you mean 'b1'?)"),
    ('optimizer = "adamw"\n[optimizer_args]\nlearning_rate = 0.1\n', "'learning_rate' is set by the run field 'lr'"),
    ('optimizer = "sgd"\n[optimizer_args]\nmomentum = 0.9\n', "bnbench's 'sgd' takes no optimizer_args"),
    ('optimizer = "adamww"\n', "did you mean 'adamw'?"),
])
def test_bad_optimizer_settings_are_refused_in_one_line(body, expected, write_spec, cli):
    result = cli("sweep", write_spec(f'model = "mlp"\n{HEAD}{body}'))
    assert result.exit_code == 2 and expected in result.output and "\n" not in result.output.strip(), result.output


@pytest.mark.unit
def test_the_new_activations_match_their_float64_definitions():
    from scipy.special import erf

    from bnbench.models import ACTIVATION_FUNCTIONS

    x = np.linspace(-6, 6, 241)
    reference = {
        "gelu": x * 0.5 * (1 + erf(x / np.sqrt(2))),  # exact, as torch.nn.GELU() and keras's default
        "silu": x / (1 + np.exp(-x)),
        "leaky_relu": np.where(x > 0, x, 0.01 * x),
        "elu": np.where(x > 0, x, np.expm1(x)),
        "softplus": np.log1p(np.exp(x)),
    }
    for name, expected in reference.items():
        got = np.asarray(ACTIVATION_FUNCTIONS[name](x.astype(np.float32)), np.float64)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.integration
def test_a_built_in_model_trains_with_each_new_activation(workdir, write_spec, cli):
    path = write_spec(f'model = "mlp"\nwidths = [8]\n{HEAD}[grid]\nactivation = ["gelu", "silu", "leaky_relu", "elu", "softplus"]\n')
    result = cli("sweep", path, "--no-plots")
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(workdir / "results" / "spec" / "runs.csv")
    assert runs["status"].eq("ok").all() and runs["test_loss"].nunique() == 5


# The settings of an adapted network's runs against its native twin's (tests/test_adapter_*.py). SGD: Adam
# turns the rounding noise of gradients that are zero in exact arithmetic (the biases before a BN layer)
# into steps of +-lr, and an Equinox model, called per example, rounds otherwise.
ADAPTED = ('optimizer = "sgd"\nlr = 0.1\n[grid]\nnorm = ["batch", "layer", "none"]\neval_stats = [["running", "batch"]]\n'
           'momentum = [0.8]\n')


@pytest.mark.unit
@pytest.mark.parametrize("framework", ["nnx", "eqx"])
def test_an_adapted_model_keeps_no_norm_layer_of_its_own(framework):
    """The framework's norm layers are gone, bnbench's sites hold the norm parameters (that the adapted
    networks train as their native twins: tests/test_adapter_equinox.py)."""
    pytest.importorskip("flax.nnx")
    pytest.importorskip("equinox")
    assert _parameter_paths(PLUGINS / "frameworks.py", framework) == [
        f"{layer}.{name}" for layer in ("head", "l1", "l2") for name in ("bias", "kernel" if framework == "nnx" else "weight")
    ]


@pytest.mark.unit
@pytest.mark.parametrize("framework", ["nnx", "eqx"])
def test_an_adapted_conv_net_normalizes_over_its_own_channel_axis_as_its_batchnorm_does(framework):
    pytest.importorskip("flax.nnx")
    pytest.importorskip("equinox")
    import jax

    from bnbench.models import plugin
    from bnbench.models.plugged import plugged
    from bnbench.norm.settings import BNSettings

    module = _load(PLUGINS / "conv_frameworks.py")
    ctx = plugin.Context((8, 8, 1), 3, np.float32)
    model = plugged(getattr(module, f"{framework}_conv2d"), {}, where=str(PLUGINS / "conv_frameworks.py"),
                    input_shape=ctx.input_shape, num_classes=ctx.num_classes)
    key = jax.random.PRNGKey(3)
    x = jax.random.normal(jax.random.PRNGKey(4), (16, *ctx.input_shape)) * 3 + 1
    params, state = model.init(key)
    assert [p.scale.shape for p in params["norm"]] == [(4,)]  # one site of the conv's 4 channels
    ours, _ = model.apply(params, state, x, train=True, bn_settings=BNSettings(epsilon=1e-5))
    np.testing.assert_allclose(ours, module.own_training_forward(framework, ctx, key, x), rtol=1e-5, atol=1e-5)


def _load(file: Path):
    import importlib.util

    loader = importlib.util.spec_from_file_location(f"{file.stem}_under_test", file)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def _parameter_paths(file: Path, framework: str) -> list[str]:
    """The parameters of the adapted model, by path (``l1.kernel``), sorted."""
    import jax

    from bnbench.models import plugin

    params = getattr(_load(file), f"{framework}_net")(plugin.Context((16,), 4, np.float32)).init(jax.random.PRNGKey(0))
    paths = [jax.tree_util.keystr(path, simple=True, separator=".") for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    return sorted(p.removesuffix(".value") for p in paths)


@pytest.mark.unit
@pytest.mark.parametrize("network, setting, message", [
    ("nnx_net", '[grid]\nplacement = ["pre", "post"]\n',
     "places its own norm layers (an adapted model whose code calls them: Flax NNX, Linen, Equinox, a subclassed "
     "Keras model): placement cannot be swept"),
    ("eqx_net", "ghost_batch_size = 4\n", "frameworks.py: ghost_batch_size needs a batch axis, and this network runs per example"),
])
def test_what_an_adapted_model_cannot_take_is_refused_in_one_line(network, setting, message, workdir, write_spec, cli):
    pytest.importorskip("flax.nnx")
    pytest.importorskip("equinox")
    shutil.copy(PLUGINS / "frameworks.py", workdir / "frameworks.py")
    result = cli("sweep", write_spec(f'model = "./frameworks.py:{network}"\n{HEAD}{setting}'))
    assert result.exit_code == 2 and "\n" not in result.output.strip()
    assert message in result.output
    assert not (workdir / "results" / "spec" / "runs.csv").exists()


@pytest.mark.unit
def test_models_lists_each_network_with_its_source_input_and_parameters(workdir, write_spec, cli):
    write_plugin(workdir, "h = norm(h)")
    np.savez(workdir / "mine.npz", **arrays(features=16))
    result = cli("models", write_spec(f'model = "./bad.py:net"\ndataset = "npz:mine.npz"\n{HEAD}[grid]\n"model_args.width" = [4, 8]\n'
                                      .replace('dataset = "synthetic"\n', "")))
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    for expected in ("width=4", "width=8", f"{16 * 4 + 4 * 3 + 4 * 4:,}", f"{16 * 8 + 8 * 3 + 8 * 4}",
                     "bad.py@", "mine.npz@", "16"):
        assert expected in out, (expected, result.output)


EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.system
def test_the_examples_run_as_the_docs_say(tmp_path):
    """The docs' commands, each in its own process as a user runs them."""
    pytest.importorskip("flax.nnx")
    from bnbench.models import adapters  # noqa: F401 - selects Keras's JAX backend before keras is first imported
    pytest.importorskip("keras")
    folder = tmp_path / "examples"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns("data"))
    subprocess.run([sys.executable, folder / "make_data.py"], check=True, capture_output=True)
    assert (folder / "data" / "signals.npz").exists()
    for name in ("sweep", "conv", "nnx", "linen", "keras"):
        done = subprocess.run([sys.executable, "-m", "bnbench", "sweep", f"examples/{name}.toml", "--no-plots",
                               "--out", name], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        runs = pd.read_csv(tmp_path / name / "runs.csv")
        assert runs["status"].eq("ok").all() and runs["test_acc"].gt(0.4).all(), name
