"""Start-up: importing bnbench or its command line loads no heavy module; the public API is unchanged."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import bnbench

HEAVY = ("jax", "pandas", "matplotlib", "scipy", "optax")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def loaded_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


@pytest.mark.system
@pytest.mark.parametrize(
    "code",
    [
        "import bnbench",
        "import bnbench.cli.app",
        "from bnbench.cli.app import app\nfrom typer.testing import CliRunner\nCliRunner().invoke(app, ['sweep', '--help'])",
    ],
)
def test_imports_and_help_load_no_heavy_module(code):
    assert loaded_after(code) == set()


@pytest.mark.system
@pytest.mark.parametrize("spec", [None, EXPERIMENTS / "quickstart.toml"], ids=["synthetic", "quickstart"])
def test_dry_run_loads_no_heavy_module(tmp_path, spec):
    """Built-in models and optimizers plan without JAX (an optax optimizer's name would load it)."""
    if spec is None:
        spec = tmp_path / "s.toml"
        spec.write_text('dataset = "synthetic"\nsteps = 10\n')
    command = ["sweep", str(spec), "--dry-run", "--out", str(tmp_path / "out")]
    code = ("from bnbench.cli.app import app\nfrom typer.testing import CliRunner\n"
            f"result = CliRunner().invoke(app, {command!r})\nassert result.exit_code == 0, result.output")
    assert loaded_after(code) == set()


@pytest.mark.system
def test_the_experiment_layer_imports_no_heavy_module():
    """A spec is read, checked and expanded without JAX: each module of bnbench.experiment, in a fresh process."""
    from bnbench import experiment

    names = [m.name for m in pkgutil.iter_modules(experiment.__path__, "bnbench.experiment.")]
    assert {"bnbench.experiment.fields", "bnbench.experiment.spec", "bnbench.experiment.runs"} <= set(names)
    for name in names:
        assert loaded_after(f"import {name}") == set(), name


@pytest.mark.unit
def test_the_public_api_is_what_the_docs_list():
    expected = {
        "BNParams", "BNState", "BnbenchError", "CURVE_COLUMNS", "Dataset", "Model", "Normalization", "RUN_COLUMNS",
        "RunConfig", "RunResult", "Spec", "batch_norm", "compare", "compare_folders", "group_norm", "init", "layer_norm",
        "load_activations", "load_curves", "load_dataset", "load_probes", "load_runs", "load_spec", "make_model",
        "prepare_numerics", "report",
        "report_folders", "run_all", "summarize", "sweep", "train_run",
    }
    assert set(bnbench.__all__) == expected and expected <= set(dir(bnbench))
    from bnbench import data
    from bnbench.norm import bn
    from bnbench.results import frames
    from bnbench.stats import summary

    assert bnbench.load_runs is frames.load_runs and bnbench.batch_norm is bn.batch_norm
    assert bnbench.load_dataset is data.load and bnbench.summarize is summary.summarize
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        bnbench.nothing  # noqa: B018


def bnbench_process(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.system
def test_the_command_skips_teardown_yet_keeps_its_output_and_exit_status(tmp_path):
    """The console script ends with ``os._exit``: what it printed into a pipe is all there, and errors
    keep their exit status and one-line message."""
    listed = bnbench_process("-m", "bnbench", "columns", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.rstrip().endswith("┘")
    assert all(name in listed.stdout for name in ("runs.csv", "curves.csv", "activations.csv", "probes.csv"))
    missing = bnbench_process("-m", "bnbench", "sweep", "missing.toml", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == ["error: missing.toml: file: no such spec file"]


@pytest.mark.system
@pytest.mark.parametrize("processes, teardown", [(1, False), (2, True)])
def test_multi_process_jax_runs_exit_normally(tmp_path, processes, teardown):
    """One JAX process skips the teardown (no atexit handler runs); one of several shuts down normally."""
    script = (
        "import atexit, sys, jax\n"
        f"jax.process_count = lambda: {processes}\n"
        "atexit.register(lambda: print('teardown'))\n"
        "sys.argv = ['bnbench', 'columns']\n"
        "from bnbench.cli.app import main\n"
        "main()\n"
    )
    finished = bnbench_process("-c", script, cwd=tmp_path)
    assert finished.returncode == 0 and "probes.csv" in finished.stdout
    assert finished.stdout.rstrip().endswith("teardown") == teardown


@pytest.mark.system
def test_under_a_profiler_the_command_exits_normally(tmp_path):
    """cProfile (as coverage) writes what it gathered at the interpreter's normal exit."""
    profiled = bnbench_process("-m", "cProfile", "-o", "profile.out", "-m", "bnbench", "columns", cwd=tmp_path)
    assert profiled.returncode == 0 and (tmp_path / "profile.out").stat().st_size > 0


@pytest.mark.unit
def test_every_subpackage_is_in_the_wheel():
    """pyproject has setuptools find the packages: a folder of modules without an ``__init__.py`` would be
    missing from a non-editable install."""
    import tomllib

    import setuptools

    root = Path(bnbench.__file__).resolve().parent.parent
    find = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    listed = set(setuptools.find_packages(str(root), include=find["include"]))
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "bnbench").rglob("*.py")}
    assert listed == found
