"""Figures never pool: every figure of every shipped spec draws every configuration apart.

Synthetic results for each spec's grid (no training), written as a sweep writes them and drawn as SVG;
the tests read what was drawn from the files: the gid of every line and marker
(:func:`bnbench.reporting.figure_layout.gid`), which SVG writes as the element's id.
"""

import re
import zlib
from pathlib import Path
from urllib.parse import unquote

import matplotlib
import numpy as np
import pandas as pd
import pytest

from bnbench.results import frames
from bnbench.training import probes
from bnbench.reporting import model
from bnbench.training.context import ExecutionContext
from bnbench.training.outcomes import ActivationPoint, CurvePoint, ProbePoint, RunResult
from bnbench.experiment.rules import csv_value
from bnbench.results.schema import activation_rows, curve_rows, probe_rows, run_row
from bnbench.experiment.spec import load_spec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "experiments").glob("*.toml"))
CONTEXT = ExecutionContext("portable", "none", "vmapped", 2, "cpu", "synthetic", "AVX2", 2, "", "0", "0", "", "")
STEPS = (10, 20, 30)
DIVERGED_AT = 15  # after the first evaluation: a diverged run's curve has one point


@pytest.fixture(autouse=True)
def svg_text():
    """SVG text as text (not glyph outlines), so that the tests read labels too."""
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        yield


def _result(config, diverged: bool) -> RunResult:
    rng = np.random.default_rng(zlib.crc32(config.run_id.encode()))

    def value(step: int) -> float:
        return float("nan") if diverged and step >= DIVERGED_AT else float(rng.uniform(0.1, 1.0))

    curve = tuple(CurvePoint(s, value(s), value(s), value(s)) for s in STEPS)
    layers = range(1, len(config.widths) + 1)
    activations = tuple(ActivationPoint(s, layer, -1.0, value(s), 1.0, 0.0, 1.0)
                        for s in STEPS for layer in layers) if config.track_activations else ()
    normed = config.placement != "none" and config.norm != "none"
    bn_layers = len(config.widths) if normed and config.norm == "batch" else 0
    labels = probes.labels(config.probes, len(config.widths), normed, bn_layers)
    probed = tuple(ProbePoint(s, layer, name, value(s)) for s in (0, *STEPS) for layer, name in labels)
    final = curve[-1]
    return RunResult("diverged" if diverged else "ok", DIVERGED_AT if diverged else None, final.train_loss,
                     final.test_loss, final.test_acc, curve, 1.0, activations, {}, probed, 100, CONTEXT)


def write_results(folder: Path, spec) -> list:
    """Writes a results folder for ``spec``'s grid: every seed of the last configuration diverged, one
    seed of the first; returns the runs' configurations."""
    configs = spec.expand()
    seeds = len(spec.seeds)
    files = {"runs.csv": [], "curves.csv": [], "activations.csv": [], "probes.csv": []}
    for i, config in enumerate(configs):
        result = _result(config, diverged=i >= len(configs) - seeds or i == 0)
        files["runs.csv"].append(run_row(config, result, spec=spec.name, spec_hash="0"))
        files["curves.csv"] += curve_rows(config, result)
        files["activations.csv"] += activation_rows(config, result)
        files["probes.csv"] += probe_rows(config, result)
    for name, rows in files.items():
        if rows:
            pd.DataFrame(rows).to_csv(folder / name, index=False)
    return configs


def canonical(value):
    """A value as the tests compare it: a number as a float, anything else as text."""
    try:
        return float(str(value))
    except ValueError:
        return str(value)


def configuration(config, axes) -> tuple:
    return tuple(sorted((axis, canonical(csv_value(getattr(config, axis)))) for axis in axes))


def drawn(paths: list[Path]) -> dict[str, set[tuple]]:
    """What the figures in ``paths`` drew: the configurations of every gid, by what they drew."""
    shown: dict[str, set[tuple]] = {}
    for path in paths:
        ids = re.findall(r'id="bnbench:([^:"]*):([^"]*)"', path.read_text(encoding="utf-8"))
        assert len(ids) == len(set(ids)), f"{path.name}: an id twice"
        for what, pairs in ids:
            values = [pair.split("=") for pair in pairs.split(";")] if pairs else []
            config = tuple(sorted((unquote(axis), canonical(unquote(value))) for axis, value in values))
            shown.setdefault(unquote(what), set()).add(config)
    return shown


def figure_kinds(paths: list[Path]) -> dict[str, list[Path]]:
    """The files by figure: ``name.svg`` alone, or its parts ``name_1.svg``, ``name_2.svg``, ..."""
    kinds: dict[str, list[Path]] = {}
    for path in paths:
        kinds.setdefault(re.sub(r"_\d+$", "", path.stem), []).append(path)
    for kind, files in kinds.items():
        names = sorted(p.name for p in files)
        assert names in ([f"{kind}.svg"], sorted(f"{kind}_{i}.svg" for i in range(1, len(files) + 1))), names
    return kinds


