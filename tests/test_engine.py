"""The vectorized engine against the sequential reference: same numbers, one compilation per group."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import pytest

from bnbench import engine
from bnbench.engine import release_programs
from bnbench.experiment.fields import RunConfig
from bnbench.experiment.spec import load_spec
from bnbench.sweeping.plan import Shard, ShardError

BASE = dict(dataset="synthetic", num_samples=1200, steps=30, eval_every=10)

# How far the engines' losses may part. They run the same float32 arithmetic, but XLA:CPU compiles
# each program on its own and may round one operation otherwise in one of them (a division by the
# dropout's keep probability, as a product with its reciprocal; a batched product's sums in another
# order, by the CPU's vector width); every later training step compounds that. Ten times the largest
# difference measured on x86-64 CPUs: an AMD EPYC (family 23, AVX2), where 12 steps of the plugin test's
# dropout_before variant moved the test loss past the former bound of 1e-5, and this suite's AVX-512
# machine, where it moved an order of magnitude less and every other run agreed bitwise. A wrong batch,
# mask or update moves a loss by orders of magnitude more.
ENGINE_LOSS_BOUND = 5e-4


def mixed_grid(widths=(12,)):
    """Three compiled signatures (placement, batch size, optimizer), each with 4 scalar settings x 2 seeds."""
    return [
        RunConfig(**BASE, widths=widths, placement=p, batch_size=b, optimizer=o, epsilon=e, momentum=m, lr=lr, seed=s)
        for p, b, o in (("pre", 16, "sgd"), ("post", 32, "adam"), ("none", 16, "adam"))
        for e, m in ((1e-5, 0.99), (1e-2, 0.9))
        for lr in (0.01, 0.003)
        for s in (0, 1)
    ]


def by_id(pairs):
    return {config.run_id: result for config, result in pairs}


@pytest.mark.integration
def test_vectorized_and_sequential_engines_agree_on_a_mixed_grid():
    grid = mixed_grid()
    vectorized = by_id(engine.run_all(grid, engine="vectorized"))
    sequential = by_id(engine.run_all(grid, engine="sequential"))
    assert len(vectorized) == len(sequential) == len(grid) == 24
    for run_id, ref in sequential.items():
        got = vectorized[run_id]
        assert got.status == ref.status == "ok"
        assert got.test_acc == ref.test_acc  # accuracies move in steps of 1/240: the former bound of 1e-5 was equality
        assert abs(got.final_train_loss - ref.final_train_loss) <= ENGINE_LOSS_BOUND
        np.testing.assert_allclose([p.test_loss for p in got.curve], [p.test_loss for p in ref.curve], rtol=0,
                                   atol=ENGINE_LOSS_BOUND)


@pytest.mark.integration
def test_whole_run_trains_on_the_batches_of_batch_indices_across_epochs():
    """``Program.run`` draws each epoch's order once and carries it; the sequential engine slices
    ``batch_indices``. 160 training examples in batches of 32 are 5 steps per epoch: epochs begin inside
    the 7-step evaluation intervals and in the 2 steps left over, and every step's loss must agree."""
    from bnbench import data
    from bnbench.training.signature import HParams, Signature
    from bnbench.training.program import device_data, make_program

    config = RunConfig(dataset="synthetic", num_samples=200, widths=(8,), batch_size=32, steps=23, eval_every=7)
    dataset = data.load("synthetic", 200)
    assert len(dataset.y_train) // config.batch_size == 5
    program = make_program(Signature.of(config, dataset))
    hp, arrays = HParams.of(config), device_data(dataset)
    run, init, step = jax.jit(program.run), jax.jit(program.init), jax.jit(program.step)
    for seed in (np.uint32(0), np.uint32(3)):
        whole = run(seed, hp, *arrays).train_losses
        state, stepped = init(seed, hp), []
        for idx in program.batch_indices(seed, 0, config.steps):
            state, loss = step(state, idx, hp, *arrays[:2])
            stepped.append(loss)
        # A scan and a step compiled on its own round the loss's float32 sums each their own way: the first
        # loss, before any update, may part by an ulp or two, and 23 steps compound that to a few. The
        # bound is fifty times what was measured (AVX-512), room for other CPUs' kernels; a step on
        # another batch moves the loss by orders of magnitude more.
        np.testing.assert_allclose(whole, stepped, rtol=1e-5)


