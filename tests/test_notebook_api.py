"""``bnbench.sweep`` from Python: the command line's rows, resume and lock, its results and report
returned, progress without printing, and verdicts in the command line's words."""

import logging
import re

import pandas as pd
import pytest

import bnbench
from bnbench.errors import BnbenchError
from bnbench.reporting import cells
from bnbench.results.csv_files import ResultsError
from bnbench.results.folder import ResultsStore
from tests.conftest import TINY_SPEC

pytestmark = pytest.mark.integration

# The tiny spec with a question, so that the sweep ends with comparisons and verdicts.
QUESTION_SPEC = TINY_SPEC.replace("seeds = 2\n", 'seeds = 2\ncompare = ["placement=pre,none"]\n')
OVERRIDES = ["epsilon=1e-5,0.1"]


@pytest.fixture
def swept_both(write_spec, workdir, cli):
    """The question spec swept with 3 seeds and an override by the command line into ``cli``, and by
    ``bnbench.sweep`` into ``api``, its progress collected."""
    spec = write_spec(QUESTION_SPEC)
    by_cli = cli("sweep", spec, "--out", "cli", "--no-plots", "--seeds", "3", "--set", *OVERRIDES)
    assert by_cli.exit_code == 0, by_cli.output
    steps = []
    result = bnbench.sweep(spec, out=workdir / "api", seeds=3, overrides=OVERRIDES, progress=steps.append)
    return spec, by_cli, result, steps


def test_sweep_writes_the_rows_the_command_line_writes(swept_both, workdir):
    _, by_cli, result, steps = swept_both
    appended = pd.read_csv(workdir / "api" / "runs.csv")["run_id"]
    # Blocks trained side by side finish in either order: rows are compared run by run.
    rows = {name: _sorted(pd.read_csv(workdir / name / "runs.csv").drop(columns="wall_s"), ["run_id"])
            for name in ("cli", "api")}
    assert len(rows["api"]) == 12 and set(rows["api"]["epsilon"]) == {1e-5, 0.1}
    pd.testing.assert_frame_equal(rows["api"], rows["cli"], check_exact=True)
    curves = {name: _sorted(pd.read_csv(workdir / name / "curves.csv"), ["run_id", "step"]) for name in ("cli", "api")}
    pd.testing.assert_frame_equal(curves["api"], curves["cli"], check_exact=True)
    # What it returns is the folder read back, and its report.
    assert result.out == workdir / "api" and result.trained == list(appended)
    pd.testing.assert_frame_equal(result.runs, bnbench.load_runs(workdir / "api"))
    pd.testing.assert_frame_equal(result.curves, bnbench.load_curves(workdir / "api"))
    expected = bnbench.report(workdir / "api")
    pd.testing.assert_frame_equal(result.report.summary, expected.summary)
    assert [c[:3] for c in result.comparisons] == [("placement", "pre", "none")]
    pd.testing.assert_frame_equal(result.comparisons[0].table, expected.comparisons[0].table)
    # The verdict lines are those the command line ends with.
    assert result.verdicts == cells.verdicts(expected) and len(result.verdicts) >= 2
    assert all(line in by_cli.stdout for line in result.verdicts)


def test_progress_reaches_a_callback_with_the_lines_the_command_line_pipes(swept_both):
    _, by_cli, result, steps = swept_both
    assert [s.index for s in steps] == list(range(1, 13)) and {s.total for s in steps} == {12}
    assert [s.record.config.run_id for s in steps] == result.trained
    assert all(s.eta_s >= 0 and s.elapsed_s >= 0 for s in steps) and steps[-1].eta_s == 0
    piped = [line for line in by_cli.stdout.splitlines() if line.startswith("run ")]
    # The times differ from one sweep to the next, and so may the order blocks finish in.
    unstable = re.compile(r"^run \d+/12 | wall=\S+ eta=\S+")
    assert sorted(unstable.sub("", str(s)) for s in steps) == sorted(unstable.sub("", line) for line in piped)
    assert len(piped) == 12 and str(steps[0]).startswith("run 1/12 placement=")
    assert all(re.search(r" eta=\d+:\d\d:\d\d \(id \w+\)$", line) for line in piped)