def expected_kinds(spec, configs) -> set[str]:
    numeric = {a for a, values in spec.grid.items()
               if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)}
    kinds = {f"test_acc_vs_{axis}" for axis in numeric} | {"learning_curves"}
    kinds |= {"probes"} if any(c.probes for c in configs) else set()
    return kinds | ({"activations"} if any(c.track_activations for c in configs) else set())


def check_coverage(folder: Path, spec, configs, paths: list[Path]) -> dict[str, list[Path]]:
    """Asserts that every figure draws every configuration of the grid apart, each with the value of
    every swept axis; returns the files by figure."""
    assert sorted(paths) == sorted(folder.glob("*.svg")), "write_plots returns every file it writes"
    kinds = figure_kinds(paths)
    assert set(kinds) == expected_kinds(spec, configs)
    every = {configuration(c, spec.grid) for c in configs}
    assert len(every) == len(configs) // len(spec.seeds)
    for kind, files in kinds.items():
        shown = drawn(files)
        pooled = {what: [c for c in got if {a for a, _ in c} != set(spec.grid)] for what, got in shown.items()}
        assert not any(pooled.values()), f"{kind}: drawn without a swept axis: {pooled}"
        union = set().union(*shown.values())
        assert every <= union, f"{kind}: configurations not drawn: {sorted(every - union)}"
        if kind == "learning_curves":
            assert shown["train_loss"] == shown["test_acc"] == every
        if kind.startswith("test_acc_vs_"):
            assert shown["test_acc"] | shown.get("diverged", set()) == every
    return kinds


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.stem)
def test_every_figure_shows_every_configuration_of_every_shipped_spec(spec_path, tmp_path):
    spec = load_spec(spec_path)
    configs = write_results(tmp_path, spec)
    runs = frames.load_runs(tmp_path)
    paths = model.write_plots(tmp_path, runs, "test_acc", plot_format="svg")
    kinds = check_coverage(tmp_path, spec, configs, paths)
    if "probes" in kinds:  # each probe value, for every configuration that recorded it
        recorded = frames.load_probes(tmp_path).merge(runs[["run_id", *spec.grid]], on="run_id")
        shown = drawn(kinds["probes"])
        for name, rows in recorded.groupby(recorded["probe"].astype(str)):
            lines = set().union(*(got for what, got in shown.items() if what.split(".layer")[0] == name))
            want = {tuple(sorted((a, canonical(v)) for a, v in zip(spec.grid, key)))
                    for key in rows[list(spec.grid)].drop_duplicates().itertuples(index=False)}
            assert lines == want, name


def test_list_valued_axes_read_as_counts_and_panels_stay_readable(tmp_path):
    spec = load_spec(ROOT / "experiments" / "depth_gradients.toml")
    write_results(tmp_path, spec)
    paths = model.write_plots(tmp_path, frames.load_runs(tmp_path), "test_acc", plot_format="svg")
    text = " ".join(t for p in paths for t in re.findall(r"<text[^>]*>([^<]*)</text>", p.read_text(encoding="utf-8")))
    assert all(f"widths={n}×100" in text for n in (4, 8, 16, 32))
    assert "100-100-100" not in text
    (probe_figure,) = [p for p in paths if p.stem == "probes"]
    width, height = (float(v) for v in re.search(r'width="([\d.]+)pt" height="([\d.]+)pt"', probe_figure.read_text()).groups())
    assert width < 2.5 * height  # one row per configuration, not a strip of slivers


SPLIT_SPEC = """
name = "many_panels"
dataset = "mnist1d"
steps = 30
eval_every = 10
seeds = 1
[grid]
activation = ["relu", "sigmoid", "tanh"]
placement = ["pre", "post", "none"]
lr = [0.001, 0.003, 0.01, 0.03, 0.1]
batch_size = [32, 64]
"""


def test_many_panels_go_to_several_files_each_configuration_in_one(tmp_path):
    source = tmp_path / "many_panels.toml"
    source.write_text(SPLIT_SPEC)
    spec = load_spec(source)
    folder = tmp_path / "results"
    folder.mkdir()
    configs = write_results(folder, spec)
    runs = frames.load_runs(folder)
    kinds = check_coverage(folder, spec, configs, model.write_plots(folder, runs, "test_acc", plot_format="svg"))
    assert len(kinds["learning_curves"]) == 3 and len(kinds["test_acc_vs_batch_size"]) == 2
    assert "(file 2 of 3)" in kinds["learning_curves"][1].read_text(encoding="utf-8")
    for files in kinds.values():  # the parts split the configurations, never repeat one
        parts = [set().union(*drawn([f]).values()) for f in files]
        assert sum(map(len, parts)) == len(set().union(*parts))
    (folder / "notes_1.svg").write_text("mine")
    fewer = model.write_plots(folder, runs[runs["activation"] == "relu"], "test_acc", plot_format="svg")
    # A smaller figure replaces a larger one's parts: none is left to pass for part of it.
    assert sorted(folder.glob("*.svg")) == sorted([*fewer, folder / "notes_1.svg"])


