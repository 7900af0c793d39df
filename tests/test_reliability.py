"""Faults and hostile input: kills, Ctrl-C, full disks, unwritable folders, OOM, bad data, malformed specs."""

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bnbench import data
from bnbench.engine import programs
from bnbench.results import csv_files
from bnbench.cli.app import app
from bnbench.experiment.fields import RUN_FIELDS, RunConfig
from bnbench.experiment.spec import RULES, TOP_LEVEL_KEYS

CRASH_SPEC = """
name = "crash"
dataset = "synthetic"
widths = [16]
steps = 300
eval_every = 100
seeds = 2

[grid]
placement = ["pre", "post", "none"]
batch_size = [16, 32]
"""
METRICS = ["run_id", "status", "diverged_step", "final_train_loss", "test_loss", "test_acc"]


def start_sweep(workdir: Path, out: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.Popen(
        [sys.executable, "-m", "bnbench", "sweep", "crash.toml", "--out", out, "--no-plots"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(path: Path, rows: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) > rows:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {rows} rows while the sweep ran")


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory) -> Path:
    """A folder with the crash spec and its uninterrupted sweep in ``reference/``."""
    workdir = tmp_path_factory.mktemp("crash")
    (workdir / "crash.toml").write_text(CRASH_SPEC)
    process = start_sweep(workdir, "reference")
    assert process.wait(timeout=300) == 0, process.stderr.read()
    return workdir


def check_intact(out: Path) -> pd.DataFrame:
    """Both CSVs parse and every run in runs.csv has all its curve rows."""
    runs = pd.read_csv(out / "runs.csv")
    curves = pd.read_csv(out / "curves.csv")
    counts = curves.groupby("run_id").size()
    assert all(counts.get(run_id, 0) == 3 for run_id in runs["run_id"])
    return runs


def finish_and_compare(workdir: Path, out: str, kept: int) -> None:
    process = start_sweep(workdir, out)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert f"{kept} already in" in stdout
    resumed = check_intact(workdir / out)
    reference = pd.read_csv(workdir / "reference" / "runs.csv")
    pd.testing.assert_frame_equal(resumed[METRICS], reference[METRICS], check_exact=True)  # bitwise: same spec, seed, machine
    assert len(pd.read_csv(workdir / out / "curves.csv")) == 12 * 3


@pytest.mark.system
def test_sigkill_mid_sweep_keeps_finished_runs_and_resume_equals_an_uninterrupted_sweep(crash_dir):
    process = start_sweep(crash_dir, "killed")
    wait_for_rows(crash_dir / "killed" / "runs.csv", 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    kept = len(check_intact(crash_dir / "killed"))
    assert 2 <= kept < 12
    finish_and_compare(crash_dir, "killed", kept)


@pytest.mark.system
def test_ctrl_c_stops_after_saving_and_says_how_to_resume(crash_dir):
    process = start_sweep(crash_dir, "interrupted")
    wait_for_rows(crash_dir / "interrupted" / "runs.csv", 2, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "run the same command again to resume" in stderr and "Traceback" not in stderr
    kept = len(check_intact(crash_dir / "interrupted"))
    assert 2 <= kept < 12
    meta = json.loads((crash_dir / "interrupted" / "meta.json").read_text())
    assert meta["finished"] is None
    finish_and_compare(crash_dir, "interrupted", kept)


@pytest.mark.system
def test_meta_json_records_what_reproduces_a_row(crash_dir):
    meta = json.loads((crash_dir / "reference" / "meta.json").read_text())
    runs = pd.read_csv(crash_dir / "reference" / "runs.csv")
    assert meta["spec_hash"] == runs["spec_hash"].iloc[0] and runs["spec_hash"].nunique() == 1
    assert {"bnbench", "jax", "jaxlib", "optax"} <= set(meta["versions"])
    assert meta["backend"] == "cpu" and meta["device_count"] >= 1 and meta["device_kind"]
    assert "xla_flags" in meta and meta["blocks_at_once"] >= 1
    assert "git_commit" in meta and meta["finished"] and meta["engine"] == "vectorized"


@pytest.mark.integration
def test_full_disk_fails_cleanly_and_keeps_earlier_runs(tiny_spec, workdir, cli, monkeypatch):
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd, payload):
        calls["n"] += 1
        if calls["n"] == 5:  # once, on the third run's curve rows
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, payload)

    monkeypatch.setattr(csv_files.os, "write", failing_write)
    result = cli("sweep", tiny_spec, "--no-plots")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "kept" in lines[0]
    runs = check_intact(workdir / "results" / "tiny")
    assert len(runs) == 2
    assert cli("sweep", tiny_spec, "--no-plots").exit_code == 0
    assert len(check_intact(workdir / "results" / "tiny")) == 8


@pytest.mark.unit
def test_a_short_write_is_rolled_back_to_whole_rows(tmp_path, monkeypatch):
    path = tmp_path / "runs.csv"
    path.write_text("a,b\n1,2\n")
    monkeypatch.setattr(csv_files.os, "write", lambda fd, payload: os.pwrite(fd, payload[:3], 8) and 3)
    with pytest.raises(csv_files.ResultsError, match="cannot write"):
        csv_files.append_whole(path, "3,4\n5,6\n")
    assert path.read_text() == "a,b\n1,2\n"


@pytest.mark.unit
def test_unwritable_output_location_is_refused_before_anything_runs(tiny_spec, workdir, cli):
    result = cli("sweep", tiny_spec, "--out", "/sys/bnbench-test")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: /sys/bnbench-test: output location is not writable")


@pytest.mark.integration
def test_rows_of_another_spec_in_the_folder_are_refused(tiny_spec, workdir, cli):
    """Even without spec.toml: rows whose runs are not runs of this spec (their run_id hashes every
    field) are refused; this spec's own rows resume whatever their spec_hash says."""
    assert cli("sweep", tiny_spec, "--set", "lr=0.5", "--out", "results/tiny", "--no-plots").exit_code == 0
    out = workdir / "results" / "tiny"
    (out / "spec.toml").unlink()
    result = cli("sweep", tiny_spec)
    assert result.exit_code == 2 and "different spec (8 of the runs in runs.csv" in result.stderr
    assert cli("sweep", tiny_spec, "--no-resume", "--no-plots").exit_code == 0
    (out / "spec.toml").unlink()
    runs = pd.read_csv(out / "runs.csv")
    runs.assign(spec_hash="000000000000").to_csv(out / "runs.csv", index=False)
    result = cli("sweep", tiny_spec, "--no-plots")
    assert result.exit_code == 0 and "8 already in" in result.stdout


@pytest.mark.unit
def test_grid_larger_than_the_limit_needs_yes(tiny_spec, workdir, cli):
    result = cli("sweep", tiny_spec, "--max-runs", "4")
    assert result.exit_code == 2 and "8 runs exceed the limit of 4; pass --yes" in result.stderr
    assert not (workdir / "results").exists()
    assert cli("sweep", tiny_spec, "--max-runs", "4", "--yes", "--dry-run").exit_code == 0


@pytest.mark.integration
def test_a_block_out_of_device_memory_stops_the_sweep_with_the_block_size_to_try(monkeypatch, tiny_spec, workdir, cli):
    """A smaller block would change the runs' numbers (bnbench.training.context), so the engine does not retry one
    silently: it says which size to pass, and the blocks that finished stay saved."""
    real, calls = programs.compiled, []

    def failing_after_one(fn, device, *args, **static):
        program = real(fn, device, *args, **static)

        def run(*args):
            calls.append(1)
            if len(calls) > 1:
                raise jax_oom()
            return program(*args)

        return run

    monkeypatch.setattr(programs, "compiled", failing_after_one)
    result = cli("sweep", tiny_spec, "--devices", "1", "--no-compile-cache", "--no-plots")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == ("error: out of device memory training 2 mlp runs per device; pass "
                                     "--runs-per-device 1 (runs record it: their numbers differ from those of blocks "
                                     "of another size)")
    assert len(pd.read_csv(workdir / "results" / "tiny" / "runs.csv")) == 2


def jax_oom():
    import jax

    return jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.00GiB")


@pytest.mark.unit
def test_data_with_nan_is_rejected_with_its_name_and_count(monkeypatch, write_spec, workdir, cli):
    def load_bad(num_samples, folder):
        clean = data.REGISTRY["synthetic"].build(num_samples, folder)
        x = clean.x_train.copy()
        x[:3, 0] = np.nan
        x[5, 1] = np.inf
        return clean._replace(name="broken", x_train=x)

    monkeypatch.setitem(data.REGISTRY, "broken", data.DatasetInfo("broken", "test", (80, 20), (16,), load_bad))
    result = cli("sweep", write_spec('dataset = "broken"\nbatch_size = 8\nsteps = 5\n'))
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("dataset 'broken': x_train holds 4 NaN/inf values")
    assert not (workdir / "results").exists()


# Property-based: any malformed spec exits 2 with one line on stderr and creates nothing.

VALID = {"dataset": "synthetic", "widths": [8], "batch_size": 8, "steps": 10, "eval_every": 5}
identifiers = st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True)
scalars = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=False), st.text(max_size=8), st.booleans(), st.just([])
)


