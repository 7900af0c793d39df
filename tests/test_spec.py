"""Specs: expansion and overrides; every invalid input exits 2 with one line and writes nothing."""

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbench.experiment.fields import RunConfig
from bnbench.experiment.runs import SpecError
from bnbench.experiment.spec import load_spec, parse_spec, with_overrides

pytestmark = pytest.mark.unit


def test_expansion_is_the_grid_product_times_seeds(tiny_spec):
    spec = load_spec(tiny_spec)
    runs = spec.expand()
    assert [(r.placement, r.epsilon, r.seed) for r in runs] == [
        (p, e, s) for p in ("pre", "none") for e in (1e-5, 1e-3) for s in (0, 1)
    ]
    assert all(r.dataset == "synthetic" and r.widths == (8,) and r.steps == 30 for r in runs)
    assert len({r.run_id for r in runs}) == 8


def test_defaults_are_resolved():
    (run,) = parse_spec({"steps": 50}, source="x.toml", default_name="x").expand()
    assert run.num_samples == 5000 and run.eval_every == 5
    assert run.momentum == 0.99 and run.epsilon == 1e-5 and run.placement == "pre"


def test_overrides_replace_and_add_axes(tiny_spec):
    spec = with_overrides(load_spec(tiny_spec), sets=["epsilon=0.1", "widths=4-4,8"], seeds=3)
    runs = spec.expand()
    assert {r.epsilon for r in runs} == {0.1}
    assert {r.widths for r in runs} == {(4, 4), (8,)}
    assert {r.seed for r in runs} == {0, 1, 2}
    assert len(runs) == 2 * 1 * 2 * 3


def test_run_id_is_stable_and_sensitive_to_every_field():
    base = RunConfig(dataset="synthetic", num_samples=100, eval_every=10)
    assert base.run_id == RunConfig(dataset="synthetic", num_samples=100, eval_every=10).run_id
    assert base.run_id != RunConfig(dataset="synthetic", num_samples=100, eval_every=10, seed=1).run_id
    assert base.run_id != RunConfig(dataset="synthetic", num_samples=100, eval_every=10, momentum=0.9).run_id


