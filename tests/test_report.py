"""Statistics, the report command, plots, the pandas API and activation statistics."""

import math

import jax
import numpy as np
import pandas as pd
import pytest

from bnbench import data
from bnbench.results import frames
from bnbench.stats import comparisons, summary
from bnbench.experiment.fields import RunConfig
from bnbench.engine import train_run
from bnbench.models import make_model
from bnbench.training.signature import HParams, Signature
from bnbench.training.program import ACTIVATION_EXAMPLES, make_program

RUNS = pd.DataFrame(
    {
        "placement": ["pre", "pre", "pre", "none", "none", "none"],
        "seed": [0, 1, 2, 0, 1, 2],
        "status": ["ok", "ok", "diverged", "ok", "ok", "ok"],
        "test_acc": [0.5, 0.7, float("nan"), 0.4, 0.4, 0.7],
    }
)


@pytest.mark.unit
def test_summary_matches_a_hand_computation():
    table = summary.summarize(RUNS, ["placement"]).set_index("placement")
    pre, none = table.loc["pre"], table.loc["none"]
    assert (pre["n"], pre["diverged"], none["n"], none["diverged"]) == (3, 1, 3, 0)
    assert math.isclose(pre["mean"], 0.6) and math.isclose(pre["std"], math.sqrt(0.02))
    # 95% t interval with 1 degree of freedom (t = 12.7062): 0.6 ± 1.27, clipped to an accuracy's [0, 1].
    assert (pre["ci_low"], pre["ci_high"], pre["ci_clipped"]) == (0.0, 1.0, True)
    assert math.isclose(none["mean"], 0.5) and math.isclose(none["std"], math.sqrt(0.03))
    half = 4.302652730 * math.sqrt(0.03) / math.sqrt(3)  # t(0.975, 2)
    assert math.isclose(none["ci_low"], 0.5 - half, rel_tol=1e-6) and math.isclose(none["ci_high"], 0.5 + half, rel_tol=1e-6)
    assert not none["ci_clipped"]
    assert summary.swept_axes(RUNS) == ["placement"]
    overall = summary.summarize(RUNS, [])
    assert len(overall) == 1 and overall["n"].iloc[0] == 6 and math.isclose(overall["mean"].iloc[0], 2.7 / 5)


