"""Seeds until decided (bnbench.stats.group_sequential): the design, its error rate under optional stopping
(simulated), its power, and ``sweep --seeds auto`` end to end."""

import json

import numpy as np
import pandas as pd
import pytest

from bnbench.stats import group_sequential
from bnbench.stats import comparisons

REPLICATES = 1500
TEST_SIZE = 1000  # accuracies are multiples of 1/1000, as on MNIST-1D's test split


@pytest.mark.unit
def test_the_design_spends_its_alpha_over_looks_fixed_in_advance():
    design = group_sequential.design(3, 9)
    assert design.looks == (3, 5, 7, 9)
    assert design.alphas == pytest.approx((0.05 * 3 / 9, 0.05 * 2 / 9, 0.05 * 2 / 9, 0.05 * 2 / 9))
    assert sum(design.alphas) == pytest.approx(0.05)
    assert group_sequential.design(1, 4).looks == (3, 4)  # no look below 3 pairs: no direction there anyway
    assert design.alpha_at(5) == pytest.approx(0.05 * 2 / 9) and design.alpha_at(4) is None
    assert group_sequential.Design.from_meta(json.loads(json.dumps(design.to_meta()))) == design
    with pytest.raises(group_sequential.DesignError, match="--max-seeds: must be at least 5"):
        group_sequential.design(5, 4)


def simulated_runs(effect: float, seeds: int, rng) -> pd.DataFrame:
    """``REPLICATES`` independent experiments (told apart by ``lr``), each comparing placement=pre and
    post over ``seeds`` seeds: each seed's accuracy is binomial on a test split, around a level that
    varies by seed (shared by both arms, as a seed's data order and initialization are); ``pre`` is
    ``effect`` higher."""
    level = 0.65 + 0.01 * rng.standard_normal((REPLICATES, seeds))
    pre = rng.binomial(TEST_SIZE, np.clip(level + effect, 0, 1)) / TEST_SIZE
    post = rng.binomial(TEST_SIZE, level) / TEST_SIZE
    replicate, seed = np.meshgrid(np.arange(REPLICATES), np.arange(seeds), indexing="ij")
    frames = [pd.DataFrame({"lr": 1e-3 * (1 + replicate.ravel()), "seed": seed.ravel(), "placement": arm,
                            "status": "ok", "test_acc": acc.ravel()}) for arm, acc in (("pre", pre), ("post", post))]
    return pd.concat(frames, ignore_index=True)


def stopped_decisions(runs: pd.DataFrame, design: group_sequential.Design) -> pd.DataFrame:
    """Each replicate's decision at the first look that decides it (the last look's otherwise), as
    ``--seeds auto`` stops, with the seeds it stopped at."""
    outcome = pd.DataFrame({"decision": "undecided", "stopped": design.looks[-1]}, index=sorted(runs["lr"].unique()))
    open_ = pd.Series(True, index=outcome.index)
    for seeds in design.looks:
        look = group_sequential.look(runs[runs["seed"] < seeds], [("placement", "pre", "post")], design)
        table = look.tables[0][1].set_index("lr")
        now = open_ & group_sequential.decided(table)
        outcome.loc[now, "decision"] = table.loc[now, "decision"]
        outcome.loc[now, "stopped"] = seeds
        open_ &= ~now
    return outcome


@pytest.mark.unit
def test_optional_stopping_keeps_false_directions_at_or_below_five_percent():
    rng = np.random.default_rng(0)
    runs = simulated_runs(0.0, 20, rng)
    design = group_sequential.design(3, 20)
    false_rate = stopped_decisions(runs, design)["decision"].isin(["higher", "lower"]).mean()
    # A binomial count of 1500 at 5% has a standard error of 0.56%: 6.2% would be two of them above.
    assert false_rate <= 0.062, false_rate
    # The same looks at a fixed-sample 95% each: optional stopping inflates the error, which the design
    # exists to prevent (this is what the test above would see without the alpha spending).
    naive = group_sequential.Design(design.looks, (0.05,) * len(design.looks))
    naive_rate = stopped_decisions(runs, naive)["decision"].isin(["higher", "lower"]).mean()
    assert naive_rate > 0.10, naive_rate


