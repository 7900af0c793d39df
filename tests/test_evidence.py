"""Outputs that must not mislead: honest intervals, plots that show every group, clean reports, no
silent no-ops (issue 13's list, one test or more per item)."""

import json
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bnbench import data
from bnbench.reporting import cells, figure_layout, figures
from bnbench.stats import comparisons, student_t, summary
from bnbench.profiling import table as profile_lib
from bnbench.experiment.fields import RunConfig
from bnbench.training.outcomes import summarize_output
from bnbench.training.program import ProgramOutput
from bnbench.training.signature import Signature

T_975_1DF, T_975_2DF = 12.706204736, 4.302652730


def paired_runs(diffs, base=0.6):
    rows = []
    for seed, diff in enumerate(diffs):
        rows.append(dict(placement="pre", batch_size=32, seed=seed, status="ok", test_acc=base + diff))
        rows.append(dict(placement="post", batch_size=32, seed=seed, status="ok", test_acc=base))
    return pd.DataFrame(rows)


@pytest.mark.unit
def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    assert student_t.t_quantile(0.975, 1) == pytest.approx(T_975_1DF, rel=1e-9)
    for df in [*range(1, 120), 255, 999, 4000]:
        assert student_t.t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-12)
    # The levels a sequential design spends (bnbench.stats.group_sequential): far in the tail.
    for p in (0.9, 0.995, 0.99875, 0.9999):
        for df in (2, 3, 7, 19, 40):
            assert student_t.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-10)


@pytest.mark.unit
def test_compare_at_two_pairs_gives_the_paired_t_interval_and_names_no_direction():
    # The quickstart's batch-32 pairs: +0.034 and +0.041. A bootstrap gave [0.034, 0.041] and "pre higher".
    (row,) = comparisons.compare(paired_runs([0.034, 0.041]), "placement", "pre", "post").to_dict("records")
    diffs = np.array([0.034, 0.041])
    half = T_975_1DF * diffs.std(ddof=1) / math.sqrt(2)
    assert row["pairs"] == 2 and math.isclose(row["mean_diff"], 0.0375)
    assert math.isclose(row["ci_low"], 0.0375 - half, rel_tol=1e-6) and math.isclose(row["ci_high"], 0.0375 + half, rel_tol=1e-6)
    assert row["verdict"] == "undecided (2 pairs; needs 3)"


@pytest.mark.unit
def test_compare_names_a_direction_only_when_the_t_interval_excludes_zero():
    strong = comparisons.compare(paired_runs([0.03, 0.031, 0.032]), "placement", "pre", "post").iloc[0]
    half = T_975_2DF * 0.001 / math.sqrt(3)
    assert math.isclose(strong["ci_low"], 0.031 - half, rel_tol=1e-6)
    assert strong["verdict"] == "pre higher"
    weak = comparisons.compare(paired_runs([0.05, -0.04, 0.01]), "placement", "pre", "post").iloc[0]
    assert weak["ci_includes_zero"] and weak["verdict"] == "undecided"
    flat = comparisons.compare(paired_runs([0.01, 0.01, 0.01]), "placement", "pre", "post").iloc[0]
    assert math.isnan(flat["ci_low"]) and flat["verdict"] == "undecided (all 3 differences equal +0.01: no spread)"


@pytest.mark.unit
def test_runs_that_all_gave_one_value_get_no_interval():
    runs = pd.DataFrame({"lr": [0.01, 0.01, 0.1, 0.1], "seed": [0, 1, 0, 1], "status": ["ok"] * 4,
                         "test_acc": [0.649, 0.649, 0.70, 0.71]})
    table = summary.summarize(runs, ["lr"])
    flat, spread = table.iloc[0], table.iloc[1]
    assert flat["std"] == 0 and math.isnan(flat["ci_low"]) and math.isnan(flat["ci_high"])
    assert spread["ci_low"] < 0.705 < spread["ci_high"]
    _, rows = cells.summary_cells(table, ["lr"])
    assert rows[0][-2:] == ["0.6490 ± 0.0000", "no spread"]


