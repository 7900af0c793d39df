import gc
import os
import shutil
import textwrap
from pathlib import Path

import jax
import pytest
from typer.testing import CliRunner

from bnbench.cli.app import app
from bnbench.engine import release_programs
from bnbench.engine.compile_cache import enable_compilation_cache
from bnbench.options import NUMERICS_ENV
from bnbench.training.numerics import prepare

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

# Every test belongs to one lane, by what it does (pyproject.toml registers them): `make test-fast` runs
# the unit lane, `make test` unit and integration, `make test-system` the system lane, `make test-slow`
# the slow one.
LANES = ("unit", "integration", "system", "slow")


def pytest_addoption(parser):
    parser.addoption("--compile-times", type=int, default=0, metavar="N",
                     help="after the run, XLA's compilation time, training programs apart from single operations, "
                          "and the N tests that spent longest there (cache reads included)")


# The seconds the running test spent compiling: XLA's compilations, in any thread of the process, as
# jax.monitoring reports them (a read of the persistent cache included). A cold run spends most of its
# time there, one distinct program at a time: `pytest --compile-times 20` names the tests that do, and
# splits the total at LARGE_PROGRAM_S between training programs and the single operations tests run
# eagerly, each a compilation of its own.
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
LARGE_PROGRAM_S = 0.5
_NOTHING_COMPILED = {"seconds": 0.0, "large_seconds": 0.0, "large": 0, "small": 0}
_compiling = dict(_NOTHING_COMPILED)


def _count_compilation(event: str, duration: float, **_) -> None:
    if event == COMPILE_EVENT:
        _compiling["seconds"] += duration
        if duration > LARGE_PROGRAM_S:
            _compiling["large_seconds"] += duration
            _compiling["large"] += 1
        else:
            _compiling["small"] += 1


def pytest_configure(config):
    """Each test process computes natively (bnbench.training.numerics): portable programs, compiled without
    YNNPACK, took the unit and integration lanes some two minutes longer, past CI's limit. Portable
    numerics are tested in processes of their own (tests/test_golden.py, tests/test_numerics.py, the
    system lane). The sweeps the tests start in other processes compute natively too ($BNBENCH_NUMERICS),
    so that a folder one of them wrote resumes here."""
    os.environ[NUMERICS_ENV] = "native"
    prepare(None)
    if config.getoption("compile_times"):
        jax.monitoring.register_event_duration_secs_listener(_count_compilation)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _compiling.update(_NOTHING_COMPILED)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With ``--compile-times``, each test's teardown report carries its compilations (set up, call and
    teardown), which pytest-xdist's workers send on to the process that prints the summary."""
    report = (yield).get_result()
    if call.when == "teardown" and item.config.getoption("compile_times"):
        report.user_properties.append(("compile", dict(_compiling)))


def pytest_terminal_summary(terminalreporter, config):
    count = config.getoption("compile_times")
    if not count:
        return
    tests = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            properties = dict(getattr(report, "user_properties", ()))
            if getattr(report, "when", "") == "teardown" and "compile" in properties:
                tests[report.nodeid] = properties["compile"]
    total = {key: sum(test[key] for test in tests.values()) for key in _compiling}
    terminalreporter.section(f"XLA compilation: {total['seconds']:.0f} s in all")
    terminalreporter.write_line(
        f"{total['large_seconds']:.0f} s in {total['large']} compilations over {LARGE_PROGRAM_S} s (training programs), "
        f"{total['seconds'] - total['large_seconds']:.0f} s in {total['small']} shorter ones (mostly single operations)")
    terminalreporter.write_line(f"the {count} tests that compiled longest:")
    for nodeid, test in sorted(tests.items(), key=lambda item: -item[1]["seconds"])[:count]:
        terminalreporter.write_line(f"{test['seconds']:7.1f} s  {nodeid}")


def pytest_collection_modifyitems(items):
    """A test in no lane, or in two, is a collection error: the lanes must cover the suite exactly."""
    wrong = [f"{item.nodeid} ({', '.join(lanes) or 'no lane'})" for item in items
             if len(lanes := [m.name for m in item.iter_markers() if m.name in LANES]) != 1]
    if wrong:
        raise pytest.UsageError("each test needs exactly one of the markers " + ", ".join(LANES) + ":\n  "
                                + "\n  ".join(wrong))