def bad_value(field: str):
    """Values of any type that the field's rule rejects."""
    return scalars.filter(lambda v: RULES[field].check(v) is not None)


malformed_specs = st.one_of(
    st.builds(lambda k, v: {**VALID, k: v}, identifiers.filter(lambda k: k not in TOP_LEVEL_KEYS), scalars),
    st.sampled_from(RUN_FIELDS).flatmap(lambda f: st.builds(lambda v: {**VALID, f: v}, bad_value(f))),
    st.sampled_from(RUN_FIELDS).flatmap(
        lambda f: st.builds(lambda v: {**VALID, "grid": {f: [v]}}, bad_value(f))
    ),
    st.builds(lambda k: {**VALID, "grid": {k: []}}, st.sampled_from(RUN_FIELDS)),
    st.builds(lambda k: {**VALID, "grid": {k: [1]}}, identifiers.filter(lambda k: k not in RUN_FIELDS)),
    st.builds(lambda n: {**VALID, "batch_size": n}, st.integers(961, 10**9)),
    st.builds(lambda n: {**VALID, "seeds": n}, st.integers(-100, 0)),
)


def to_toml(spec: dict) -> str:
    def value(v):
        return json.dumps(v) if not isinstance(v, float) or np.isfinite(v) else ("inf" if v > 0 else "-inf")

    lines = [f"{k} = {value(v)}" for k, v in spec.items() if k != "grid"]
    if "grid" in spec:
        lines += ["[grid]"] + [f"{k} = [{', '.join(value(x) for x in v)}]" for k, v in spec["grid"].items()]
    return "\n".join(lines) + "\n"


@pytest.mark.unit
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_specs)
def test_any_malformed_spec_exits_2_with_one_line_and_writes_nothing(spec):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bad.toml"
        path.write_text(to_toml(spec))
        result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(Path(folder) / "out")])
        assert result.exit_code == 2, (to_toml(spec), result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), result.stderr
        assert sorted(p.name for p in Path(folder).iterdir()) == ["bad.toml"]


@pytest.mark.unit
@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=30).filter(lambda t: "=" not in t or not t.partition("=")[2].strip()))
def test_any_malformed_set_expression_exits_2(expression):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ok.toml"
        path.write_text(to_toml(VALID))
        result = CliRunner().invoke(app, ["sweep", str(path), "--set", expression, "--out", str(Path(folder) / "o")])
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
        assert sorted(p.name for p in Path(folder).iterdir()) == ["ok.toml"]