@pytest.mark.unit
def test_accuracy_intervals_are_clipped_to_0_1_and_say_so():
    runs = pd.DataFrame({"placement": ["pre", "pre", "none", "none"], "seed": [0, 1, 0, 1], "status": ["ok"] * 4,
                         "test_acc": [0.90, 0.99, 0.50, 0.52]})
    table = summary.summarize(runs, ["placement"]).set_index("placement")
    assert table.loc["pre", "ci_high"] == 1.0 and table.loc["pre", "ci_clipped"]
    assert 0 < table.loc["none", "ci_low"] and not table.loc["none", "ci_clipped"]
    header, rows = cells.summary_cells(table.reset_index(), ["placement"])
    assert rows[0][-1].endswith("1.0000]*") and not rows[1][-1].endswith("*")
    loss = summary.summarize(runs.assign(test_loss=[0.01, 0.3, 1.0, 1.1]), ["placement"], "test_loss")
    assert loss["ci_low"].min() == 0.0 and loss["ci_clipped"].iloc[0]


def capture_figure(monkeypatch):
    drawn = []

    def keep(fig, path):
        drawn.append(fig)
        return path

    monkeypatch.setattr(figure_layout, "save_figure", keep)
    return drawn


def fake_runs(axes: dict, diverged=lambda row: False, metric=lambda row: 0.5):
    grid = pd.MultiIndex.from_product(list(axes.values()), names=list(axes)).to_frame(index=False)
    rows = []
    for i, row in enumerate(grid.to_dict("records")):
        for seed in (0, 1):
            bad = diverged(row)
            rows.append({"run_id": f"r{i}s{seed}", "seed": seed, "norm": "batch", "placement": "pre",
                         "eval_stats": "running", "batch_size": 32, **row, "status": "diverged" if bad else "ok",
                         "diverged_step": 5 if bad else None, "test_acc": math.nan if bad else metric(row) + 0.01 * seed})
    return pd.DataFrame(rows)


@pytest.mark.unit
def test_learning_curves_show_every_group_in_panels(monkeypatch):
    runs = fake_runs({"activation": ["relu", "sigmoid", "tanh"], "placement": ["pre", "post", "none"], "batch_size": [16, 64]})
    curves = pd.DataFrame([{"run_id": r, "step": s, "train_loss": 1.0 / s, "test_acc": 0.5} for r in runs["run_id"] for s in (10, 20)])
    drawn = capture_figure(monkeypatch)
    figures.learning_curves(runs, curves, "unused.png")
    (fig,) = drawn
    acc_axes = fig.axes[1::2]
    assert len(acc_axes) == 2  # one row per batch size, 9 lines each: all 18 groups shown
    labels = {(ax.get_title().split(":")[0], t.get_text()) for ax in acc_axes for t in ax.get_legend().get_texts()}
    assert len(labels) == 18
    plt.close(fig)