@pytest.mark.integration
def test_one_compilation_per_group_and_device():
    grid = mixed_grid()
    compiles = []

    def listener(event, duration, **kwargs):  # the training program's compilations, not JAX's helpers'
        if event == "/jax/core/compile/backend_compile_duration" and kwargs.get("fun_name") == "jit(run)":
            compiles.append(event)

    # Every program compiles (or reads back what the test above compiled, tests/conftest.py's cache: a
    # compilation all the same, the event counts both), not one this process already holds.
    release_programs()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        results = list(engine.run_all(grid, engine="vectorized", devices=1))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    groups = engine.group_runs(grid)
    assert len(groups) == 3  # eps, momentum, lr and seed are traced, not compiled in
    assert len(results) == len(grid)
    assert len(compiles) == len(groups)


@pytest.mark.integration
def test_a_diverging_run_leaves_its_neighbours_unchanged():
    runs = [RunConfig(**BASE, widths=(12,), placement="none", optimizer="sgd", lr=lr) for lr in (0.01, 1e9, 0.05)]
    together = by_id(engine.run_all(runs, engine="vectorized"))
    blown = together[runs[1].run_id]
    assert blown.status == "diverged" and blown.diverged_step is not None
    for run in (runs[0], runs[2]):
        (alone,) = by_id(engine.run_all([run], engine="vectorized")).values()
        assert together[run.run_id].status == "ok"
        assert together[run.run_id].curve == alone.curve


@pytest.mark.unit
def test_block_size_is_the_platform_maximum_for_small_models_and_shrinks_for_big_ones():
    device = jax.devices()[0]
    small = RunConfig(dataset="mnist1d", num_samples=5000, batch_size=32, steps=2000, eval_every=200)
    big = RunConfig(
        dataset="mnist1d", num_samples=5000, model="cnn", widths=(1024, 1024, 1024), batch_size=4000, steps=10, eval_every=10
    )
    (g_small,), (g_big,) = engine.group_runs([small]), engine.group_runs([big])
    assert engine.block_size(g_small.signature, 1000, device) == engine.MAX_RUNS_PER_DEVICE["cpu"]
    assert engine.block_size(g_big.signature, 1000, device) == 1
    assert engine.block_size(g_big.signature, 1000, device, requested=3) == 3


@pytest.mark.unit
def test_unknown_engine_and_no_devices_are_errors():
    with pytest.raises(engine.EngineError, match="--engine"):
        list(engine.run_all(mixed_grid()[:1], engine="turbo"))
    with pytest.raises(engine.EngineError, match="--devices: must be >= 1"):
        engine.slots(0)


@pytest.mark.unit
def test_on_cpu_blocks_train_side_by_side_on_one_device_once_per_usable_cpu():
    from bnbench import options

    cpu = jax.devices("cpu")[0]
    assert engine.slots() == (cpu,) * options.usable_cpus()
    assert engine.slots(3) == (cpu,) * 3
    assert engine.assign_runs(mixed_grid()[:1], engine="sequential").devices == (cpu,)


