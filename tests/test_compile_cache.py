"""The persistent compilation cache: same results cached or not, shared by processes, corrupt entries
recompiled. Every sweep here is its own process, so that JAX's in-memory caches cannot hide a miss."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bnbench import options

SPEC = """
name = "cached"
dataset = "synthetic"
widths = [8]
steps = 30
eval_every = 10
seeds = 2
[grid]
placement = ["pre", "none"]
"""
METRICS = ["run_id", "status", "final_train_loss", "test_loss", "test_acc"]


def start(workdir: Path, out: str, cache: str) -> subprocess.Popen:
    env = {**os.environ, options.COMPILE_CACHE_ENV: cache}
    return subprocess.Popen([sys.executable, "-m", "bnbench", "sweep", "spec.toml", "--out", out, "--no-plots"],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sweep(workdir: Path, out: str, cache: str) -> tuple[pd.DataFrame, str]:
    process = start(workdir, out, cache)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return pd.read_csv(workdir / out / "runs.csv")[METRICS], stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    (folder / "spec.toml").write_text(SPEC)
    return folder


def entries(cache: Path) -> list[Path]:
    """The compiled programs and the traced ones (bnbench.engine.trace_cache)."""
    return sorted([*cache.glob("*-cache"), *cache.glob("traced/*.jaxexport")])


@pytest.mark.system
def test_cached_runs_equal_uncached_runs_and_corrupt_entries_are_recompiled(workdir):
    cache = workdir / "xla"
    uncached, _ = sweep(workdir, "off", "off")
    filled, _ = sweep(workdir, "cold", str(cache))
    assert entries(cache), "the sweep wrote no cache entry"
    traced = sorted(cache.glob("traced/*.jaxexport"))
    assert traced, "the sweep kept no traced program"
    stamps = [p.stat().st_mtime_ns for p in traced]
    warm, stderr = sweep(workdir, "warm", str(cache))
    # bitwise: a program read back is the program that would be traced and compiled
    pd.testing.assert_frame_equal(filled, uncached, check_exact=True)
    pd.testing.assert_frame_equal(warm, uncached, check_exact=True)
    assert "persistent compilation cache" not in stderr
    assert [p.stat().st_mtime_ns for p in traced] == stamps  # read back, not traced and written again
    for i, entry in enumerate(entries(cache)):
        blob = entry.read_bytes()
        entry.write_bytes(blob[: len(blob) // 2] if i % 2 else bytes(reversed(blob)))
    corrupt, stderr = sweep(workdir, "corrupt", str(cache))
    pd.testing.assert_frame_equal(corrupt, uncached, check_exact=True)
    assert "Error reading persistent compilation cache entry" in stderr


@pytest.mark.system
def test_concurrent_processes_share_one_cache(workdir):
    cache = workdir / "shared-xla"
    processes = [start(workdir, f"p{i}", str(cache)) for i in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    first, second = (pd.read_csv(workdir / f"p{i}" / "runs.csv")[METRICS] for i in range(2))
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    assert entries(cache)


@pytest.mark.unit
def test_the_cache_folder_comes_from_flag_environment_or_user_cache(tmp_path):
    home = {"XDG_CACHE_HOME": str(tmp_path)}
    assert options.compile_cache_dir(home) == tmp_path / "bnbench" / "xla"
    assert options.compile_cache_dir({**home, options.COMPILE_CACHE_ENV: "/c"}) == Path("/c")
    assert options.compile_cache_dir({**home, options.COMPILE_CACHE_ENV: "/c"}, "/d") == Path("/d")
    assert options.compile_cache_dir({options.COMPILE_CACHE_ENV: "off"}) is None
    assert options.compile_cache_dir(home, off=True) is None


@pytest.mark.integration
def test_an_unusable_cache_folder_turns_the_cache_off_with_a_note(tmp_path, write_spec, cli):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = cli("sweep", write_spec('dataset = "synthetic"\nwidths = [4]\nsteps = 5\n'), "--compile-cache",
                 blocker / "xla", "--no-plots", "--out", tmp_path / "out")
    assert result.exit_code == 0 and "note: compilation cache off: cannot create" in result.stderr, result.output


@pytest.mark.unit
def test_program_keys_change_with_what_the_trace_depends_on():
    import jax
    import numpy as np

    from bnbench import data
    from bnbench.engine import trace_cache
    from bnbench.experiment.fields import RunConfig
    from bnbench.training.signature import Signature

    dataset = data.load("synthetic", 1200)
    sig = Signature.of(RunConfig(dataset="synthetic", num_samples=1200, widths=(8,)), dataset)
    device = jax.devices()[0]
    args = (np.zeros(4, np.uint32), np.zeros((4, 3), np.float32))
    same = trace_cache.key(sig, "xla", device, args)
    assert trace_cache.key(sig, "xla", device, args) == same
    assert trace_cache.key(sig._replace(batch_size=32), "xla", device, args) != same
    assert trace_cache.key(sig, "patches", device, args) != same
    assert trace_cache.key(sig, "xla", device, (np.zeros(8, np.uint32), args[1])) != same
    assert trace_cache.key(sig, "xla", device, (args[0], args[1].astype(np.float64))) != same


@pytest.mark.unit
def test_traced_programs_are_keyed_by_every_source_file_sub_packages_included(tmp_path):
    from bnbench.engine import trace_cache

    (tmp_path / "models").mkdir()
    (tmp_path / "train.py").write_text("a = 1\n")
    (tmp_path / "models" / "resnet.py").write_text("b = 1\n")
    before = trace_cache.source_digest(tmp_path)
    (tmp_path / "models" / "resnet.py").write_text("b = 2\n")
    assert trace_cache.source_digest(tmp_path) != before