@pytest.mark.unit
def test_learning_curves_split_many_panels_into_files_and_leave_none_out(monkeypatch):
    runs = fake_runs({"lr": [0.1 * i for i in range(1, 12)], "epsilon": [1e-5 * i for i in range(1, 12)]})
    curves = pd.DataFrame([{"run_id": r, "step": 10, "train_loss": 1.0, "test_acc": 0.5} for r in runs["run_id"]])
    drawn = capture_figure(monkeypatch)
    paths = figures.learning_curves(runs, curves, "unused.png")
    assert [p.name for p in paths] == ["unused_1.png", "unused_2.png"]
    assert [len(fig.axes) // 2 for fig in drawn] == [figure_layout.MAX_PANELS, 11 - figure_layout.MAX_PANELS]
    for fig in drawn:
        plt.close(fig)


@pytest.mark.unit
def test_derived_fields_are_not_swept_axes():
    by_epochs = pd.DataFrame({"batch_size": [16, 16, 64, 64], "norm": ["batch", "none"] * 2, "steps": [400, 400, 100, 100],
                              "eval_every": [40, 40, 10, 10], "epochs": [2] * 4, "num_samples": [5000] * 4})
    assert summary.swept_axes(by_epochs) == ["norm", "batch_size"]
    by_steps = pd.DataFrame({"steps": [100, 200], "eval_every": [10, 20]})
    assert summary.swept_axes(by_steps) == ["steps"]
    both = pd.DataFrame({"steps": [100, 100, 200, 200], "eval_every": [10, 50, 10, 50]})
    assert summary.swept_axes(both) == ["steps", "eval_every"]


@pytest.mark.integration
def test_batch_size_sweep_with_epochs_plots_one_line_per_norm(write_spec, workdir, cli, monkeypatch):
    spec = write_spec('dataset = "synthetic"\nwidths = [8]\nepochs = 1\nlr_scaling_batch_size = 16\n'
                      '[grid]\nnorm = ["batch", "none"]\nbatch_size = [16, 64]\n')
    assert cli("sweep", spec, "--no-plots").exit_code == 0
    runs = pd.read_csv(workdir / "results" / "spec" / "runs.csv")
    assert summary.swept_axes(runs) == ["norm", "batch_size"]
    result = cli("report", workdir / "results" / "spec")
    assert result.exit_code == 0
    names = sorted(p.name for p in (workdir / "results" / "spec").glob("*.png"))
    assert names == ["learning_curves.png", "test_acc_vs_batch_size.png"]


@pytest.mark.unit
def test_every_metric_is_nan_from_the_divergence_on():
    config = RunConfig(dataset="synthetic", num_samples=1200, widths=(4,), steps=30, eval_every=10)
    sig = Signature.of(config, data.load("synthetic", 1200))
    losses = np.r_[np.ones(14), np.full(16, np.nan)].astype(np.float32)
    output = ProgramOutput(losses, np.array([[0.5], [np.nan], [np.nan]]), np.array([[0.8], [0.102], [0.102]]), np.zeros((3, 0, 5)),
                       np.zeros((4, 0)))
    result = summarize_output(sig, output, 1.0)
    assert result.status == "diverged" and result.diverged_step == 15
    assert result.curve[0] == (10, 1.0, 0.5, 0.8)
    for point in result.curve[1:]:
        assert all(math.isnan(v) for v in point[1:])


def red_crosses(ax):
    return [line for line in ax.get_lines() if line.get_marker() == "x" and line.get_color() == "red"]


@pytest.mark.unit
def test_metric_plot_marks_diverged_values(monkeypatch):
    runs = fake_runs({"placement": ["pre", "none"], "lr": [0.01, 0.1, 1.0]}, diverged=lambda r: r["lr"] == 1.0)
    drawn = capture_figure(monkeypatch)
    figures.metric_vs_axis(runs, "lr", "test_acc", "unused.png")
    ax = drawn[0].axes[0]
    assert len(red_crosses(ax)) == 2  # lr 1.0 in both lines
    assert {t.get_text() for t in ax.texts} == {"2/2"}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.01", "0.1", "1"]
    plt.close(drawn[0])


@pytest.mark.unit
def test_ghost_batch_size_momentum_labels_and_legend_placement(monkeypatch):
    runs = fake_runs({"ghost_batch_size": [0, 8, 32], "momentum": [0.9, 0.99, 0.999]})
    assert {"ghost_batch_size", "momentum"} <= set(figures.NUMERIC_AXES)
    drawn = capture_figure(monkeypatch)
    figures.metric_vs_axis(runs, "ghost_batch_size", "test_acc", "unused.png")
    figures.metric_vs_axis(runs, "momentum", "test_acc", "unused.png")
    ghost_ax, momentum_ax = drawn[0].axes[0], drawn[1].axes[0]
    assert [t.get_text() for t in ghost_ax.get_xticklabels()] == ["8", "32"]  # 0 (whole batch) sits at 32
    assert momentum_ax.get_xscale() == "log" and "1 − momentum" in momentum_ax.get_xlabel()
    assert [t.get_text() for t in momentum_ax.get_xticklabels()] == ["0.999", "0.99", "0.9"]
    for fig in drawn:
        legend = fig.axes[0].get_legend()
        fig.canvas.draw()
        assert legend.get_window_extent().x0 > fig.axes[0].get_window_extent().x1  # beside, not on, the data
        plt.close(fig)
    group_norm = runs.assign(norm="group")
    assert "BN" not in figures.metric_label("test_acc", group_norm)
    assert figures.metric_label("test_acc", runs) == "test accuracy, BN with running statistics"
    assert figures.metric_label("test_acc_precise", runs) == "test accuracy, BN with precise statistics"


@pytest.mark.integration
def test_no_resume_removes_the_previous_sweeps_plots(tiny_spec, workdir, cli):
    assert cli("sweep", tiny_spec).exit_code == 0
    out = workdir / "results" / "tiny"
    (out / "test_acc_vs_lr.png").write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    assert cli("sweep", tiny_spec, "--no-resume", "--no-plots").exit_code == 0
    assert not list(out.glob("*.png")) and (out / "notes.txt").exists()


@pytest.mark.integration
def test_csv_and_markdown_reports_put_only_the_table_on_stdout(tiny_results, cli):
    result = cli("report", tiny_results, "--format", "csv")
    assert result.exit_code == 0 and "plot: " in result.stderr and "plot" not in result.stdout
    assert len(pd.read_csv(pd.io.common.StringIO(result.stdout))) == 4
    paired = cli("report", tiny_results, "--format", "csv", "--compare", "placement=pre,none", "--no-plots")
    table = pd.read_csv(pd.io.common.StringIO(paired.stdout))
    assert list(table.columns[:4]) == ["compared", "epsilon", "pairs", "mean_diff"] and len(table) == 2
    assert set(table["compared"]) == {"placement=pre,none"}
    markdown = cli("report", tiny_results, "--format", "markdown", "--no-plots").stdout
    assert "best mean in bold" in markdown and markdown.count("**") == 4  # caption and one cell
    assert "bold green" not in cli("report", tiny_results, "--no-plots").stdout  # no colour when piped


@pytest.mark.integration
@pytest.mark.parametrize(
    "args, message",
    [
        (["--metric", "placement"], "'placement' is not a numeric metric"),
        (["--metric", "test_acc_precise"], "no run recorded a value of 'test_acc_precise'"),
        (["--compare", "placement=pre,foo"], "no run has placement=foo; its values are pre, none"),
        (["--compare", "activation=relu,tanh"], "activation was not swept here"),
        (["--compare", "epsilon=1e-5,0.001"], None),
    ],
)
def test_report_arguments_that_select_nothing_are_errors(args, message, tiny_results, cli):
    result = cli("report", tiny_results, "--no-plots", *args)
    if message is None:
        assert result.exit_code == 0 and "over 2 pairs" not in result.stdout and "undecided (2 pairs; needs 3)" in result.stdout
        return
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1 and message in result.stderr


@pytest.mark.integration
def test_unreadable_runs_csv_and_unwritable_plots_are_one_line_errors(tiny_results, cli, monkeypatch):
    from bnbench.results.csv_files import ResultsError
    from bnbench.results.folder import ResultsStore

    def refuse(self):
        raise ResultsError(f"{self.out_dir}: output location is not writable (Read-only file system)")

    monkeypatch.setattr(ResultsStore, "check_writable", refuse)
    result = cli("report", tiny_results)
    assert result.exit_code == 1 and "test_acc over seeds" in result.stdout and "or --no-plots" in result.stderr
    assert cli("report", tiny_results, "--no-plots").exit_code == 0
    monkeypatch.undo()
    monkeypatch.setattr(figures.plt.Figure, "savefig", lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    result = cli("report", tiny_results)
    assert result.exit_code == 1 and "cannot write plots (Permission denied); the tables are complete" in result.stderr
    (tiny_results / "runs.csv").write_bytes(b"run_id,spec\n\xff\xfe,x\n")
    result = cli("report", tiny_results, "--no-plots")
    assert result.exit_code == 2 and "not UTF-8 text" in result.stderr and "Traceback" not in result.output


@pytest.mark.integration
def test_resuming_onto_an_undecodable_runs_csv_is_a_one_line_error(tiny_results, tiny_spec, cli):
    (tiny_results / "runs.csv").write_bytes(b"run_id\n\xff\xfe\n")
    result = cli("sweep", tiny_spec)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "runs.csv: not UTF-8 text" in result.stderr


@pytest.mark.unit
def test_profile_checks_its_output_path_before_measuring(workdir, cli, monkeypatch):
    monkeypatch.setattr(profile_lib, "profile", lambda *a, **k: pytest.fail("measured before checking --out"))
    (workdir / "existing").mkdir()
    result = cli("profile", "--shape", "4,8", "--out", "existing")
    assert result.exit_code == 2 and "--out: existing is a folder" in result.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["existing"]


@pytest.mark.unit
def test_profile_notes_keep_their_brackets(workdir, cli, monkeypatch):
    monkeypatch.setattr(profile_lib, "profile", lambda *a, **k: ([], ["torch: skipped (pip install 'bnbench[peers]')"]))
    result = cli("profile", "--shape", "4,8", "--out", "p.csv")
    assert result.exit_code == 0 and "pip install 'bnbench[peers]'" in result.stdout


@pytest.mark.unit
def test_a_shard_with_no_run_is_an_error(tiny_spec, workdir, cli):
    result = cli("sweep", tiny_spec, "--shard", "9/10")
    assert result.exit_code == 2 and "--shard 9/10: nothing to run, the grid has only 8 runs" in result.stderr
    assert not (workdir / "results").exists()


@pytest.mark.unit
def test_a_huge_grid_is_refused_before_it_is_built(write_spec, cli):
    axis = ", ".join(str(0.001 * (i + 1)) for i in range(100))
    spec = write_spec(f'dataset = "synthetic"\nseeds = 1000\n[grid]\nlr = [{axis}]\nweight_decay = [{axis}]\n')
    begin = time.perf_counter()
    result = cli("sweep", spec, "--dry-run")
    assert result.exit_code == 2 and "10000000 runs exceed the limit of 1000" in result.stderr
    assert time.perf_counter() - begin < 20


@pytest.mark.integration
def test_resume_drops_a_last_row_cut_off_mid_way(tiny_results, tiny_spec, cli):
    runs = (tiny_results / "runs.csv").read_text()
    (tiny_results / "runs.csv").write_text(runs[: len(runs) - 40])  # the 8th row, cut mid-way
    curves = (tiny_results / "curves.csv").read_text()
    (tiny_results / "curves.csv").write_text(curves[:-7])
    result = cli("sweep", tiny_spec, "--no-plots")
    assert result.exit_code == 0, result.output
    assert "runs.csv: dropped a last row that was cut off mid-way" in result.stderr
    assert "7 already in" in result.stdout
    table = pd.read_csv(tiny_results / "runs.csv")
    assert len(table) == 8 and table["run_id"].is_unique and table["test_acc"].notna().all()
    assert len(pd.read_csv(tiny_results / "curves.csv")) == 8 * 3


@pytest.mark.integration
def test_merge_names_the_folders_and_the_field_and_lists_missing_runs(tiny_spec, write_spec, workdir, cli):
    for part in ("0/3", "1/3"):
        assert cli("sweep", tiny_spec, "--shard", part, "--no-plots").exit_code == 0
    result = cli("merge", "results/tiny-shard0of3", "results/tiny-shard1of3", "--out", "merged")
    assert result.exit_code == 1 and not (workdir / "merged").exists()
    assert ("2 of the grid's 8 runs are in none of the folders (placement=pre epsilon=0.001 seed=0; "
            "placement=none epsilon=1e-05 seed=1); they are runs of shard 2 of 3: run it again and merge again, or pass "
            "--partial") in result.stderr
    result = cli("merge", "results/tiny-shard0of3", "results/tiny-shard1of3", "--out", "merged", "--partial")
    assert result.exit_code == 0 and "merged 6 runs of the grid's 8" in result.stdout
    assert ("partial merge: 2 runs of the grid are in none of the folders (placement=pre epsilon=0.001 seed=0; "
            "placement=none epsilon=1e-05 seed=1)") in result.stderr
    meta = json.loads((workdir / "merged" / "meta.json").read_text())
    assert {"bnbench", "jax"} <= set(meta["versions"]) and meta["python"]
    other = write_spec(tiny_spec.read_text().replace("steps = 30", "steps = 20"), "other.toml")
    assert cli("sweep", other, "--out", "other", "--no-plots", "--shard", "0/4").exit_code == 0
    result = cli("merge", "results/tiny-shard0of3", "other", "--out", "merged2")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "results/tiny-shard0of3 and other hold results of different specs (steps is 30 there, 20 here" in result.stderr


@pytest.mark.integration
def test_more_seeds_or_axis_values_extend_a_sweep_and_anything_else_is_refused(tiny_results, tiny_spec, cli):
    before = pd.read_csv(tiny_results / "runs.csv")
    result = cli("sweep", tiny_spec, "--seeds", "3", "--no-plots")
    assert result.exit_code == 0, result.output
    assert "8 already in" in result.stdout and "4 to run" in result.stdout and "extended to this spec" in result.stderr
    after = pd.read_csv(tiny_results / "runs.csv")
    assert len(after) == 12 and after.head(8).equals(before)
    assert "seeds = [0, 1, 2]" in (tiny_results / "spec.toml").read_text()
    result = cli("sweep", tiny_spec, "--seeds", "3", "--set", "epsilon=1e-5,1e-3,0.1", "--no-plots")
    assert result.exit_code == 0 and "12 already in" in result.stdout and "6 to run" in result.stdout
    refused = cli("sweep", tiny_spec, "--seeds", "3", "--set", "epsilon=0.1", "--no-plots")
    assert refused.exit_code == 2 and "epsilon is [1e-05, 0.001, 0.1] there, 0.1 here" in refused.stderr
    refused = cli("sweep", tiny_spec, "--no-plots")
    assert refused.exit_code == 2 and "seeds [0, 1, 2] there, [0, 1] here" in refused.stderr


@pytest.mark.integration
def test_dry_run_prints_the_plan_even_where_a_real_run_would_be_refused(tiny_results, tiny_spec, cli):
    result = cli("sweep", tiny_spec, "--set", "lr=0.5", "--dry-run")
    assert result.exit_code == 0 and "8 runs (dry run" in result.stdout
    assert "a real run would be refused" in result.stdout and "lr is 0.001 there, 0.5 here" in result.stdout


@pytest.mark.integration
def test_piped_output_has_one_line_per_finished_run(tiny_spec, cli):
    result = cli("sweep", tiny_spec, "--no-plots")
    lines = [line for line in result.stdout.splitlines() if line.startswith("run ")]
    assert [line.split()[1] for line in lines] == [f"{i}/8" for i in range(1, 9)]
    assert all(" ok test_acc=0." in line and " wall=" in line and line.endswith(")") for line in lines)