def memory_maps() -> int:
    """The memory maps this process holds (0 where ``/proc`` does not tell: no such limit there)."""
    try:
        return Path("/proc/self/maps").read_bytes().count(b"\n")
    except OSError:
        return 0


def map_budget() -> int:
    """Half the kernel's limit on a process's memory maps (``vm.max_map_count``, 65530 by default)."""
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text()) // 2
    except (OSError, ValueError):
        return 65530 // 2


MAP_BUDGET = map_budget()


@pytest.fixture(autouse=True)
def release_compiled_programs():
    """Keeps compiled programs from test to test (a tiny MLP compiles once per process, not once per
    test), and drops them all only once the process holds more than half of ``vm.max_map_count``.
    Each compiled program maps its code into the process (a run's signature, with JAX's helpers, some
    hundreds of the kernel's memory maps), and one test process compiles thousands: kept for a whole run
    they reached the limit, and XLA:CPU aborted or segfaulted late in the run, compiling or serializing,
    never with the failing test alone. The other half is the headroom of the next test, which compiles
    far fewer (the most, tests/test_plugins.py's variants, a few dozen signatures)."""
    yield
    if memory_maps() > MAP_BUDGET:
        release_programs()
        gc.collect()  # the executables' maps go when the last reference does


@pytest.fixture(scope="session", autouse=True)
def compile_cache(request, tmp_path_factory) -> Path:
    """The compilation cache of the tests' programs (engine calls in this process, sweeps in it and in
    subprocesses) and their user cache folder (generated data sets): the tests' own, not the user's.
    pytest-xdist's workers share both (each is safe for processes at once), and both live in pytest's
    cache folder (``.pytest_cache/d/``), so a run reads back what earlier runs compiled: entries are
    keyed by the program (a traced one by bnbench's sources too, :mod:`bnbench.engine.trace_cache`), and
    an edit compiles afresh what it changed. ``--cache-clear`` or ``-p no:cacheprovider`` runs cold."""
    pytest_cache = getattr(request.config, "cache", None)
    if pytest_cache is not None:
        folder, user_cache = pytest_cache.mkdir("bnbench-xla"), pytest_cache.mkdir("bnbench-user-cache")
    else:
        root = tmp_path_factory.getbasetemp()
        shared = root.parent if "PYTEST_XDIST_WORKER" in os.environ else root  # a worker's basetemp is in the run's
        folder, user_cache = shared / "xla-cache", shared / "user-cache"
        folder.mkdir(exist_ok=True)
        user_cache.mkdir(exist_ok=True)
    enable_compilation_cache(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BNBENCH_COMPILE_CACHE", str(folder))
        patch.setenv("XDG_CACHE_HOME", str(user_cache))
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


def invoke_cli(*args):
    """``bnbench ARGS`` in this process (paths and numbers as text), its output captured."""
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def cli():
    return invoke_cli


@pytest.fixture
def tiny_spec(write_spec) -> Path:
    """A 8-run spec on the synthetic data set: placement x epsilon x 2 seeds, 30 steps."""
    return write_spec(TINY_SPEC)


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, compile_cache) -> Path:
    """The results folder of :data:`TINY_SPEC` swept with ``--no-plots``, once per session (per worker) in
    a folder of its own: read it, or copy it (:func:`tiny_results`) to change it."""
    folder = tmp_path_factory.mktemp("tiny-sweep")
    spec = folder / "spec.toml"
    spec.write_text(textwrap.dedent(TINY_SPEC))
    out = folder / "results" / "tiny"
    result = invoke_cli("sweep", spec, "--no-plots", "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def tiny_results(tiny_sweep, tiny_spec, workdir) -> Path:
    """``results/tiny`` in the test's own folder as ``bnbench sweep spec.toml --no-plots`` leaves it
    there (a copy of :func:`tiny_sweep`): the test may change it."""
    out = workdir / "results" / "tiny"
    shutil.copytree(tiny_sweep, out)
    return out
