"""The CSV schema is complete and documented; the summary equals a hand computation."""

import dataclasses
import re
from pathlib import Path

import math

import pandas as pd

from bnbench.schema import CURVE_COLUMNS, RUN_COLUMNS
from bnbench.spec import RunConfig
from bnbench.summary import summarize

README = Path(__file__).resolve().parents[1] / "results" / "README.md"


def documented_columns(section: str) -> list[str]:
    text = README.read_text().split(f"## {section}")[1].split("\n## ")[0]
    return re.findall(r"^\| `(\w+)` \|", text, flags=re.M)


def test_every_run_field_is_a_column():
    assert {f.name for f in dataclasses.fields(RunConfig)} <= set(RUN_COLUMNS)


def test_results_readme_documents_exactly_the_columns():
    assert documented_columns("runs.csv") == list(RUN_COLUMNS)
    assert documented_columns("curves.csv") == list(CURVE_COLUMNS)


def test_summary_matches_hand_computation_and_skips_diverged_runs():
    runs = pd.DataFrame(
        {
            "placement": ["pre", "pre", "pre", "none", "none"],
            "status": ["ok", "ok", "diverged", "ok", "ok"],
            "test_acc": [0.5, 0.7, float("nan"), 0.4, 0.4],
            "final_train_loss": [1.0, 2.0, float("nan"), 3.0, 5.0],
        }
    )
    table = summarize(runs, ["placement"]).set_index("placement")
    assert table.loc["pre", "n"] == 3 and table.loc["pre", "diverged"] == 1
    assert math.isclose(table.loc["pre", "test_acc_mean"], 0.6)
    assert math.isclose(table.loc["pre", "test_acc_std"], math.sqrt(0.02))  # ddof=1 over 0.5, 0.7
    assert math.isclose(table.loc["none", "final_train_loss_mean"], 4.0)
    assert math.isclose(table.loc["none", "final_train_loss_std"], math.sqrt(2.0))
    overall = summarize(runs, [])
    assert len(overall) == 1 and overall["n"].iloc[0] == 5