def test_epochs_and_linear_lr_scaling_resolve_per_batch_size():
    raw = {"dataset": "synthetic", "num_samples": 1200, "epochs": 2, "lr": 0.1, "lr_scaling_batch_size": 32}
    spec = parse_spec(raw | {"grid": {"batch_size": [8, 64]}}, source="x.toml", default_name="x")
    runs = spec.expand()
    assert [(r.batch_size, r.steps, r.effective_lr) for r in runs] == [(8, 2 * (960 // 8), 0.025), (64, 2 * (960 // 64), 0.2)]
    # The written spec leaves the derived steps out, so it reads back.
    reread = parse_spec(tomllib.loads(spec.to_toml()), source="y.toml", default_name="y")
    assert [r.run_id for r in reread.expand()] == [r.run_id for r in runs]


def test_eval_stats_on_the_command_line_is_one_list(tiny_spec):
    """Every mode is evaluated within one run, so sweeping eval_stats would train the same runs twice:
    commas and dashes both separate the modes of the one list."""
    for text in ("running,precise,batch", "running-precise-batch"):
        spec = with_overrides(load_spec(tiny_spec), sets=[f"eval_stats={text}"])
        assert {r.eval_stats for r in spec.expand()} == {("running", "precise", "batch")}


def test_resolved_spec_toml_loads_back_to_the_same_runs(tiny_spec, write_spec):
    spec = with_overrides(load_spec(tiny_spec), sets=["lr=0.01,0.1"])
    again = load_spec(write_spec(spec.to_toml(), name="tiny.toml"))
    assert [r.run_id for r in again.expand()] == [r.run_id for r in spec.expand()]
    assert again.spec_hash == spec.spec_hash


BAD_SPECS = {
    "unknown top-level key": ("batchsize = 4", "did you mean 'batch_size'"),
    "unknown grid key": ("[grid]\nplacemnt = ['pre']", "grid.placemnt"),
    "wrong type": ('batch_size = "64"', "batch_size"),
    "negative batch size": ("batch_size = -3", "batch_size: must be an integer >= 1"),
    "zero batch size": ("batch_size = 0", "batch_size"),
    "batch larger than training split": ("batch_size = 961", "larger than the training split"),
    "zero epsilon": ("epsilon = 0.0", "epsilon"),
    "negative epsilon in grid": ("[grid]\nepsilon = [1e-5, -1e-3]", "grid.epsilon"),
    "momentum of one": ("momentum = 1.0", "momentum: must be a finite number in [0, 1)"),
    "negative momentum": ("momentum = -0.1", "momentum"),
    "non-finite lr": ("lr = inf", "lr"),
    "unknown dataset": ('dataset = "imagenet"', "dataset: dataset 'imagenet': must be one of"),
    "unknown activation": ('activation = "swishy"', "activation"),
    "unknown placement": ('placement = "middle"', "placement"),
    "unknown model": ('model = "transformer"', "model: model 'transformer': must be one of mlp, cnn, vgg, resnet"),
    "misspelt model": ('model = "mpl"', "did you mean 'mlp'?"),
    "depth for the mlp": ("depth = 20", "depth: applies to models 'vgg' and 'resnet'"),
    "resnet depth not 6n+2": ('model = "resnet"\ndepth = 21', "depth: resnet depth must be 6n+2"),
    "vgg depth": ('model = "vgg"\ndepth = 13', "depth: vgg depth must be 11 or 16"),
    "resnet widths per stage": ('model = "resnet"\nwidths = [16, 32]', "widths: resnet takes one width per stage (3)"),
    "unknown residual unit": ('model = "resnet"\nresidual_unit = "sandwich"', "residual_unit: must be one of"),
    "residual unit on the mlp": ('residual_unit = "full_preact"', "residual_unit: applies to model = 'resnet' only"),
    "unknown shortcut": ('model = "resnet"\nshortcut = "dense"', "shortcut: must be one of"),
    "unknown init": ('model = "resnet"\ninit = "zero"', "init: must be one of"),
    "fixup without residuals": ('model = "resnet"\nresidual_unit = "none"\ninit = "fixup"', "residual_unit 'none' has none"),
    "placement on a resnet": ('model = "resnet"\nplacement = "post"', "placement: resnet places its norm layers"),
    "ics on a resnet": ('model = "resnet"\nprobes = ["ics"]', "probes: 'ics' needs a chain"),
    "unknown schedule": ('schedule = "linear"', "schedule: must be one of"),
    "warm-up as long as training": ("warmup_steps = 20", "warmup_steps: must be less than steps=20"),
    "negative warm-up": ("warmup_steps = -1", "warmup_steps: must be an integer >= 0"),
    "decreasing milestones": ("lr_milestones = [0.75, 0.5]", "lr_milestones: must be increasing"),
    "milestone past the end": ("lr_milestones = [0.5, 1.5]", "lr_milestones: must be a non-empty increasing list"),
    "zero lr decay": ("lr_decay = 0.0", "lr_decay: must be a finite number in (0, 1]"),
    "nesterov not a boolean": ("nesterov = 1", "nesterov: must be true or false"),
    "unknown augmentation": ('augment = "mixup"', "augment: must be one of"),
    "augmenting non-images": ('augment = "crop_flip"', "augment: 'crop_flip' takes images"),
    "dropout of one": ("dropout = 1.0", "dropout: must be a finite number in [0, 1)"),
    "unknown dropout placement": ('dropout_placement = "before_activation"', "dropout_placement: must be one of"),
    "unknown dtype": ('dtype = "float16"', "dtype: must be one of"),
    "unknown optimizer": ('optimizer = "adamww"', "did you mean 'adamw'"),
    "empty widths": ("widths = []", "widths"),
    "empty grid axis": ("[grid]\nlr = []", "grid.lr: must be a non-empty list"),
    "duplicate grid value": ("[grid]\nbatch_size = [8, 8]", "twice"),
    "eval_every above steps": ("eval_every = 21", "eval_every: must be in [1, steps=20]"),
    "zero seeds": ("seeds = 0", "seeds"),
    "duplicate seeds": ("seeds = [1, 1]", "seeds"),
    "toml syntax": ("batch_size = [1,\nlr = ", "TOML syntax: Invalid value (at line 4"),
    "unknown norm": ('norm = "instance"', "norm: must be one of"),
    "groups not dividing widths": ('norm = "group"\nwidths = [6, 8]\ngroups = 4', "groups: 4 does not divide the widths [6]"),
    "ghost not dividing the batch": ("batch_size = 16\nghost_batch_size = 6", "ghost_batch_size: 6 does not divide"),
    "ghost with group norm": ('norm = "group"\nwidths = [8]\nghost_batch_size = 4', "applies to norm = 'batch' only"),
    "renorm with layer norm": ('norm = "layer"\nrenorm = true', "renorm: applies to norm = 'batch' only"),
    "renorm rmax below 1": ("renorm_rmax = 0.5", "renorm_rmax"),
    "unknown eval_stats mode": ('eval_stats = ["running", "ema"]', "eval_stats: must be a non-empty list"),
    "eval_stats mode twice": ('eval_stats = ["batch", "batch"]', "twice"),
    "steps and epochs": ("epochs = 2", "set steps or epochs, not both"),
    "unknown running_var": ('running_var = "sample"', "running_var"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_exits_2_with_one_line_and_writes_nothing(case, write_spec, workdir, cli):
    body, expected = BAD_SPECS[case]
    path = write_spec(f'dataset = "synthetic"\nsteps = 20\n{body}\n' if "dataset" not in body else f"{body}\n")
    before = sorted(p.name for p in workdir.iterdir())
    result = cli("sweep", path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in workdir.iterdir()) == before


BAD_OVERRIDES = {
    "no equals sign": (["--set", "batch_size"], "expected key=value"),
    "unknown key": (["--set", "batchsize=4"], "did you mean 'batch_size'"),
    "unreadable value": (["--set", "batch_size=four"], "cannot read"),
    "out of range": (["--set", "momentum=0.5,1.5"], "momentum"),
    "zero seeds": (["--seeds", "0"], "--seeds"),
}


@pytest.mark.parametrize("case", sorted(BAD_OVERRIDES))
def test_bad_override_exits_2_with_one_line(case, tiny_spec, workdir, cli):
    args, expected = BAD_OVERRIDES[case]
    result = cli("sweep", tiny_spec, *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (workdir / "results").exists()


def test_missing_spec_file(cli, workdir):
    result = cli("sweep", "nope.toml")
    assert result.exit_code == 2 and result.stderr.strip() == "error: nope.toml: file: no such spec file"


def test_output_path_that_is_a_file_is_refused(tiny_spec, workdir, cli):
    (workdir / "taken").write_text("not a folder")
    result = cli("sweep", tiny_spec, "--out", "taken")
    assert result.exit_code == 2 and "not a folder" in result.stderr
    assert (workdir / "taken").read_text() == "not a folder"


SHIPPED = sorted((Path(__file__).parent.parent / "experiments").glob("*.toml"))


def _round_trip(spec):
    """The spec read back from its resolved TOML, as a results folder's ``spec.toml`` is read."""
    return parse_spec(tomllib.loads(spec.to_toml()), source=spec.source, default_name=spec.name, validate=False)


def _same_spec(a, b) -> None:
    """The same TOML, question and runs (a value left to its default, such as ``widths``, is written resolved)."""
    assert a.to_toml() == b.to_toml()
    assert (a.grid, a.seeds, a.comparisons, a.margin, a.data_layout) == (b.grid, b.seeds, b.comparisons, b.margin, b.data_layout)
    assert [r.run_id for r in a.expand()] == [r.run_id for r in b.expand()]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_spec_round_trips_through_its_resolved_toml(path):
    spec = load_spec(path, validate=False)
    _same_spec(_round_trip(spec), spec)


# Top-level keys written after a table header ([model_args]) land in that table: the resolved TOML of a
# spec with model arguments and a comparison once lost the comparison this way.
_NAMES = st.sampled_from(["width", "depth", "kernel", "b1", "scale"])
_ARGS = st.dictionaries(_NAMES, st.one_of(st.integers(1, 64), st.floats(0.01, 0.99), st.booleans(), st.text("abc", min_size=1)),
                        max_size=3)


@settings(max_examples=60, deadline=None)
@given(model_args=_ARGS, optimizer_args=_ARGS, batch_sizes=st.lists(st.sampled_from([16, 32, 64]), min_size=2, max_size=3,
       unique=True), compare=st.booleans(), margin=st.sampled_from([None, 0.01, 0.5]),
       layout=st.sampled_from(["channels_last", "as_is"]), argument_axis=st.booleans())
def test_a_resolved_spec_round_trips_exactly(model_args, optimizer_args, batch_sizes, compare, margin, layout,
                                             argument_axis):
    raw = {"name": "p", "model": "./nets.py:net", "dataset": "synthetic", "num_samples": 400, "steps": 10, "data_layout": layout,
           "grid": {"batch_size": batch_sizes}}
    if model_args:
        raw["model_args"] = model_args
    if optimizer_args:
        raw["optimizer_args"] = optimizer_args
    if argument_axis:
        raw["grid"]["model_args.width"] = [8, 16]
    if compare:
        raw["compare"] = [f"batch_size={batch_sizes[0]},{batch_sizes[1]}"]
        if margin is not None:
            raw["margin"] = margin
    spec = parse_spec(raw, source="p.toml", default_name="p", validate=False)
    again = _round_trip(spec)
    _same_spec(again, spec)
    assert bool(again.comparisons) == compare and again.values["model_args"] == spec.values["model_args"]


def test_a_data_layout_other_than_the_two_is_refused():
    with pytest.raises(SpecError, match="data_layout: must be one of 'channels_last', 'as_is', got 'nchw'"):
        parse_spec({"data_layout": "nchw"}, source="x.toml", default_name="x")