def synthetic_pairs(difference: float, pairs: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    base = rng.normal(0.7, 0.05, size=pairs)
    rows = []
    for seed, value in enumerate(base):
        for lr in (0.1, 0.01):
            rows.append(dict(placement="pre", lr=lr, seed=seed, status="ok", test_acc=value + difference + rng.normal(0, 0.01)))
            rows.append(dict(placement="post", lr=lr, seed=seed, status="ok", test_acc=value + rng.normal(0, 0.01)))
    return pd.DataFrame(rows)


@pytest.mark.unit
def test_paired_comparison_recovers_a_known_difference():
    table = comparisons.compare(synthetic_pairs(0.03), "placement", "pre", "post").set_index("lr")
    assert list(table["pairs"]) == [40, 40]
    for lr in (0.1, 0.01):
        row = table.loc[lr]
        assert abs(row["mean_diff"] - 0.03) < 0.005
        assert row["ci_low"] <= 0.03 <= row["ci_high"] and not row["ci_includes_zero"]
    null = comparisons.compare(synthetic_pairs(0.0), "placement", "pre", "post")
    assert null["ci_includes_zero"].all()


@pytest.mark.integration
def test_report_on_an_interrupted_sweep_with_markdown_and_comparison(tiny_results, cli):
    out = tiny_results
    lines = (out / "runs.csv").read_text().splitlines(keepends=True)
    (out / "runs.csv").write_text("".join(lines[:6]))  # 5 of 8 runs, as a killed sweep leaves it
    result = cli("report", out, "--format", "markdown", "--compare", "placement=pre,none", "--no-plots")
    assert result.exit_code == 0, result.output
    table_lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table_lines[0] == "| placement | epsilon | n | diverged | mean ± std | 95% CI |"
    assert table_lines[1] == "| --- | --- | --- | --- | --- | --- |"
    assert "| pre | 1e-05 | 2 | 0 |" in result.stdout and "| pre | 0.001 | 2 | 0 |" in result.stdout
    assert "| none | 1e-05 | 1 | 0 |" in result.stdout
    assert "pairs" in result.stdout and "mean pre − none" in result.stdout
    csv = cli("report", out, "--format", "csv", "--no-plots")
    parsed = pd.read_csv(pd.io.common.StringIO(csv.stdout))
    assert list(parsed.columns) == ["placement", "epsilon", "n", "diverged", "mean", "std", "ci_low", "ci_high", "ci_clipped"]
    assert parsed["n"].sum() == 5


@pytest.mark.integration
@pytest.mark.parametrize(
    "args, message",
    [
        (["--metric", "accuracy"], "no column 'accuracy'"),
        (["--compare", "placement"], "--compare: expected AXIS=A,B"),
        (["--format", "html"], "--format"),
        (["--by", "colour"], "no column 'colour'"),
    ],
)
def test_report_errors_are_one_line(args, message, tiny_results, cli):
    result = cli("report", tiny_results, *args)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


@pytest.mark.unit
def test_report_on_a_folder_without_results(workdir, cli):
    result = cli("report", workdir)
    assert result.exit_code == 2 and "runs.csv: no such file" in result.stderr


@pytest.mark.integration
def test_plots_are_valid_pngs_of_reasonable_size(write_spec, workdir, cli):
    spec = write_spec(
        """
        name = "plots"
        dataset = "synthetic"
        widths = [8, 8]
        activation = "sigmoid"
        steps = 20
        eval_every = 10
        track_activations = true
        seeds = 2
        [grid]
        batch_size = [8, 32]
        lr = [0.001, 0.01]
        """
    )
    result = cli("sweep", spec)
    assert result.exit_code == 0, result.output
    out = workdir / "results" / "plots"
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["activations.png", "learning_curves.png", "test_acc_vs_batch_size.png", "test_acc_vs_lr.png"]
    for path in out.glob("*.png"):
        blob = path.read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(blob) < 1_000_000
        assert f"plot: results/plots/{path.name}" in result.stderr


@pytest.mark.integration
def test_loaders_give_documented_dtypes(write_spec, workdir, cli):
    spec = write_spec('name = "typed"\ndataset = "synthetic"\nwidths = [8]\nsteps = 10\ntrack_activations = true\n[grid]\nplacement = ["pre", "none"]\n')
    assert cli("sweep", spec, "--no-plots").exit_code == 0
    out = workdir / "results" / "typed"
    runs = frames.load_runs(out)
    for column in ("placement", "activation", "dataset", "model", "optimizer", "status", "widths"):
        assert isinstance(runs[column].dtype, pd.CategoricalDtype), column
    assert runs["run_id"].dtype == "string" and runs["diverged_step"].dtype == "Int64"
    assert runs["track_activations"].dtype == bool
    for column in ("batch_size", "seed", "steps"):
        assert pd.api.types.is_integer_dtype(runs[column]), column
    for column in ("epsilon", "momentum", "lr", "test_acc", "final_train_loss", "wall_s"):
        assert pd.api.types.is_float_dtype(runs[column]), column
    curves = frames.load_curves(out)
    assert curves["run_id"].dtype == "string" and pd.api.types.is_integer_dtype(curves["step"])
    acts = frames.load_activations(out)
    assert len(acts) == 2 * 10 * 1 and pd.api.types.is_float_dtype(acts["p50"])  # runs x evals x layers
    assert pd.read_csv(out / "runs.csv").shape == runs.shape  # the raw file reads as it is


@pytest.mark.integration
def test_activation_statistics_match_numpy_on_the_fixed_batch():
    config = RunConfig(
        dataset="synthetic",
        num_samples=1200,
        widths=(6, 5),
        activation="tanh",
        placement="post",
        steps=4,
        eval_every=2,
        track_activations=True,
    )
    dataset = data.load("synthetic", 1200)
    program = make_program(Signature.of(config, dataset))
    hp = HParams.of(config)
    state = program.init(np.uint32(0), hp)
    _, _, stats = program.evaluate(state, np.uint32(0), hp, dataset.x_train, dataset.x_test, dataset.y_test)
    model = make_model("mlp", input_shape=(16,), widths=(6, 5), num_classes=4, activation="tanh", placement="post")
    params, bn_state = model.init(jax.random.split(jax.random.PRNGKey(0))[0])
    batch = dataset.x_test[:ACTIVATION_EXAMPLES].astype(np.float64)
    # Layer 1 input to tanh: x W1 + b1; layer 2: post-BN (eval mode, fresh running stats) of tanh, then W2.
    pre1 = batch @ np.asarray(params["layers"][0]["w"], np.float64)
    h1 = np.tanh(pre1) / np.sqrt(1 + 1e-5)
    pre2 = h1 @ np.asarray(params["layers"][1]["w"], np.float64)
    for layer, pre in enumerate((pre1, pre2)):
        expected = [*np.percentile(pre, [15, 50, 85]), pre.mean(), pre.std()]
        np.testing.assert_allclose(stats[layer], expected, rtol=1e-4, atol=1e-5)
    result = train_run(config)
    assert [(p.step, p.layer) for p in result.activations] == [(2, 1), (2, 2), (4, 1), (4, 2)]


@pytest.mark.unit
def test_counts_stay_integers_when_every_grouping_column_is_numeric():
    from bnbench.reporting.cells import summary_cells

    table = pd.DataFrame(
        {"epsilon": [1e-5], "momentum": [0.9], "n": [2], "diverged": [0], "mean": [0.5], "std": [0.1], "ci_low": [0.4], "ci_high": [0.6]}
    )
    _, rows = summary_cells(table, ["epsilon", "momentum"])
    assert rows[0][2:4] == ["2", "0"]
