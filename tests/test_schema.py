"""The CSV schema is complete, and its generated documentation is current."""

import dataclasses

from bnbench import docs
from bnbench.config import RunConfig
from bnbench.profile import PROFILE_COLUMNS, Row
from bnbench.schema import RUN_COLUMNS


def test_every_run_field_is_a_column():
    assert {f.name for f in dataclasses.fields(RunConfig)} <= set(RUN_COLUMNS)


def test_every_profile_column_is_described():
    assert list(PROFILE_COLUMNS) == list(Row._fields)


def test_the_committed_reference_pages_are_what_the_code_generates():
    for name, page in docs.PAGES.items():
        committed = (docs.DOCS / name).read_text(encoding="utf-8")
        assert committed == page(), f"docs/{name} is stale: run `python -m bnbench.docs`"
