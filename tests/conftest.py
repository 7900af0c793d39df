import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bnbench.cli import app

TINY_SPEC = """
name = "tiny"
dataset = "synthetic"
model = "mlp"
widths = [8]
batch_size = 16
steps = 30
eval_every = 10
seeds = 2

[grid]
placement = ["pre", "none"]
epsilon = [1e-5, 1e-3]
"""


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory):
    """Sweeps in tests (in-process and subprocesses) share a compilation cache and a user cache folder
    (generated data sets) of their own, not the user's."""
    folder = tmp_path_factory.mktemp("xla-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BNBENCH_COMPILE_CACHE", str(folder))
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("user-cache")))
        yield folder


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh current directory, so default output folders land in tmp."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def write_spec(workdir):
    def write(text: str, name: str = "spec.toml") -> Path:
        path = workdir / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


@pytest.fixture
def tiny_spec(write_spec) -> Path:
    """A 8-run spec on the synthetic data set: placement x epsilon x 2 seeds, 30 steps."""
    return write_spec(TINY_SPEC)
