import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bnbench.cli.app import app

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


# The fast lane (`make test-fast`, `pytest -m "not slow"`): BN, its variants and edge cases, specs, the
# CSV schema, the field registry and the docs. Every other module trains networks or runs sweeps.
FAST_MODULES = {"test_bn", "test_variants", "test_edge_inputs", "test_spec", "test_schema", "test_registry", "test_docs",
                "test_explain"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module.__name__.rpartition(".")[2] not in FAST_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def release_compiled_programs():
    """Drops every compiled program after each test. Each executable maps its code into the process
    (a small one about 3 of the kernel's memory maps; `vm.max_map_count` is 65530 here), and one test
    process compiles thousands: released only after each module, they reached 36,000 maps, and XLA:CPU aborted
    or segfaulted late in every full run, compiling or serializing, never with the failing test alone."""
    yield
    from bnbench import engine

    engine.release_programs()


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