def test_a_figure_names_the_configurations_it_cannot_draw(tmp_path):
    spec = load_spec(ROOT / "experiments" / "weight_decay.toml")
    write_results(tmp_path, spec)
    runs = frames.load_runs(tmp_path)
    kept = runs.loc[runs["placement"] == "pre", "run_id"]
    probed = frames.load_probes(tmp_path)
    probed[probed["run_id"].isin(kept)].to_csv(tmp_path / "probes.csv", index=False)
    paths = model.write_plots(tmp_path, runs, "test_acc", plot_format="svg")
    (probe_figure,) = [p for p in paths if p.stem == "probes"]
    text = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", probe_figure.read_text(encoding="utf-8")))
    assert "3 of 6 configurations had no probes: placement=none, weight_decay=0;" in text


def test_png_is_print_resolution_and_pdf_is_written(tmp_path):
    from PIL import Image

    write_results(tmp_path, load_spec(ROOT / "experiments" / "quickstart.toml"))
    runs = frames.load_runs(tmp_path)
    pngs = model.write_plots(tmp_path, runs, "test_acc")
    assert [p.name for p in pngs] == ["test_acc_vs_batch_size.png", "learning_curves.png"]
    assert all(round(Image.open(p).info["dpi"][0]) == 300 for p in pngs)
    (pdf, *_) = model.write_plots(tmp_path, runs, "test_acc", plot_format="pdf")
    assert pdf.suffix == ".pdf" and pdf.read_bytes()[:5] == b"%PDF-"


def test_a_bad_plot_format_is_a_one_line_error_before_anything_is_written(tmp_path, cli):
    write_results(tmp_path, load_spec(ROOT / "experiments" / "quickstart.toml"))
    with pytest.raises(model.ReportError, match=r"--plot-format: must be one of png, pdf, svg, got 'bmp'"):
        model.write_plots(tmp_path, frames.load_runs(tmp_path), "test_acc", tmp_path / "figures", "bmp")
    assert not (tmp_path / "figures").exists()
    result = cli("report", tmp_path, "--plot-format", "jpg")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "--plot-format: must be one of" in result.stderr
    result = cli("report", tmp_path, "--plot-format", "svg")
    assert result.exit_code == 0 and "learning_curves.svg" in result.stderr


def svg_texts(path: Path) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text(encoding="utf-8"))


def test_a_label_names_bn_only_on_panels_whose_runs_use_it(tmp_path):
    write_results(tmp_path, load_spec(ROOT / "experiments" / "batch_size.toml"))
    paths = model.write_plots(tmp_path, frames.load_runs(tmp_path), "test_acc", plot_format="svg")
    (curves,) = [p for p in paths if p.stem == "learning_curves"]
    labels = [t for t in svg_texts(curves) if t.startswith("test accuracy")]
    # a row per norm kind: only the BN row's accuracy was measured with BN's running statistics
    assert sorted(labels) == ["test accuracy"] * 3 + ["test accuracy, BN with running statistics"]


def test_each_comparison_gets_a_figure_of_its_paired_differences(tmp_path):
    write_results(tmp_path, load_spec(ROOT / "experiments" / "quickstart.toml"))
    runs = frames.load_runs(tmp_path)
    asked = [("placement", "pre", "post"), ("placement", "pre", "none")]
    result = model.report(tmp_path, comparisons=asked)._replace(margin=0.05)
    paths = model.write_plots(tmp_path, runs, "test_acc", plot_format="svg", question=result)
    paired = [p for p in paths if p.stem.startswith("paired_")]
    assert [p.name for p in paired] == ["paired_placement_pre_vs_post.svg", "paired_placement_pre_vs_none.svg"]
    for path, comparison in zip(paired, result.comparisons):
        drawn_groups = drawn([path])["paired_test_acc"]
        table = comparison.table
        assert drawn_groups == {(("batch_size", float(b)), ("placement", f"pre-{comparison.b}"))
                                for b in table["batch_size"]}
        texts = svg_texts(path)
        assert set(table["verdict"]) <= set(texts) and "within ±0.05: no difference that matters" in texts
