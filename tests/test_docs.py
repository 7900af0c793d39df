"""The README is a front door (at most 200 lines), every link in it and in docs/ resolves inside the
repository, and the Python examples run."""

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "results" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
# The pages whose Python examples run, each page's blocks in order in one namespace.
EXAMPLE_PAGES = [ROOT / "README.md", ROOT / "docs" / "commands.md"]
# Stands in for experiments/quickstart.toml in the examples: its name, fields and comparison, seconds to sweep.
TINY_QUICKSTART = """
name = "quickstart"
dataset = "synthetic"
model = "mlp"
widths = [8]
steps = 30
eval_every = 10
seeds = 2
compare = ["placement=pre,post", "placement=pre,none"]

[grid]
placement = ["pre", "post", "none"]
batch_size = [32, 128]
"""


@pytest.mark.unit
def test_the_readme_is_at_most_200_lines():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.unit
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name}: {target} does not exist"
        assert path.is_relative_to(ROOT), f"{page.name}: {target} points outside the repository"


@pytest.mark.unit
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_names_a_path_outside_the_repository(page):
    assert "../shared" not in page.read_text(encoding="utf-8")


@pytest.mark.unit
def test_every_shipped_spec_has_its_page():
    for spec in (ROOT / "experiments").glob("*.toml"):
        assert (ROOT / "docs" / "experiments" / f"{spec.stem}.md").exists(), spec.name


@pytest.mark.unit
def test_the_api_examples_are_where_the_docs_say():
    assert PYTHON_BLOCK.findall((ROOT / "docs" / "commands.md").read_text(encoding="utf-8"))


@pytest.mark.integration
@pytest.mark.parametrize("page", EXAMPLE_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_example_runs(page, workdir, capsys):
    """Each ```python block of the page, in order, in one namespace, where experiments/quickstart.toml is a
    tiny spec: the examples call the API as written, on a sweep that takes seconds."""
    (workdir / "experiments").mkdir()
    (workdir / "experiments" / "quickstart.toml").write_text(textwrap.dedent(TINY_QUICKSTART))
    namespace: dict = {}
    for number, block in enumerate(PYTHON_BLOCK.findall(page.read_text(encoding="utf-8")), 1):
        exec(compile(block, f"{page.name}, python block {number}", "exec"), namespace)
    if "result" in namespace:  # the sweep example printed its progress and verdicts, as it says
        printed = capsys.readouterr().out
        assert "run 1/" in printed and "eta=" in printed and "\nverdict: placement=pre vs post" in printed
