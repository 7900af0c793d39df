"""End-to-end sweeps on the synthetic data set: CSV contents equal what was run; resume skips work."""

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from bnbench.experiment.fields import RunConfig
from bnbench.engine import train_run
from bnbench.results.schema import CURVE_COLUMNS, RUN_COLUMNS
from bnbench.experiment.spec import load_spec
from tests.test_engine import in_grid_order


@pytest.mark.integration
def test_sweep_writes_csvs_matching_the_expanded_grid(tiny_spec, workdir, cli):
    result = cli("sweep", tiny_spec, "--no-plots")
    assert result.exit_code == 0, result.output
    out = workdir / "results" / "tiny"
    runs = pd.read_csv(out / "runs.csv")
    curves = pd.read_csv(out / "curves.csv")
    assert list(runs.columns) == list(RUN_COLUMNS)
    assert list(curves.columns) == list(CURVE_COLUMNS)
    expected = load_spec(tiny_spec).expand()
    assert sorted(runs["run_id"]) == sorted(r.run_id for r in expected)
    runs = in_grid_order(runs, tiny_spec)
    assert list(runs["placement"]) == [r.placement for r in expected]
    assert list(runs["epsilon"]) == [r.epsilon for r in expected]
    assert list(runs["seed"]) == [r.seed for r in expected]
    assert set(runs["widths"].astype(str)) == {"8"} and set(runs["batch_size"]) == {16} and set(runs["status"]) == {"ok"}
    assert set(runs["backend"]) == {"cpu"} and (runs["wall_s"] > 0).all()
    assert runs["momentum_convention"].iloc[0] == "running=momentum*running+(1-momentum)*batch"
    assert curves.groupby("run_id")["step"].apply(list).to_dict() == {r.run_id: [10, 20, 30] for r in expected}
    last = curves[curves["step"] == 30].set_index("run_id")
    np.testing.assert_array_equal(last.loc[runs["run_id"], "test_acc"], runs["test_acc"])
    np.testing.assert_array_equal(last.loc[runs["run_id"], "train_loss"], runs["final_train_loss"])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["backend"] == "cpu" and meta["finished"] and meta["versions"]["jax"]
    assert load_spec(out / "spec.toml").spec_hash == runs["spec_hash"].iloc[0]
    assert "tiny: test_acc over seeds (8 runs" in result.stdout and "95% CI" in result.stdout
    report = cli("report", out, "--no-plots")
    summary_table = report.stdout[report.stdout.index("tiny: test_acc") :]
    assert summary_table in result.stdout  # sweep ends with the same summary as report


@pytest.mark.integration
def test_rerun_skips_every_finished_run(tiny_results, tiny_spec, cli):
    runs_csv = tiny_results / "runs.csv"
    before = runs_csv.read_bytes()
    result = cli("sweep", tiny_spec, "--no-plots")
    assert result.exit_code == 0 and "8 already in" in result.stdout and "0 to run" in result.stdout
    assert runs_csv.read_bytes() == before


@pytest.mark.integration
def test_interrupted_sweep_resumes_to_the_same_results(tiny_sweep, tiny_spec, workdir, cli):
    full = pd.read_csv(tiny_sweep / "runs.csv")
    # Simulate a sweep killed after 3 runs, between writing a 4th run's curves and its row.
    cut = workdir / "cut"
    shutil.copytree(tiny_sweep, cut)
    runs_lines = (cut / "runs.csv").read_text().splitlines(keepends=True)
    (cut / "runs.csv").write_text("".join(runs_lines[:4]))
    curve_lines = (cut / "curves.csv").read_text().splitlines(keepends=True)
    (cut / "curves.csv").write_text("".join(curve_lines[: 1 + 4 * 3]))
    result = cli("sweep", tiny_spec, "--out", "cut", "--no-plots")
    assert result.exit_code == 0 and "3 already in" in result.stdout and "5 to run" in result.stdout
    resumed = pd.read_csv(cut / "runs.csv")
    metrics = ["run_id", "status", "final_train_loss", "test_loss", "test_acc"]
    pd.testing.assert_frame_equal(resumed[metrics], full[metrics], check_exact=True)  # bitwise: the same runs
    curves = pd.read_csv(cut / "curves.csv")
    assert len(curves) == 8 * 3 and not curves.duplicated(["run_id", "step"]).any()


@pytest.mark.integration
def test_changed_spec_in_the_same_folder_is_refused(tiny_results, tiny_spec, cli):
    result = cli("sweep", tiny_spec, "--set", "lr=0.01")
    assert result.exit_code == 2 and "different spec" in result.stderr
    assert len(pd.read_csv(tiny_results / "runs.csv")) == 8
    assert cli("sweep", tiny_spec, "--set", "lr=0.01", "--no-resume", "--no-plots").exit_code == 0
    assert set(pd.read_csv(tiny_results / "runs.csv")["lr"]) == {0.01}


@pytest.mark.unit
def test_dry_run_prints_the_grid_and_writes_nothing(tiny_spec, workdir, cli):
    result = cli("sweep", tiny_spec, "--dry-run")
    assert result.exit_code == 0 and "8 runs" in result.stdout
    assert all(r.run_id in result.stdout for r in load_spec(tiny_spec).expand())
    assert not (workdir / "results").exists()


def synthetic_run(**overrides) -> RunConfig:
    fields = dict(dataset="synthetic", num_samples=1200, widths=(16,), batch_size=32, steps=200, eval_every=50)
    return RunConfig(**{**fields, **overrides})


@pytest.mark.integration
def test_training_learns_and_is_deterministic():
    first = train_run(synthetic_run())
    again = train_run(synthetic_run())
    assert first.status == "ok" and first.test_acc > 0.6  # 4 classes: chance is 0.25
    assert first.curve[-1].train_loss < first.curve[0].train_loss
    assert first.curve == again.curve
    other_seed = train_run(synthetic_run(seed=1))
    assert other_seed.curve != first.curve
    # a config built by hand leaves eval_every to be derived, as a spec does: a tenth of the steps
    derived = train_run(synthetic_run(eval_every=None, steps=500))
    assert [point.step for point in derived.curve][:2] == [50, 100] and len(derived.curve) == 10


@pytest.mark.integration
def test_diverging_run_is_marked_and_the_sweep_goes_on(write_spec, workdir, cli):
    spec = write_spec(
        """
        name = "blowup"
        dataset = "synthetic"
        widths = [16]
        placement = "none"
        optimizer = "sgd"
        steps = 40
        eval_every = 20
        [grid]
        lr = [1e9, 0.01]
        """
    )
    result = cli("sweep", spec, "--no-plots")
    assert result.exit_code == 0, result.output
    runs = pd.read_csv(workdir / "results" / "blowup" / "runs.csv")
    blown, fine = runs.iloc[0], runs.iloc[1]
    assert blown["status"] == "diverged" and 1 <= blown["diverged_step"] <= 40
    assert math.isnan(blown["test_acc"]) and math.isnan(blown["final_train_loss"])
    assert fine["status"] == "ok" and fine["test_acc"] > 0.3 and math.isnan(fine["diverged_step"])
