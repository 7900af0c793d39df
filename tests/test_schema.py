"""The CSV schema is complete and documented."""

import dataclasses
import re
from pathlib import Path

from bnbench.config import RunConfig
from bnbench.profile import Row
from bnbench.schema import ACTIVATION_COLUMNS, CURVE_COLUMNS, RUN_COLUMNS

README = Path(__file__).resolve().parents[1] / "results" / "README.md"


def documented_columns(section: str) -> list[str]:
    text = README.read_text().split(f"## {section}")[1].split("\n## ")[0]
    return re.findall(r"^\| `(\w+)` \|", text, flags=re.M)


def test_every_run_field_is_a_column():
    assert {f.name for f in dataclasses.fields(RunConfig)} <= set(RUN_COLUMNS)


def test_results_readme_documents_exactly_the_columns():
    assert documented_columns("runs.csv") == list(RUN_COLUMNS)
    assert documented_columns("curves.csv") == list(CURVE_COLUMNS)
    assert documented_columns("activations.csv") == list(ACTIVATION_COLUMNS)
    assert documented_columns("profile.csv") == list(Row._fields)