@pytest.mark.unit
def test_usable_cpus_follow_the_affinity_and_the_cgroup_quota(tmp_path, monkeypatch):
    from bnbench import options

    (tmp_path / "self").write_text("0::/job\n")
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "cpu.max").write_text("150000 100000\n")
    assert options.cgroup_cpu_quota(tmp_path, tmp_path / "self") == 1.5
    (tmp_path / "job" / "cpu.max").write_text("max 100000\n")
    assert options.cgroup_cpu_quota(tmp_path, tmp_path / "self") is None
    (tmp_path / "self").write_text("4:cpu,cpuacct:/pod\n")
    (tmp_path / "cpu,cpuacct" / "pod").mkdir(parents=True)
    (tmp_path / "cpu,cpuacct" / "pod" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu,cpuacct" / "pod" / "cpu.cfs_period_us").write_text("100000\n")
    assert options.cgroup_cpu_quota(tmp_path, tmp_path / "self") == 3.0
    monkeypatch.setattr(options.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.setattr(options, "cgroup_cpu_quota", lambda: 2.5)
    assert options.usable_cpus() == 3
    monkeypatch.setattr(options, "cgroup_cpu_quota", lambda: None)
    assert options.usable_cpus() == 6


def run_cli(args, workdir, device_count, cpu=None):
    """``bnbench ARGS`` in a process with ``device_count`` host devices, on one ``cpu`` if given."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={device_count}"}
    pinned = ["taskset", "-c", str(cpu)] if cpu is not None else []
    subprocess.run([*pinned, sys.executable, "-m", "bnbench", *args], cwd=workdir, env=env, check=True,
                   capture_output=True)


METRICS = ["run_id", "status", "final_train_loss", "test_loss", "test_acc"]


@pytest.mark.system
def test_each_run_records_the_thread_pool_that_the_cpus_and_host_devices_give_xla(tiny_spec, workdir):
    """Natively XLA:CPU's pool has a thread per CPU the process may use, and at least one per host
    device; it splits large sums by it, so the runs record it (portably it has 2 threads whatever the
    machine: tests/test_numerics.py). A process limited to one CPU trains one block at a time."""
    run_cli(["sweep", tiny_spec, "--out", "four", "--no-plots", "--native"], workdir, 4)
    run_cli(["sweep", tiny_spec, "--out", "one-cpu", "--no-plots", "--native"], workdir, 1, cpu=0)
    four, one_cpu = (pd.read_csv(workdir / name / "runs.csv") for name in ("four", "one-cpu"))
    assert set(four["cpu_threads"]) == {max(4, len(os.sched_getaffinity(0)))} and set(one_cpu["cpu_threads"]) == {1}
    assert json.loads((workdir / "one-cpu" / "meta.json").read_text())["blocks_at_once"] == 1
    # Not promised bitwise natively: a pool of another size may split a large sum otherwise. This spec's
    # sums (a batch of 16, 240 test examples) are far below where XLA:CPU splits, and agreed bitwise where
    # measured; 1e-6 is a few float32 ulps of these losses (near 1), and accuracies move in steps of 1/240.
    pd.testing.assert_frame_equal(four[METRICS], one_cpu[METRICS], check_exact=False, atol=1e-6, rtol=0)


def in_grid_order(runs: pd.DataFrame, spec) -> pd.DataFrame:
    """``runs.csv``'s rows in the order of the spec's grid: a sweep records a run trained as another
    (bnbench.experiment.identity) right after that one, ``merge`` writes grid order."""
    return runs.set_index("run_id").loc[[r.run_id for r in load_spec(spec).expand()]].reset_index()


@pytest.mark.integration
def test_shards_merged_equal_the_unsharded_sweep(tiny_sweep, tiny_spec, workdir, cli):
    shutil.copytree(tiny_sweep, workdir / "whole")
    assert cli("sweep", tiny_spec, "--shard", "0/2", "--no-plots").exit_code == 0
    assert cli("sweep", tiny_spec, "--shard", "1/2", "--no-plots").exit_code == 0
    assert len(pd.read_csv(workdir / "results" / "tiny-shard0of2" / "runs.csv")) == 4
    result = cli("merge", "results/tiny-shard0of2", "results/tiny-shard1of2", "whole", "--out", "merged")
    assert result.exit_code == 0 and "8 duplicate records with the same results left out" in result.stdout
    whole = in_grid_order(pd.read_csv(workdir / "whole" / "runs.csv"), tiny_spec)
    merged = pd.read_csv(workdir / "merged" / "runs.csv")
    assert list(merged["run_id"]) == [r.run_id for r in load_spec(tiny_spec).expand()]
    # bitwise: a run's numbers depend on its configuration and execution context only (tests/test_reproducibility.py)
    pd.testing.assert_frame_equal(merged[METRICS], whole[METRICS], check_exact=True)
    curves = pd.read_csv(workdir / "merged" / "curves.csv")
    assert len(curves) == 8 * 3 and not curves.duplicated(["run_id", "step"]).any()


@pytest.mark.integration
def test_merge_refuses_folders_of_different_specs(tiny_sweep, tiny_spec, workdir, cli):
    shutil.copytree(tiny_sweep, workdir / "a")
    assert cli("sweep", tiny_spec, "--out", "b", "--set", "lr=0.01", "--no-plots").exit_code == 0
    result = cli("merge", "a", "b", "--out", "m")
    assert result.exit_code == 2 and "different specs" in result.stderr and not (workdir / "m").exists()


@pytest.mark.unit
def test_bad_shard_is_a_one_line_error(tiny_spec, workdir, cli):
    result = cli("sweep", tiny_spec, "--shard", "2/2")
    assert result.exit_code == 2 and result.stderr.strip().startswith("error: --shard")
    assert not (workdir / "results").exists()


def slurm(task: int, first: int, last: int, step: int = 1) -> dict[str, str]:
    """The variables SLURM sets in a task of ``--array=first-last:step``."""
    count = len(range(first, last + 1, step))
    return {"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first),
            "SLURM_ARRAY_TASK_MAX": str(last), "SLURM_ARRAY_TASK_STEP": str(step), "SLURM_ARRAY_TASK_COUNT": str(count)}


@pytest.mark.unit
@pytest.mark.parametrize(
    "environ, text, expected",
    [
        (slurm(3, 0, 3), "auto", (3, 4, "SLURM array job 77 task 3")),  # a first submission, --array=0-3
        (slurm(3, 0, 3), "auto/4", (3, 4, "SLURM array job 77 task 3")),
        (slurm(3, 3, 3), "auto/8", (3, 8, "SLURM array job 77 task 3")),  # re-submitted alone: --array=3
        ({**slurm(3, 2, 3), "SLURM_ARRAY_TASK_COUNT": "2"}, "auto/4", (3, 4, "SLURM array job 77 task 3")),  # --array=2,3
        ({**slurm(3, 3, 3), "BNBENCH_SHARD_COUNT": "8"}, "auto", (3, 8, "SLURM array job 77 task 3")),
        (slurm(1, 0, 7, 1) | {"SLURM_ARRAY_TASK_COUNT": "8"}, "auto", (1, 8, "SLURM array job 77 task 1")),  # %2 throttled
        ({"JOB_COMPLETION_INDEX": "2", "JOB_NAME": "sweep"}, "auto/5", (2, 5, "Kubernetes indexed job sweep index 2")),
        ({"JOB_COMPLETION_INDEX": "0", "BNBENCH_SHARD_COUNT": "3"}, "auto", (0, 3, "Kubernetes indexed job ? index 0")),
    ],
)
def test_shard_auto_is_the_same_shard_whichever_part_of_the_job_runs(environ, text, expected):
    assert Shard.parse(text, environ, jax_processes=lambda: pytest.fail("asked JAX")) == expected


@pytest.mark.unit
def test_shard_auto_from_multi_process_jax_and_its_errors():
    assert Shard.parse("auto", {}, jax_processes=lambda: (1, 4))[:2] == (1, 4)
    for environ, text, message in [
        ({}, "auto", "no scheduler found"),
        ({"JOB_COMPLETION_INDEX": "1"}, "auto", "pass --shard auto/N or set BNBENCH_SHARD_COUNT"),
        (slurm(3, 3, 3), "auto", "this SLURM array runs task 3, not the whole of 0-\\(N-1\\).*pass --shard auto/N"),
        (slurm(0, 0, 0), "auto", "runs task 0, not the whole"),  # one task would be the whole grid
        (slurm(5, 1, 13, 4), "auto", "runs tasks 1-13:4, not the whole"),
        (slurm(5, 0, 7), "auto/4", "task 5 is outside shards 0..3"),
        ({"JOB_COMPLETION_INDEX": "x"}, "auto/2", "cannot read the scheduler's variables"),
        ({"JOB_COMPLETION_INDEX": "4"}, "auto/2", "index 4 is outside shards 0..1"),
        (slurm(0, 0, 3), "auto/0", "the shard count must be at least 1, got 0"),
    ]:
        with pytest.raises(ShardError, match=message):
            Shard.parse(text, environ, jax_processes=lambda: (0, 1))
    with pytest.raises(ShardError, match="the JAX run has 4 processes"):
        Shard.parse("auto/3", {}, jax_processes=lambda: (1, 4))


@pytest.mark.integration
def test_a_resubmitted_slurm_task_runs_its_own_shard_and_the_merge_names_what_is_missing(tiny_spec, workdir, cli, monkeypatch):
    def task(index: int, first: int, last: int, shard: str):
        for name, value in slurm(index, first, last).items():
            monkeypatch.setenv(name, value)
        return cli("sweep", tiny_spec, "--shard", shard, "--no-plots")

    assert task(0, 0, 2, "auto").exit_code == 0 and task(1, 0, 2, "auto").exit_code == 0  # task 2 never ran
    parts = [f"results/tiny-shard{i}of3" for i in range(3)]
    missing = cli("merge", *parts[:2], "--out", "merged")
    assert missing.exit_code == 1 and not (workdir / "merged").exists()
    assert "they are runs of shard 2 of 3: re-submit those tasks (sbatch --array=2 with your batch script)" in missing.stderr
    refused = task(2, 2, 2, "auto")  # re-submitted alone, --array=2: SLURM says 1 task, of minimum id 2
    assert refused.exit_code == 2 and "runs task 2, not the whole of 0-(N-1)" in refused.stderr
    resumed = task(2, 2, 2, "auto/3")
    assert resumed.exit_code == 0 and f"tiny: {len(range(2, 8, 3))} runs" in resumed.stdout
    shard_meta = json.loads((workdir / parts[2] / "meta.json").read_text())
    assert shard_meta["shard"] == {"index": 2, "count": 3, "task": "SLURM array job 77 task 2"}
    assert cli("merge", *parts, "--out", "merged").exit_code == 0
    merged = json.loads((workdir / "merged" / "meta.json").read_text())
    assert set(shard_meta) - {"shard"} <= set(merged) and merged["finished"] is not None
    assert [m["shard"]["index"] for m in merged["merged_from"]] == [0, 1, 2]
    assert merged["execution"] == shard_meta["execution"] | json.loads((workdir / parts[0] / "meta.json").read_text())["execution"]


@pytest.mark.integration
def test_slurm_array_shards_merged_equal_the_unsharded_sweep(tiny_spec, workdir, cli, monkeypatch):
    assert cli("sweep", tiny_spec, "--out", "whole", "--engine", "sequential", "--no-plots").exit_code == 0
    for task in range(3):
        for name, value in slurm(task, 0, 2).items():
            monkeypatch.setenv(name, value)
        result = cli("sweep", tiny_spec, "--shard", "auto", "--engine", "sequential", "--no-plots")
        assert result.exit_code == 0 and f"tiny: {len(range(task, 8, 3))} runs" in result.stdout
    parts = [f"results/tiny-shard{i}of3" for i in range(3)]
    assert cli("merge", *parts, "--out", "merged").exit_code == 0
    whole, merged = (in_grid_order(pd.read_csv(workdir / name / "runs.csv"), tiny_spec) for name in ("whole", "merged"))
    pd.testing.assert_frame_equal(merged[METRICS], whole[METRICS], check_exact=True)  # bitwise, as any sharding
