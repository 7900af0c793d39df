"""Runs of a grid that train the same network on the same numbers (bnbench.experiment.identity): the rule
holds bitwise, a sweep trains each such training once and records it under every configuration, and a
comparison never pairs a training with itself."""

import itertools

import pandas as pd
import pytest

from bnbench import engine
from bnbench.experiment.identity import trains_as
from bnbench.sweeping import plan

SPEC = """
name = "same"
dataset = "synthetic"
num_samples = 400
model = "mlp"
widths = [8]
batch_size = 16
steps = 12
eval_every = 6
seeds = 1
compare = ["norm=batch,group"]

[grid]
placement = ["pre", "none"]
norm = ["batch", "group", "none"]
groups = [2]
epsilon = [1e-5, 1e-2]
momentum = [0.9, 0.99]
"""


def _numbers(result):
    return result._replace(wall_s=0, context=None)


@pytest.mark.integration
def test_runs_with_one_trains_as_give_bitwise_the_same_numbers_and_the_others_do_not(write_spec):
    runs = plan.load_checked(write_spec(SPEC)).expand()
    results = dict(zip((r.run_id for r in runs), (_numbers(r) for _, r in engine.run_all(runs))))
    by_training = {}
    for run in runs:
        by_training.setdefault(trains_as(run), []).append(results[run.run_id])
    # pre under batch (2 epsilon x 2 momentum), pre under group (2 epsilon), no norm layer (the rest)
    assert len(runs) == 24 and len(by_training) == 4 + 2 + 1
    for same in by_training.values():
        assert all(result == same[0] for result in same)
    for first, second in itertools.combinations(by_training.values(), 2):
        assert first[0].test_loss != second[0].test_loss


@pytest.mark.integration
def test_a_sweep_trains_each_training_once_and_records_it_under_every_configuration(write_spec, workdir, cli):
    from bnbench import compare, load_runs

    result = cli("sweep", write_spec(SPEC.replace("seeds = 1", "seeds = 2")), "--no-plots")
    assert result.exit_code == 0, result.output
    assert "34 runs train as another run of the grid" in " ".join(result.output.split())
    runs = pd.read_csv(workdir / "results" / "same" / "runs.csv")
    assert len(runs) == 48 and runs["run_id"].is_unique and runs["trains_as"].nunique() == 14
    for _, group in runs.groupby("trains_as"):
        # one training: its wall time too, which a second training would not repeat to the digit
        assert len(group[["test_loss", "test_acc", "final_train_loss", "wall_s"]].drop_duplicates()) == 1
    curves = pd.read_csv(workdir / "results" / "same" / "curves.csv")
    assert set(curves["run_id"]) == set(runs["run_id"])

    # a comparison never pairs a training with itself
    table = compare(load_runs(workdir / "results" / "same"), "norm", "batch", "group")
    # under placement none both sides are one training: no pair, no row; under pre, 2 seeds x 2 epsilon x 2 momentum
    # (GroupNorm's two momenta are one training, paired with two of BN's)
    assert set(table["placement"]) == {"pre"} and table["pairs"].sum() == 8


@pytest.mark.unit
def test_runs_train_as_one_only_within_one_execution_context():
    """A run's numbers depend on its execution context too (runs per device, ...): a run recorded from
    another's training must have run in that context, or a resumed sweep would find it in another."""
    from bnbench.experiment.fields import RunConfig
    from bnbench.experiment.identity import shared_trainings

    first, second = (RunConfig(dataset="synthetic", placement="none", norm=norm) for norm in ("batch", "group"))
    assert trains_as(first) == trains_as(second)
    assert shared_trainings([first, second], lambda run: "one context") == {first.run_id: [second]}
    assert shared_trainings([first, second], lambda run: run.norm) == {}