@pytest.mark.unit
def test_a_real_difference_is_found_in_the_right_direction():
    rng = np.random.default_rng(1)
    # 1.4 standard deviations of a paired difference (two binomial accuracies on 1000 test examples)
    runs = simulated_runs(0.03, 20, rng)
    outcome = stopped_decisions(runs, group_sequential.design(3, 20))
    assert (outcome["decision"] == "higher").mean() >= 0.9
    assert (outcome["decision"] == "lower").mean() <= 0.001
    assert outcome["stopped"].median() < 20  # and it stops before the maximum


@pytest.mark.unit
def test_a_margin_decides_a_null_comparison_as_no_difference_that_matters():
    rng = np.random.default_rng(2)
    runs = simulated_runs(0.0, 20, rng)
    outcome = stopped_decisions(runs, group_sequential.design(3, 20, margin=0.03))
    assert (outcome["decision"] == "within_margin").mean() >= 0.9
    # No difference at all, so a direction is still a false one: at most the design's 5%.
    assert outcome["decision"].isin(["higher", "lower"]).mean() <= 0.062
    # A difference beyond the margin is never called negligible.
    beyond = stopped_decisions(simulated_runs(0.03, 20, rng), group_sequential.design(3, 20, margin=0.03))
    assert (beyond["decision"] == "within_margin").mean() <= 0.025


@pytest.mark.integration
def test_sweep_seeds_auto_stops_when_decided_and_report_reads_its_level(workdir, cli):
    spec = workdir / "auto.toml"
    spec.write_text(
        'name = "auto"\ndataset = "mnist1d"\nmodel = "mlp"\nwidths = [32]\nsteps = 300\neval_every = 100\n'
        'batch_size = 64\nseeds = 3\ncompare = ["placement=pre,none"]\n[grid]\nplacement = ["pre", "none"]\n'
    )
    result = cli("sweep", spec, "--seeds", "auto", "--max-seeds", "7", "--out", workdir / "auto", "--no-plots")
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("seeds auto:")]
    meta = json.loads((workdir / "auto" / "meta.json").read_text())
    design = group_sequential.Design.from_meta(meta["sequential"])
    assert design == group_sequential.design(3, 7)
    runs = pd.read_csv(workdir / "auto" / "runs.csv")
    seeds = runs["seed"].nunique()
    assert seeds in design.looks and len(lines) == design.looks.index(seeds) + 1
    assert lines[-1].endswith("stopping") or seeds == 7
    # The report reads the last look's level from meta.json and gives the interval at it.
    alpha = design.alpha_at(seeds)
    table = comparisons.compare(runs.assign(status="ok"), "placement", "pre", "none", alpha=alpha)
    shown = cli("report", workdir / "auto", "--format", "csv", "--no-plots")
    reported = pd.read_csv(pd.io.common.StringIO(shown.stdout))
    assert reported["ci_low"].iloc[0] == pytest.approx(table["ci_low"].iloc[0], abs=1e-12)
    assert f"{100 * (1 - alpha):.4g}% CI" in cli("report", workdir / "auto", "--no-plots").stdout


@pytest.mark.unit
def test_seeds_auto_needs_a_stated_comparison_and_the_whole_grid(workdir, cli, tiny_spec):
    result = cli("sweep", tiny_spec, "--seeds", "auto", "--out", workdir / "x")
    assert result.exit_code == 2 and "states no comparison to decide" in result.stderr
    assert "Traceback" not in result.stderr and not (workdir / "x").exists()
    result = cli("sweep", tiny_spec, "--seeds", "three", "--out", workdir / "x")
    assert result.exit_code == 2 and "--seeds: expected a count of seeds or auto, got 'three'" in result.stderr
