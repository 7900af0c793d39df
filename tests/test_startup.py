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
        "import bnbench.cli",
        "from bnbench.cli import app\nfrom typer.testing import CliRunner\nCliRunner().invoke(app, ['sweep', '--help'])",
    ],
)
def test_imports_and_help_load_no_heavy_module(code):
    assert loaded_after(code) == set()


def test_dry_run_loads_no_heavy_module(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('dataset = "synthetic"\nsteps = 10\n')
    code = f"from bnbench.cli import app\nfrom typer.testing import CliRunner\nCliRunner().invoke(app, ['sweep', {str(spec)!r}, '--dry-run'])"
    assert loaded_after(code) == set()


def test_public_api_is_unchanged():
    expected = {
        "BNParams", "BNState", "BnbenchError", "CURVE_COLUMNS", "Dataset", "Model", "Normalization", "RUN_COLUMNS",
        "RunConfig", "RunResult", "Spec", "batch_norm", "compare", "group_norm", "init", "layer_norm",
        "load_activations", "load_curves", "load_dataset", "load_probes", "load_runs", "load_spec", "make_model", "run_all",
        "summarize", "train_run",
    }
    assert set(bnbench.__all__) == expected and expected <= set(dir(bnbench))
    from bnbench import bn, data, frames, summary

    assert bnbench.load_runs is frames.load_runs and bnbench.batch_norm is bn.batch_norm
    assert bnbench.load_dataset is data.load and bnbench.summarize is summary.summarize
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        bnbench.nothing  # noqa: B018
