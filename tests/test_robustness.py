"""The robustness check: a spec's verdicts in contexts that differ only in rounding, side by side."""

import shutil

import pandas as pd
import pytest

from bnbench.experiment.runs import completed
from bnbench.experiment.fields import RunConfig
from bnbench.experiment.spec import load_spec
from bnbench.reporting import robustness
from tests.test_figures import ROOT, write_results


@pytest.mark.unit
def test_each_variant_changes_only_the_rounding_and_none_repeats_another(monkeypatch):
    mlp, resnet = completed(RunConfig()), completed(RunConfig(model="resnet"))
    chosen, notes = robustness.variants([mlp, resnet], "cpu")
    assert chosen == robustness.VARIANTS and notes == []
    chosen, notes = robustness.variants([resnet], "cpu")
    assert list(chosen) == ["portable", "native"]
    assert notes == ["sequential engine left out: the vectorized engine trains resnet stepwise on cpu too, the same path"]
    chosen, notes = robustness.variants([mlp], "gpu")
    assert chosen == {"default": (), "sequential": ("--engine", "sequential")}
    assert notes == ["portable numerics left out: on gpu every run computes natively"]
    monkeypatch.setattr(robustness.host, "portable_possible", lambda: False)
    chosen, _ = robustness.variants([mlp], "cpu")
    assert chosen == {"default": (), "sequential": ("--engine", "sequential")}


@pytest.mark.unit
def test_a_verdict_that_changes_between_variants_is_marked_as_resting_on_rounding(tmp_path):
    spec = load_spec(ROOT / "experiments" / "quickstart.toml")
    first, second = tmp_path / "portable", tmp_path / "native"
    first.mkdir()
    write_results(first, spec)
    (first / "spec.toml").write_text(spec.to_toml())
    shutil.copytree(first, second)
    runs = pd.read_csv(second / "runs.csv")
    at_32 = runs["batch_size"] == 32
    runs.loc[at_32 & (runs["placement"] == "pre"), "test_acc"] = 0.99
    runs.loc[at_32 & (runs["placement"] == "post"), "test_acc"] = 0.11
    runs.to_csv(second / "runs.csv", index=False)
    table = robustness.verdict_table({"portable": first, "native": second})
    assert list(table.columns) == ["comparison", "group", "portable", "native", "rests_on_rounding"]
    assert list(table["comparison"]) == ["placement=pre − post"] * 2 + ["placement=pre − none"]
    changed = table.set_index(["comparison", "group"])["rests_on_rounding"]
    assert changed[("placement=pre − post", "batch_size=32")] == "yes"
    assert changed[("placement=pre − post", "batch_size=128")] == "no"
    assert table.loc[0, "native"].endswith("pre higher") and not table.loc[0, "portable"].endswith("pre higher")
    # every seed of (none, 128) diverged in the first folder: that group has pairs in the second only
    last = (runs["placement"] == "none") & (runs["batch_size"] == 128)
    runs.loc[last, ["status", "diverged_step", "test_acc"]] = ["ok", None, 0.5]
    runs.to_csv(second / "runs.csv", index=False)
    table = robustness.verdict_table({"portable": first, "native": second}, [("placement", "pre", "none")])
    assert list(table["group"]) == ["batch_size=32", "batch_size=128"]
    assert table.loc[1, "portable"] == "missing" and table.loc[1, "rests_on_rounding"] == "yes"


@pytest.mark.unit
def test_a_check_without_a_comparison_is_refused_before_anything_is_swept(tmp_path):
    with pytest.raises(robustness.BnbenchError, match="the spec states no comparison"):
        robustness.check(tmp_path / "spec.toml", [completed(RunConfig())], tmp_path / "out", "cpu")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # three sweep processes: make test-slow, beside the published numbers, not in CI
def test_the_robustness_command_sweeps_each_variant_and_writes_the_table(write_spec, workdir, cli):
    from tests.conftest import TINY_SPEC

    spec = write_spec(TINY_SPEC.replace("seeds = 2\n", 'seeds = 3\ncompare = ["placement=pre,none"]\n'))
    result = cli("robustness", spec, "--out", workdir / "check", "--set", "epsilon=1e-3", "--format", "markdown")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(workdir / "check" / "robustness.csv")
    assert list(table.columns) == ["comparison", "group", "portable", "native", "sequential", "rests_on_rounding"]
    for variant, numerics, execution in (("portable", "portable", "vmapped"), ("native", "native", "vmapped"),
                                         ("sequential", "portable", "stepwise")):
        runs = pd.read_csv(workdir / "check" / variant / "runs.csv")
        assert len(runs) == 6 and set(runs["numerics"]) == {numerics} and set(runs["execution"]) == {execution}
    assert "| comparison | group | portable | native | sequential | rests_on_rounding |" in result.stdout
