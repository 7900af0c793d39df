"""Start-up: importing bnbench or its command line loads no heavy module; the public API is unchanged."""

import subprocess
import sys

import pytest

import bnbench

HEAVY = ("jax", "pandas", "matplotlib", "scipy", "optax")


def loaded_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


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


def test_dry_run_loads_no_heavy_module(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('dataset = "synthetic"\nsteps = 10\n')
    code = f"from bnbench.cli.app import app\nfrom typer.testing import CliRunner\nCliRunner().invoke(app, ['sweep', {str(spec)!r}, '--dry-run'])"
    assert loaded_after(code) == set()


def test_public_api_is_unchanged():
    expected = {
        "BNParams", "BNState", "BnbenchError", "CURVE_COLUMNS", "Dataset", "Model", "Normalization", "RUN_COLUMNS",
        "RunConfig", "RunResult", "Spec", "batch_norm", "compare", "compare_folders", "group_norm", "init", "layer_norm",
        "load_activations", "load_curves", "load_dataset", "load_probes", "load_runs", "load_spec", "make_model", "report",
        "report_folders", "run_all", "summarize", "train_run",
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


def test_the_command_skips_teardown_yet_keeps_its_output_and_exit_status(tmp_path):
    """The console script ends with ``os._exit``: what it printed into a pipe is all there, and errors
    keep their exit status and one-line message."""
    listed = bnbench_process("-m", "bnbench", "columns", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout.rstrip().endswith("┘")
    assert all(name in listed.stdout for name in ("runs.csv", "curves.csv", "activations.csv", "probes.csv"))
    missing = bnbench_process("-m", "bnbench", "sweep", "missing.toml", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines() == ["error: missing.toml: file: no such spec file"]


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


def test_under_a_profiler_the_command_exits_normally(tmp_path):
    """cProfile (as coverage) writes what it gathered at the interpreter's normal exit."""
    profiled = bnbench_process("-m", "cProfile", "-o", "profile.out", "-m", "bnbench", "columns", cwd=tmp_path)
    assert profiled.returncode == 0 and (tmp_path / "profile.out").stat().st_size > 0


def test_every_subpackage_is_in_the_wheel():
    """pyproject lists packages by name: one left out is missing from a non-editable install."""
    import tomllib
    from pathlib import Path

    root = Path(bnbench.__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "bnbench").rglob("__init__.py")}
    assert listed == found
