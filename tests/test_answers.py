"""Answers, not only numbers: a spec's stated comparisons, their power columns and verdict lines,
progress lines that name each run, and two folders side by side (``report A B``)."""

import math
import shutil

import numpy as np
import pandas as pd
import pytest

from bnbench.reporting import cells, model
from bnbench.stats import comparisons
from bnbench.experiment.runs import SpecError
from bnbench.experiment.spec import load_spec
from tests.test_evidence import paired_runs

QUESTION = 'compare = ["placement=pre,none"]\n'


@pytest.mark.unit
def test_a_spec_states_its_comparisons_and_each_is_checked_against_its_grid(write_spec):
    from tests.conftest import TINY_SPEC

    spec = load_spec(write_spec(TINY_SPEC.replace("seeds = 2\n", 'seeds = 2\ncompare = ["placement=pre,none", '
                                                  '"epsilon=1e-5,0.001"]\nmargin = 0.02\n')))
    assert spec.comparisons == (("placement", "pre", "none"), ("epsilon", "1e-5", "0.001")) and spec.margin == 0.02
    assert 'compare = ["placement=pre,none", "epsilon=1e-5,0.001"]' in spec.to_toml()
    for text, message in (
        ('compare = ["lr=0.1,0.2"]', "lr is not an axis of [grid] (placement, epsilon)"),
        ('compare = ["placement=pre,post"]', "post is not a value of grid.placement (pre, none)"),
        ('compare = ["placement=pre"]', 'expected "AXIS=A,B"'),
        ('compare = "placement=pre,none"', 'must be a list of "AXIS=A,B" strings'),
        ('compare = ["placement=pre,pre"]', "compares pre with itself"),
        ("margin = 0.01", "applies to the spec's comparisons"),
        ('compare = ["placement=pre,none"]\nmargin = -1', "must be a difference > 0"),
    ):
        with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            load_spec(write_spec(TINY_SPEC.replace("seeds = 2\n", f"seeds = 2\n{text}\n")))


@pytest.mark.unit
def test_power_columns_give_the_resolvable_difference_and_the_pairs_needed():
    stats = pytest.importorskip("scipy.stats")
    diffs = np.array([0.004, -0.006, 0.011, 0.002, -0.001])
    (row,) = comparisons.compare(paired_runs(diffs), "placement", "pre", "post").to_dict("records")
    sd = diffs.std(ddof=1)
    assert row["resolvable_diff"] == pytest.approx(stats.t.ppf(0.975, 4) * sd / math.sqrt(5), rel=1e-9)
    assert row["ci_high"] - row["mean_diff"] == pytest.approx(row["resolvable_diff"], rel=1e-9)
    # The smallest n whose t half-width at this spread falls below the observed mean, by brute force.
    needed = next(n for n in range(2, 10_000) if stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) < abs(diffs.mean()))
    assert row["decision"] == "undecided" and row["pairs_needed"] == needed
    decided = comparisons.compare(paired_runs([0.03, 0.031, 0.032]), "placement", "pre", "post").iloc[0]
    assert decided["decision"] == "higher" and math.isnan(decided["pairs_needed"])
    assert comparisons.pairs_needed(0.0, 0.01) == math.inf
    assert comparisons.pairs_needed(1e-5, 0.01) == math.inf  # beyond MOST_PAIRS: nothing a user can act on


@pytest.mark.unit
def test_a_margin_turns_a_tight_null_interval_into_no_difference_that_matters():
    runs = paired_runs([0.001, -0.001, 0.0005, 0.0, -0.0005])
    table = comparisons.compare(runs, "placement", "pre", "post", margin=0.01)
    assert table["decision"].tolist() == ["within_margin"]
    assert table["verdict"].iloc[0] == "pre ≈ post (within ±0.01)"
    assert comparisons.compare(runs, "placement", "pre", "post", margin=0.0005)["decision"].tolist() == ["undecided"]


@pytest.fixture
def stated(write_spec, cli, workdir):
    from tests.conftest import TINY_SPEC

    path = write_spec(TINY_SPEC.replace("seeds = 2\n", f"seeds = 3\n{QUESTION}"), "stated.toml")
    result = cli("sweep", path, "--no-plots")
    assert result.exit_code == 0, result.stderr
    return result, workdir / "results" / "tiny"


