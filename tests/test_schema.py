"""The CSV schema is complete, and its generated documentation is current."""

import dataclasses

import pytest

from bnbench.cli import doc_pages
from bnbench.experiment.fields import RunConfig
from bnbench.profiling.table import PROFILE_COLUMNS, Row
from bnbench.results.schema import RUN_COLUMNS

pytestmark = pytest.mark.unit


def test_every_run_field_is_a_column():
    assert {f.name for f in dataclasses.fields(RunConfig)} <= set(RUN_COLUMNS)


def test_every_profile_column_is_described():
    assert list(PROFILE_COLUMNS) == list(Row._fields)


def test_the_committed_reference_pages_are_what_the_code_generates():
    for name, page in doc_pages.PAGES.items():
        committed = (doc_pages.DOCS / name).read_text(encoding="utf-8")
        assert committed == page(), f"docs/{name} is stale: run `python -m bnbench.cli.doc_pages`"
