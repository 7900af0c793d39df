"""Seeds until decided from Python (bnbench.sweeping.until_decided): the loop ``sweep --seeds auto`` runs."""

import json

import pytest

from bnbench.errors import BnbenchError
from bnbench.results import frames
from bnbench.stats import group_sequential
from bnbench.sweeping import plan as plan_lib
from bnbench.sweeping import until_decided


@pytest.mark.integration
def test_until_decided_trains_look_by_look_and_records_the_design(write_spec, workdir):
    spec = write_spec('name = "auto"\ndataset = "synthetic"\nwidths = [8]\nbatch_size = 16\nsteps = 20\n'
                      'eval_every = 10\nseeds = 3\ncompare = ["placement=pre,none"]\n[grid]\nplacement = ["pre", "none"]\n')
    plan = plan_lib.plan_file(spec, out=workdir / "auto")
    design = until_decided.until_decided_design(plan, max_seeds=5)
    assert design == group_sequential.design(3, 5)
    looks = list(until_decided.until_decided(plan, design))
    assert [look.seeds for look in looks] == list(design.looks[: len(looks)])
    assert all(not look.decided for look in looks[:-1])
    assert frames.load_runs(workdir / "auto")["seed"].nunique() == looks[-1].seeds
    meta = json.loads((workdir / "auto" / "meta.json").read_text())
    assert group_sequential.Design.from_meta(meta["sequential"]) == design


@pytest.mark.unit
def test_until_decided_design_needs_a_stated_comparison(tiny_spec, workdir):
    with pytest.raises(BnbenchError, match="states no comparison to decide"):
        until_decided.until_decided_design(plan_lib.plan_file(tiny_spec, out=workdir / "x"), max_seeds=5)