@pytest.mark.integration
def test_sweep_ends_with_the_specs_comparisons_and_a_verdict_per_row(stated):
    result, folder = stated
    assert "paired differences in test_acc: placement=pre minus none" in result.stdout
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("verdict (epsilon=")]
    runs = pd.read_csv(folder / "runs.csv")
    table = comparisons.compare(runs, "placement", "pre", "none")
    assert len(verdicts) == len(table) == 2
    for line, row in zip(verdicts, table.to_dict("records")):
        assert f"{row['mean_diff']:.4f}" in line and f"[{row['ci_low']:.4f}, {row['ci_high']:.4f}]" in line
    # Progress lines say which run finished, not only its hash.
    progress = [line for line in result.stdout.splitlines() if line.startswith("run ")]
    assert len(progress) == 12 and progress[0].startswith("run 1/12 placement=pre epsilon=1e-05 seed=0 ok")
    # report shows the spec's comparison without being asked; --compare replaces it.
    assert model.report(folder).comparisons[0][:3] == ("placement", "pre", "none")
    asked = model.report(folder, comparisons=[("epsilon", "1e-5", "0.001")])
    assert [c[:3] for c in asked.comparisons] == [("epsilon", "1e-5", "0.001")]


@pytest.mark.integration
def test_a_stated_comparison_the_runs_cannot_answer_is_a_note(stated, cli):
    _, folder = stated
    spec_toml = folder / "spec.toml"
    spec_toml.write_text(spec_toml.read_text().replace('"placement=pre,none"', '"placement=pre,post"'))
    report = model.report(folder)
    assert report.comparisons == [] and any("placement=pre,post is left out: no run has placement=post" in n
                                            for n in report.notes)


@pytest.mark.integration
def test_report_two_folders_pairs_runs_that_match_but_for_what_tells_them_apart(tiny_sweep, tiny_spec, cli, workdir):
    shutil.copytree(tiny_sweep, workdir / "a")
    b = cli("sweep", tiny_spec, "--out", "b", "--no-plots", "--set", "lr=0.05", "--seeds", "3")
    assert b.exit_code == 0, b.stderr
    result = cli("report", "a", "b", "--format", "csv")
    assert result.exit_code == 0, result.stderr
    assert "the folders differ in lr: 0.001 in a, 0.05 in b" in result.stderr
    assert "only b has seed=2: those runs have no partner" in result.stderr
    table = pd.read_csv(pd.io.common.StringIO(result.stdout)).set_index(["placement", "epsilon"])
    first, second = pd.read_csv(workdir / "a" / "runs.csv"), pd.read_csv(workdir / "b" / "runs.csv")
    keys = ["placement", "epsilon", "seed"]
    pairs = first.merge(second, on=keys)
    expected = (pairs["test_acc_x"] - pairs["test_acc_y"]).groupby([pairs["placement"], pairs["epsilon"]]).mean()
    assert len(table) == 4 and (table["pairs"] == 2).all()
    for key, mean in expected.items():
        assert table.loc[key, "mean_diff"] == pytest.approx(mean, abs=1e-12)
    refused = cli("report", "a", "b", "--probe", "grad_norm")
    assert refused.exit_code == 2 and "--probe: applies to one folder" in refused.stderr


@pytest.mark.integration
def test_report_two_folders_with_nothing_in_common_says_why(tiny_sweep, cli, write_spec, workdir):
    from tests.conftest import TINY_SPEC

    other = write_spec(TINY_SPEC.replace('epsilon = [1e-5, 1e-3]', 'epsilon = [0.01, 0.1]'), "other.toml")
    shutil.copytree(tiny_sweep, workdir / "a")
    assert cli("sweep", other, "--out", "b", "--no-plots").exit_code == 0
    result = cli("report", "a", "b")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "no run of a matches one of b in every field and the seed; only a has epsilon=0.001, 1e-05" in result.stderr


@pytest.mark.unit
def test_verdict_lines_read_as_sentences():
    runs = paired_runs([0.03, 0.031, 0.032, 0.029])
    table = comparisons.compare(runs, "placement", "pre", "post")
    report = model.Report("x", runs, "test_acc", [], table, None,
                              [model.Comparison("placement", "pre", "post", [], table)], 0.05, None, [])
    (line,) = cells.verdicts(report)
    assert line == ("verdict: placement=pre gives higher test_acc than post: 0.0305, 95% CI "
                    f"[{table['ci_low'].iloc[0]:.4f}, {table['ci_high'].iloc[0]:.4f}] over 4 pairs")
