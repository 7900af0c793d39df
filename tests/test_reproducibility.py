"""A run's result is a function of its configuration and its recorded execution context: bitwise the
same whatever else is in the grid; folders never mix contexts or hide conflicts; one writer at a time;
readers never count a run twice."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import pandas as pd
import pytest

from bnbench import data, engine
from bnbench.experiment.fields import RunConfig
from bnbench.results import merging
from bnbench.results.csv_files import ResultsError
from bnbench.results.folder import ResultsStore
from bnbench.results.schema import RUN_COLUMNS
from bnbench.training import context

HEAD = """
name = "repro"
dataset = "synthetic"
widths = [8, 8]
batch_size = 16
optimizer = "sgd"
lr = 0.05
steps = 40
eval_every = 10
probes = ["grad_norm"]
seeds = {seeds}
"""
GRID = '[grid]\nplacement = ["pre", "post"]\nepsilon = [1e-5, 1e-4, 1e-3, 1e-2]\n'
# The same grid, axes and seeds written in another order: the same runs (same run ids).
REORDERED = HEAD.format(seeds="[2, 1, 0]") + '[grid]\nepsilon = [1e-2, 1e-3, 1e-4, 1e-5]\nplacement = ["post", "pre"]\n'


def spec_text(seeds: int) -> str:
    return HEAD.format(seeds=seeds) + GRID


# Every runs.csv column but the run's time and the hash of the spec it came from (an extended spec
# has another): its configuration, results and execution context.
RESULT_COLUMNS = [c for c in RUN_COLUMNS if c not in ("wall_s", "spec_hash")]


def records(folder):
    """runs.csv, curves.csv and probes.csv of a folder, in a canonical order, as text."""
    runs = pd.read_csv(folder / "runs.csv", dtype=str)[RESULT_COLUMNS].sort_values("run_id").reset_index(drop=True)
    details = [pd.read_csv(folder / name, dtype=str).sort_values(["run_id", "step", *extra]).reset_index(drop=True)
               for name, extra in (("curves.csv", []), ("probes.csv", ["layer", "probe"]))]
    return runs, *details


def assert_same_records(a, b):
    for got, expected in zip(records(a), records(b)):
        pd.testing.assert_frame_equal(got, expected)


@pytest.mark.integration
def test_a_run_is_bitwise_the_same_whatever_else_the_grid_holds(write_spec, workdir, cli):
    three = write_spec(spec_text(3), "three.toml")
    two = write_spec(spec_text(2), "repro.toml")
    assert cli("sweep", three, "--out", "fresh", "--no-plots").exit_code == 0
    # Two seeds, then extended to three (the README's way): the chunk of the old engine grew with the
    # grid, and 8 of these 24 runs came out different.
    assert cli("sweep", two, "--out", "extended", "--no-plots").exit_code == 0
    assert cli("sweep", two, "--seeds", "3", "--out", "extended", "--no-plots").exit_code == 0
    assert_same_records(workdir / "extended", workdir / "fresh")
    # The grid in another order; on one device instead of two.
    assert cli("sweep", write_spec(REORDERED, "reordered.toml"), "--out", "reordered", "--no-plots").exit_code == 0
    assert_same_records(workdir / "reordered", workdir / "fresh")
    assert cli("sweep", three, "--out", "one-device", "--devices", "1", "--no-plots").exit_code == 0
    assert_same_records(workdir / "one-device", workdir / "fresh")
    # Two shards, merged.
    for index in (0, 1):
        assert cli("sweep", three, "--shard", f"{index}/2", "--no-plots").exit_code == 0
    assert cli("merge", "results/repro-shard0of2", "results/repro-shard1of2", "--out", "merged").exit_code == 0
    assert_same_records(workdir / "merged", workdir / "fresh")
    # A resume after an interrupt: 5 runs saved, a sixth's curve rows written but not its row.
    assert cli("sweep", three, "--out", "cut", "--no-plots").exit_code == 0
    for name, keep in (("runs.csv", 1 + 5), ("curves.csv", 1 + 6 * 4), ("probes.csv", 1 + 6 * 5 * 3)):
        lines = (workdir / "cut" / name).read_text().splitlines(keepends=True)
        (workdir / "cut" / name).write_text("".join(lines[:keep]))
    result = cli("sweep", three, "--out", "cut", "--no-plots")
    assert result.exit_code == 0 and "5 already in" in result.stdout
    assert_same_records(workdir / "cut", workdir / "fresh")
    # Its neighbours: the epsilon=0.01 runs swept on their own.
    assert cli("sweep", three, "--set", "epsilon=0.01", "--out", "alone", "--no-plots").exit_code == 0
    alone, fresh = (records(workdir / name)[0].set_index("run_id") for name in ("alone", "fresh"))
    assert len(alone) == 6
    pd.testing.assert_frame_equal(alone, fresh.loc[alone.index])


def results_of(pairs):
    return {c.run_id: (r.curve, r.probes, r.context) for c, r in pairs}


@pytest.mark.integration
def test_a_run_in_any_block_position_on_any_device_gives_the_same_numbers():
    base = dict(dataset="synthetic", num_samples=1200, widths=(12,), batch_size=16, steps=30, eval_every=10,
                probes=("grad_norm",))
    grid = [RunConfig(**base, epsilon=e, lr=lr, seed=s) for e in (1e-5, 1e-2) for lr in (0.01, 0.003) for s in range(3)]
    together = results_of(engine.run_all(grid))
    for subset, devices in ((grid[::-1], 1), (grid[5:8], 2), (grid[3:4], 1)):
        apart = results_of(engine.run_all(subset, devices=devices))
        assert apart == {run_id: together[run_id] for run_id in apart}
    block = engine.MAX_RUNS_PER_DEVICE[jax.devices()[0].platform]
    assert {ctx.runs_per_device for _, _, ctx in together.values()} == {block}


@pytest.mark.integration
def test_each_run_records_its_execution_context(tiny_sweep, tiny_spec, workdir, cli):
    runs = pd.read_csv(tiny_sweep / "runs.csv")
    device = jax.devices()[0]
    assert set(runs["execution"]) == {"vmapped"} and set(runs["runs_per_device"]) == {2}
    assert set(runs["backend"]) == {device.platform} and runs["device_kind"].str.startswith("cpu (").all()
    assert set(runs["jax_version"]) == {jax.__version__}
    assert cli("sweep", tiny_spec, "--out", "seq", "--engine", "sequential", "--no-plots").exit_code == 0
    sequential = pd.read_csv(workdir / "seq" / "runs.csv")
    assert set(sequential["execution"]) == {"stepwise"} and set(sequential["runs_per_device"]) == {1}


@pytest.mark.integration
def test_resume_refuses_runs_of_another_execution_context(tiny_spec, workdir, cli):
    assert cli("sweep", tiny_spec, "--set", "epsilon=1e-5", "--no-plots").exit_code == 0
    result = cli("sweep", tiny_spec, "--runs-per-device", "1", "--no-plots")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "runs_per_device is '2' there, '1' here); pass --runs-per-device 2 to match them" in result.stderr
    assert cli("sweep", tiny_spec, "--no-plots").exit_code == 0  # the same context extends the sweep
    path = workdir / "results" / "tiny" / "runs.csv"
    pd.read_csv(path).drop(columns=["execution", "runs_per_device", "device_kind"]).to_csv(path, index=False)
    result = cli("sweep", tiny_spec, "--no-plots")
    assert result.exit_code == 2 and "execution was not recorded there (results of an older bnbench)" in result.stderr


@pytest.mark.system
def test_a_folder_is_not_extended_with_the_other_numerics(tiny_spec, workdir):
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}  # a user's fresh process

    def sweep(out, *args):
        return subprocess.run([sys.executable, "-m", "bnbench", "sweep", str(tiny_spec), "--no-plots", "--out", out,
                               *args], cwd=workdir, env=env, capture_output=True, text=True)

    for numerics in ("native", "portable"):
        assert sweep(numerics, "--set", "epsilon=1e-5", f"--{numerics}").returncode == 0
    for numerics, other in (("native", "portable"), ("portable", "native")):
        result = sweep(numerics, f"--{other}")
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert f"numerics is '{numerics}' there, '{other}' here); pass --{numerics} to match them" in result.stderr
    native, portable = (pd.read_csv(workdir / name / "runs.csv") for name in ("native", "portable"))
    assert set(native["numerics"]) == {"native"} and native["device_kind"].str.contains("family").all()
    assert set(portable["device_kind"]) == {"cpu (x86-64 AVX2)"} and set(portable["cpu_isa"]) == {"AVX2"}
    assert set(portable["data_source"]) == {f"synthetic@{data.load('synthetic', int(portable['num_samples'][0])).digest()}"}


def edit_cell(folder, row: int, column: str, value) -> None:
    path = folder / "runs.csv"
    runs = pd.read_csv(path, dtype=str)
    runs.loc[row, column] = str(value)
    runs.to_csv(path, index=False)


@pytest.mark.integration
def test_merge_names_a_conflict_and_keeps_the_preferred_folder(tiny_sweep, workdir, cli):
    for name in ("a", "b"):
        shutil.copytree(tiny_sweep, workdir / name)
    run_id = pd.read_csv(workdir / "b" / "runs.csv")["run_id"][3]
    edit_cell(workdir / "b", 3, "test_acc", 0.123)
    result = cli("merge", "a", "b", "--out", "m")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert f"run {run_id} has different results in a and b (first difference: test_acc (" in result.stderr
    assert not (workdir / "m").exists()
    assert cli("merge", "a", "b", "--out", "m", "--prefer", "b").exit_code == 0
    merged = pd.read_csv(workdir / "m" / "runs.csv").set_index("run_id")
    assert merged.loc[run_id, "test_acc"] == 0.123 and len(merged) == 8


@pytest.mark.integration
def test_merge_with_missing_runs_exits_1_unless_partial(tiny_spec, workdir, cli):
    assert cli("sweep", tiny_spec, "--shard", "0/2", "--no-plots").exit_code == 0
    result = cli("merge", "results/tiny-shard0of2", "--out", "m")
    assert result.exit_code == 1 and "4 of the grid's 8 runs are in none of the folders (placement=pre" in result.stderr
    assert not (workdir / "m").exists()
    result = cli("merge", "results/tiny-shard0of2", "--out", "m", "--partial")
    assert result.exit_code == 0 and "partial merge: 4 runs of the grid are in none of the folders" in result.stderr
    assert len(pd.read_csv(workdir / "m" / "runs.csv")) == 4
    assert json.loads((workdir / "m" / "meta.json").read_text())["partial"] is True


@pytest.mark.integration
def test_runs_from_another_machine_merge_only_when_asked_and_report_shows_them_apart(tiny_spec, workdir, cli):
    for index in (0, 1):
        assert cli("sweep", tiny_spec, "--shard", f"{index}/2", "--no-plots").exit_code == 0
    other = workdir / "results" / "tiny-shard1of2" / "runs.csv"
    pd.read_csv(other).assign(device_kind="cpu (Other CPU)").to_csv(other, index=False)
    parts = ("results/tiny-shard0of2", "results/tiny-shard1of2")
    result = cli("merge", *parts, "--out", "m")
    assert result.exit_code == 2 and "executed in other contexts (device_kind is" in result.stderr
    assert cli("merge", *parts, "--out", "m", "--mixed-context").exit_code == 0
    report = cli("report", "m", "--no-plots")
    assert report.exit_code == 0 and "note: these runs executed in several contexts (device_kind): shown apart" in report.stderr
    assert "Other CPU" in report.stdout


@pytest.mark.unit
def test_merging_refuses_a_models_runs_convolved_by_another_kernel_but_not_another_models(tmp_path):
    a, b = ResultsStore(tmp_path / "a"), ResultsStore(tmp_path / "b")
    machine = {field: "same" for field in context.MACHINE_FIELDS}

    def chosen(*records):
        return {f"run{i}": (store, machine | {"model": model, "convolution": kernel})
                for i, (store, model, kernel) in enumerate(records)}

    # One grid's models convolve by their own kernels (an MLP none, a ResNet XLA's): one context.
    merging._check_one_context([a, b], chosen((a, "mlp", "none"), (a, "resnet", "xla"), (b, "resnet", "xla")))
    with pytest.raises(ResultsError, match=r"hold runs executed in other contexts \(convolution is 'xla' there, "
                                           r"'onednn 3.2.0 avx2, 2 threads' here\); pass --mixed-context"):
        merging._check_one_context([a, b], chosen((a, "mlp", "none"), (a, "resnet", "xla"),
                                                  (b, "resnet", "onednn 3.2.0 avx2, 2 threads")))


SLOW_SPEC = """
name = "slow"
dataset = "synthetic"
widths = [64, 64]
batch_size = 16
steps = 800
eval_every = 200
seeds = 2
[grid]
epsilon = [1e-5, 1e-4, 1e-3, 1e-2]
"""
SLOW_RUNS = 8


def start_sweep(workdir, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bnbench", "sweep", "slow.toml", "--no-plots", *args], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@contextlib.contextmanager
def paused(process: subprocess.Popen):
    """``process`` stopped (SIGSTOP) where it is, so that it is provably mid-sweep, holding what it
    holds, for as long as the block runs; it goes on afterwards."""
    process.send_signal(signal.SIGSTOP)
    try:
        assert process.poll() is None, "the sweep had finished before it could be paused"
        yield
    finally:
        process.send_signal(signal.SIGCONT)


@pytest.mark.system
def test_a_second_sweep_into_a_folder_in_use_is_refused_at_once(write_spec, workdir, cli):
    write_spec(SLOW_SPEC, "slow.toml")
    lock = workdir / "results" / "slow" / ".bnbench-lock"
    first = start_sweep(workdir, "--engine", "sequential")
    wait_for(lambda: lock.exists() and lock.read_text())
    with paused(first):
        begin = time.monotonic()
        second = cli("sweep", workdir / "slow.toml", "--no-plots")
        assert time.monotonic() - begin < 10
    assert second.exit_code == 2 and second.stderr.count("\n") == 1
    assert f"results/slow: in use by `bnbench sweep` (process {first.pid} on host " in second.stderr
    assert "wait for it to finish, or pass --out to write elsewhere" in second.stderr
    assert first.wait(timeout=600) == 0, first.stderr.read()
    runs = pd.read_csv(workdir / "results" / "slow" / "runs.csv")
    assert len(runs) == SLOW_RUNS and runs["run_id"].is_unique


@pytest.mark.system
def test_a_killed_sweep_leaves_no_lock_behind_and_resumes_at_once(write_spec, workdir, cli):
    write_spec(SLOW_SPEC, "slow.toml")
    runs_csv = workdir / "results" / "slow" / "runs.csv"
    first = start_sweep(workdir, "--engine", "sequential")
    wait_for(lambda: runs_csv.exists() and len(runs_csv.read_text().splitlines()) >= 2)
    with paused(first):
        first.kill()
    first.wait()
    done = len(pd.read_csv(runs_csv))
    assert 1 <= done < SLOW_RUNS  # killed mid-sweep
    result = cli("sweep", workdir / "slow.toml", "--engine", "sequential", "--no-plots")
    assert result.exit_code == 0 and f"{done} already in" in result.stdout
    runs = pd.read_csv(runs_csv)
    assert len(runs) == SLOW_RUNS and runs["run_id"].is_unique


@pytest.mark.integration
def test_report_never_counts_a_run_twice(tiny_results, cli):
    path = tiny_results / "runs.csv"
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    path.write_text(text + lines[1])  # the first run recorded twice, as two sweeps into one folder left it
    result = cli("report", path.parent, "--no-plots", "--format", "csv")
    assert result.exit_code == 0 and "left out 1 duplicate row of runs recorded twice" in result.stderr
    assert list(pd.read_csv(__import__("io").StringIO(result.stdout))["n"]) == [2, 2, 2, 2]
    path.write_text(text + lines[1].replace(",ok,", ",diverged,", 1))
    result = cli("report", path.parent, "--no-plots")
    assert result.exit_code == 2 and "is recorded twice with different results (first difference: status" in result.stderr
    path.write_text(text + lines[2][:40])  # a last row cut off mid-way
    result = cli("report", path.parent, "--no-plots", "--format", "csv")
    assert result.exit_code == 0 and "left out a last row that was cut off mid-way" in result.stderr
    summary = pd.read_csv(__import__("io").StringIO(result.stdout))
    assert list(summary["n"]) == [2, 2, 2, 2] and list(summary["diverged"]) == [0, 0, 0, 0]


@pytest.mark.integration
def test_resuming_onto_a_runs_csv_with_a_renamed_header_is_a_one_line_error(tiny_results, tiny_spec, cli):
    path = tiny_results / "runs.csv"
    path.write_text(path.read_text().replace("test_acc,", "accuracy,", 1))
    result = cli("sweep", tiny_spec, "--no-plots")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert "runs.csv: its header is not one bnbench writes (unknown column 'accuracy')" in result.stderr


@pytest.mark.integration
def test_a_changed_spec_suggests_another_folder_before_deleting(tiny_results, tiny_spec, cli):
    result = cli("sweep", tiny_spec, "--set", "lr=0.1")
    assert result.exit_code == 2
    assert ("pass --out DIR to write elsewhere (or --no-resume to delete the 8 runs there: CSV files, plots and "
            "meta.json)") in result.stderr


@pytest.mark.unit
def test_an_override_of_steps_says_to_set_eval_every_too(tiny_spec, cli):
    result = cli("sweep", tiny_spec, "--set", "steps=5", "--dry-run")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --set: eval_every: must be in [1, steps=5], got 10 (pass --set "
                                     "eval_every=N with the new steps)")


@pytest.mark.unit
def test_a_profile_shape_too_big_for_the_device_is_refused_before_measuring(workdir, cli):
    result = cli("profile", "--shape", "100000,100000", "--mode", "train", "--dtype", "float32", "--impl", "bnbench")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert "--shape 100000x100000 float32: needs at least 223.5 GiB (6 tensors of 37.3 GiB)" in result.stderr
    assert not (workdir / "results").exists()


@pytest.mark.integration
@pytest.mark.parametrize("plot_dir", [None, "figures"])
def test_report_on_a_read_only_folder_prints_its_tables_then_says_the_plots_failed(tiny_results, workdir, cli, monkeypatch,
                                                                                    plot_dir):
    from bnbench.results.csv_files import ResultsError
    from bnbench.results.folder import ResultsStore

    folder = tiny_results
    real = ResultsStore.check_writable

    def read_only(self):
        if self.out_dir == folder:
            raise ResultsError(f"{self.out_dir}: output location is not writable (Read-only file system)")
        return real(self)

    monkeypatch.setattr(ResultsStore, "check_writable", read_only)
    extra = ["--plot-dir", plot_dir] if plot_dir else []
    result = cli("report", folder, *extra)
    assert "tiny: test_acc over seeds (8 runs" in result.stdout
    if plot_dir is None:
        assert result.exit_code == 1 and result.stderr.count("\n") == 1
        assert "not writable (Read-only file system): cannot write plots there; the tables are complete; pass " \
               "--plot-dir DIR" in result.stderr
    else:
        assert result.exit_code == 0 and (workdir / "figures" / "learning_curves.png").exists()