def test_a_second_call_trains_nothing_and_more_seeds_extend_the_folder(swept_both, workdir):
    spec, _, first, _ = swept_both
    runs_csv = workdir / "api" / "runs.csv"
    before = runs_csv.read_bytes()
    steps = []
    again = bnbench.sweep(bnbench.load_spec(spec), out=workdir / "api", seeds=3, overrides=OVERRIDES,
                          progress=steps.append)
    assert again.trained == [] and steps == [] and runs_csv.read_bytes() == before
    pd.testing.assert_frame_equal(again.runs, first.runs)
    more = bnbench.sweep(spec, out=workdir / "api", seeds=4, overrides=OVERRIDES, progress=False)
    assert len(more.trained) == 4 and set(more.runs.loc[more.runs["run_id"].isin(more.trained), "seed"]) == {3}
    assert runs_csv.read_bytes().startswith(before)


def test_the_default_folder_is_the_command_lines_and_progress_logs_by_default(write_spec, workdir, caplog):
    spec = write_spec(TINY_SPEC)
    with caplog.at_level(logging.INFO, logger="bnbench"):
        result = bnbench.sweep(spec, overrides=["placement=none"], seeds=1)
    assert result.out.resolve() == workdir / "results" / "tiny" and (workdir / "results" / "tiny" / "runs.csv").exists()
    lines = [r.getMessage() for r in caplog.records if r.name == "bnbench.reporting.sweep"]
    assert len(lines) == 2 and lines[0].startswith("run 1/2 placement=none epsilon=1e-05 seed=0 ok")


def test_a_locked_folder_is_refused_as_the_command_line_refuses_it(tiny_spec, workdir, cli):
    out = workdir / "busy"
    with ResultsStore(out).lock("sweep"):
        with pytest.raises(ResultsError) as refused:
            bnbench.sweep(tiny_spec, out=out, progress=False)
        by_cli = cli("sweep", tiny_spec, "--out", out, "--no-plots")
    assert "in use by `bnbench sweep` (process" in str(refused.value)
    assert by_cli.exit_code == refused.value.exit_code and by_cli.stderr == f"error: {refused.value}\n"
    assert not (out / "runs.csv").exists()


def test_bad_overrides_are_refused_as_the_command_line_refuses_them(tiny_spec, cli):
    with pytest.raises(BnbenchError) as refused:
        bnbench.sweep(tiny_spec, overrides=["epsilon=-1"], progress=False)
    by_cli = cli("sweep", tiny_spec, "--set", "epsilon=-1", "--no-plots")
    assert by_cli.exit_code == 2 and by_cli.stderr == f"error: {refused.value}\n"
    with pytest.raises(BnbenchError, match="a list of 'key=v1,v2' strings"):
        bnbench.sweep(tiny_spec, overrides="epsilon=1e-3", progress=False)


def test_verdicts_read_the_same_in_the_api_and_on_the_command_line(swept_both, cli, workdir):
    """One wording: each row's ``verdict`` is the cell the command line and the page show."""
    _, _, result, _ = swept_both
    table = result.comparisons[0].table
    markdown = cli("report", workdir / "api", "--no-plots", "--format", "markdown").stdout
    for verdict in table["verdict"]:
        assert f"| {verdict} |" in markdown
    assert set(table["decision"]) <= {"higher", "lower", "undecided"}
    undecided = table[table["decision"] == "undecided"]
    assert (undecided["verdict"].str.startswith("undecided")).all()
    decided = table[table["decision"] != "undecided"]
    assert (decided["verdict"] == "pre " + decided["decision"]).all()


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)
