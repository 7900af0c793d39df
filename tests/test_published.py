"""Published numbers: what the docs show of the quickstart is what a user's command prints, digit for digit.

The quickstart is swept as ``make sweep`` sweeps it, in a process of its own (the spec's numerics:
portable, so the same on any x86-64 CPU with AVX2); then ``docs/experiments/quickstart.md``'s tables must
begin with the lines ``bnbench report --format markdown`` prints (the robustness table follows them), and
the README's quoted summary rows and verdict lines must be lines the sweep printed.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bnbench.options import NUMERICS_ENV
from bnbench.training import host

ROOT = Path(__file__).resolve().parents[1]


def bnbench(*args) -> str:
    env = {key: value for key, value in os.environ.items() if key != NUMERICS_ENV} | {"COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "bnbench", *map(str, args)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def words(line: str) -> str:
    return " ".join(line.split())


@pytest.mark.slow
@pytest.mark.skipif(not host.portable_possible(), reason="the documented numbers are portable: an x86-64 CPU with AVX2")
def test_the_quickstart_prints_the_documented_tables_and_verdicts(tmp_path):
    printed = bnbench("sweep", ROOT / "experiments" / "quickstart.toml", "--out", tmp_path / "quickstart", "--no-plots")
    markdown = bnbench("report", tmp_path / "quickstart", "--format", "markdown", "--no-plots")
    page = (ROOT / "docs" / "experiments" / "quickstart.md").read_text()
    reported = table_lines(markdown)
    assert reported and table_lines(page)[: len(reported)] == reported
    readme = (ROOT / "README.md").read_text()
    quoted = re.search(r"## Reading the quickstart's output\n\n```\n(.*?)```", readme, re.S).group(1).splitlines()
    rows = [words(line) for line in quoted if re.match(r"(pre|post|none|32|128)\s", line)]
    verdicts = [line for line in quoted if line.startswith("verdict (")]
    assert rows and verdicts
    said = {words(line) for line in printed.splitlines()}
    assert [row for row in rows if row not in said] == []
    assert [line for line in verdicts if line not in printed.splitlines()] == []
