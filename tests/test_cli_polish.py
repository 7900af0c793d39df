"""The command line as a person meets it: help, version, completion, 80-column tables, hints."""

import re
from pathlib import Path

import pytest

from bnbench.experiment.spec import load_spec

COMMANDS = ["sweep", "report", "profile", "datasets", "merge", "columns", "explain"]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.unit
@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_help_has_short_flag_no_internal_type_names_and_no_stray_spaces(command, cli):
    short, long = cli(*command, "-h"), cli(*command, "--help")
    assert short.exit_code == 0 and short.stdout == long.stdout
    text = short.stdout
    for internal in ("<bool>", "<list", "<str>", "<int", "<float>", "{spec}"):
        assert internal not in text, internal
    assert not re.search(r"\w \.(\s|$)", text)
    assert "…" not in text  # nothing cut off


@pytest.mark.unit
def test_version_completion_and_choices_are_offered(cli):
    assert re.fullmatch(r"bnbench \d+\.\d+\.\d+\n", cli("--version").stdout)
    assert "--install-completion" in cli("-h").stdout
    assert "vectorized|sequential" in cli("sweep", "-h").stdout
    assert "table|markdown|csv" in cli("report", "-h").stdout
    assert "train, grad, infer, fold" in cli("profile", "-h").stdout
    assert "[default: (results/<spec" in cli("sweep", "-h").stdout


@pytest.mark.integration
def test_summary_cells_stay_on_one_line_at_80_columns(write_spec, workdir, cli):
    # long names, twelve combinations, one compiled program (the swept fields are traced)
    spec = write_spec('name = "wide"\ndataset = "synthetic"\nwidths = [8]\nsteps = 20\nseeds = 2\noptimizer = "sgd"\n'
                      '[grid]\noptimizer_momentum = [0.9, 0.95]\nweight_decay = [0.0, 0.0001, 0.001]\n'
                      'epsilon = [1e-5, 1e-3]\nbatch_size = [16]\nrenorm = [false]\n')
    result = cli("sweep", spec, "--no-plots", "--out", "a-rather-long-results-folder-name/for-this-wide-sweep")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    rows = [line for line in lines if "±" in line and "[" in line]
    assert len(rows) == 12 and all(len(line) <= 80 for line in rows)
    assert "…" not in result.stdout and "optimizer_momentum" in result.stdout.replace("│", "").replace(" ", "")
    assert all(re.search(r"0\.\d{4} ± 0\.\d{4}.*\[[-0-9.]+, [-0-9.]+\]", line) for line in rows)
    assert "a-rather-long-results-folder-name/for-this-wide-sweep/" in result.stdout


@pytest.mark.integration
def test_one_run_is_one_run(write_spec, cli):
    result = cli("sweep", write_spec('dataset = "synthetic"\nwidths = [4]\nsteps = 10\n'), "--no-plots")
    words = " ".join(result.stdout.split())
    assert "1 run," in words and "(1 run)" in words and "1 runs" not in words


@pytest.mark.unit
def test_set_eval_stats_takes_one_list(tiny_spec, cli):
    result = cli("sweep", tiny_spec, "--set", "eval_stats=running,precise", "--dry-run")
    assert result.exit_code == 0 and "8 runs" in result.stdout and "running-precise" in result.stdout


@pytest.mark.unit
@pytest.mark.parametrize(
    "text, args, message",
    [
        ('dataset = "synthetic"\nsteps = 100\neval_every = 50\n', ["--set", "steps=20"], "error: --set: eval_every: must be in [1, steps=20]"),
        ('dataset = "synthetic"\n', ["--set", "seeds=3"], "use --seeds N for a count of seeds (--seeds 3)"),
        ('dataset = "synthetic"\nlr = [0.1, 0.01]\n', [], "lr: takes one value at the top level, got [0.1, 0.01]; to sweep it, put it under [grid]: lr = [0.1, 0.01]"),
        ('dataset = "synthetic"\nwidths = [[8], [16]]\n', [], "put it under [grid]: widths = [[8], [16]]"),
    ],
)
def test_hints_name_the_right_culprit(text, args, message, write_spec, cli):
    result = cli("sweep", write_spec(text), *args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr


@pytest.mark.unit
def test_a_spec_that_is_a_folder_says_so(workdir, cli):
    (workdir / "specs").mkdir()
    result = cli("sweep", workdir / "specs")
    assert result.exit_code == 2 and "is a folder, not a spec file" in result.stderr


@pytest.mark.integration
def test_spec_toml_writes_swept_fields_only_in_the_grid(tiny_spec, workdir, cli):
    assert cli("sweep", tiny_spec, "--set", "lr=0.01,0.1", "--dry-run").exit_code == 0
    assert cli("sweep", tiny_spec, "--no-plots").exit_code == 0
    stored = (workdir / "results" / "tiny" / "spec.toml").read_text()
    top, grid = stored.split("[grid]")
    assert "placement" not in top and "epsilon" not in top and "lr = " in top
    assert 'placement = ["pre", "none"]' in grid
    assert load_spec(workdir / "results" / "tiny" / "spec.toml").to_toml() == stored


@pytest.mark.unit
def test_datasets_checks_the_checksum_before_saying_yes(workdir, cli):
    folder = workdir / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"not mnist")
    result = cli("datasets", "--data-dir", workdir / "data")
    assert result.exit_code == 0
    line = next(line for line in result.stdout.splitlines() if line.startswith("│ mnist "))
    assert "corrupt" in line and "yes" not in line


@pytest.mark.unit
@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="needs ../shared/data/mnist")
def test_datasets_says_yes_for_verified_files(cli):
    result = cli("datasets", "--data-dir", SHARED_DATA)
    line = next(line for line in result.stdout.splitlines() if line.startswith("│ mnist "))
    assert "yes (MD5" in line


@pytest.mark.unit
def test_columns_lists_the_csv_schema(cli):
    result = cli("columns")
    assert result.exit_code == 0
    for name in ("runs.csv", "curves.csv", "activations.csv", "probes.csv", "momentum_convention", "diverged_step"):
        assert name in result.stdout


@pytest.mark.unit
def test_a_table_too_wide_for_the_terminal_is_printed_whole_not_cropped():
    import io

    from rich.console import Console

    from bnbench.cli import terminal

    header = ["norm", "dropout", "dropout_placement", "residual_unit", "n", "diverged", "mean ± std", "95% CI"]
    rows = [["batch", "0.3", "after_activation", "relu_before_add", "3", "0", "0.7293 ± 0.0119", "[0.6997, 0.7590]"]]
    console = Console(file=io.StringIO(), width=80, color_system=None)
    terminal.print_table(console, header, rows, "wide", "table")
    text = console.file.getvalue()
    assert "[0.6997, 0.7590]" in text and "0.7293 ± 0.0119" in text
