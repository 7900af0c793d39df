"""Portable and native numerics: what a process is set up with, what runs record, and the refusals."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnbench import data
from bnbench.options import NUMERICS_ENV
from bnbench.training import host, numerics
from bnbench.training.numerics import NumericsError


@pytest.mark.system
@pytest.mark.skipif(not host.portable_possible(), reason="portable numerics need an x86-64 CPU with AVX2")
@pytest.mark.parametrize("cpus", [[], ["taskset", "-c", "0"]], ids=["all-cpus", "one-cpu"])
def test_a_fresh_process_computes_portably_by_default_on_any_number_of_cpus(cpus):
    code = ("from bnbench.training import numerics; numerics.prepare(None); "
            "print(numerics.is_portable_process(), numerics.cpu_pool_threads(), numerics.choose(None, 'cpu'))")
    env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", NUMERICS_ENV)}
    done = subprocess.run([*cpus, sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.stdout.split() == ["True", str(host.PORTABLE_THREADS), "portable"], done.stderr[-500:]


@pytest.mark.unit
def test_the_test_process_computes_natively():
    # tests/conftest.py starts every test process natively: the default then stays native
    assert not numerics.is_portable_process() and numerics.choose(None, "cpu") == "native"


@pytest.mark.unit
def test_portable_numerics_are_refused_where_asked_for_and_the_default_falls_back_to_native(monkeypatch):
    # numerics are a CPU's: a GPU's runs compute natively whatever was asked
    assert numerics.choose("portable", "gpu") == numerics.choose(None, "gpu") == "native"
    with pytest.raises(NumericsError, match="must be one of portable, native, got 'fast'"):
        numerics.prepare("fast")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX")
    with pytest.raises(NumericsError, match="caps the instruction set at AVX, portable numerics at AVX2"):
        numerics.prepare("portable")
    assert numerics.prepare(None) is None
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")
    monkeypatch.setattr(numerics, "is_portable_process", lambda: False)
    with pytest.raises(NumericsError, match="JAX started its CPU backend before bnbench could pin it"):
        numerics.prepare("portable")
    with pytest.raises(NumericsError, match="JAX started its CPU backend before bnbench could pin it"):
        numerics.choose("portable", "cpu")
    assert numerics.prepare(None) is None and numerics.choose(None, "cpu") == "native"
    assert numerics.prepare("native") is None
    monkeypatch.setattr(numerics, "portable_possible", lambda: False)
    monkeypatch.setattr(numerics, "host_isa", lambda: "AVX")
    with pytest.raises(NumericsError, match=r"needs an x86-64 CPU with AVX2; this one \(.*, AVX\)"):
        numerics.prepare("portable")
    assert numerics.prepare(None) is None  # the default falls back to native there


@pytest.mark.unit
def test_the_instruction_set_and_the_processor_recorded(monkeypatch):
    monkeypatch.setattr(host, "host_isa", lambda: "AVX512")
    monkeypatch.setenv("XLA_FLAGS", "")
    assert host.compiled_isa("native") == "AVX512" and host.compiled_isa("portable") == "AVX2"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2 --xla_cpu_max_isa=AVX")
    assert host.compiled_isa("native") == "AVX"
    monkeypatch.setattr(host, "cpu_info", lambda: {"model name": "AMD EPYC", "cpu family": "23", "model": "49",
                                                   "stepping": "0", "cache size": "512 KB", "flags": "avx2"})
    host.host_processor.cache_clear()
    try:
        assert host.host_processor() == "AMD EPYC, cpu family 23, model 49, stepping 0, cache size 512 KB"
    finally:
        host.host_processor.cache_clear()


@pytest.mark.unit
def test_a_data_sets_digest_changes_with_any_value_it_trains_on():
    dataset = data.load("synthetic", 200)
    x_train = dataset.x_train.copy()
    x_train[7, 3] = np.nextafter(x_train[7, 3], np.float32(np.inf))
    assert dataset.digest() == data.load("synthetic", 200).digest()
    assert dataset._replace(x_train=x_train).digest() != dataset.digest()


@pytest.mark.integration
def test_portable_programs_compile_without_ynnpack_fusions():
    def step(x, w):
        h = x @ w
        return ((h - h.mean(0)) / jnp.sqrt(h.var(0) + 1e-5)).sum()

    lowered = jax.jit(jax.grad(step, 1)).lower(jnp.ones((64, 40)), jnp.ones((40, 32)))
    assert "__ynn_fusion" in lowered.compile().as_text()
    assert "__ynn_fusion" not in lowered.compile(compiler_options=host.PORTABLE_OPTIONS).as_text()


@pytest.mark.unit
def test_a_gpu_run_records_its_compute_capability_and_a_cpu_run_its_numerics():
    from types import SimpleNamespace

    from bnbench.training import context

    gpu = SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3", compute_capability="9.0")
    # this jaxlib has no CUDA: the versions it cannot tell are left out
    assert context.device_kind(gpu, "native").startswith("NVIDIA H100 80GB HBM3 (compute capability 9.0")
    cpu = SimpleNamespace(platform="cpu", device_kind="cpu")
    assert context.device_kind(cpu, "portable") == "cpu (x86-64 AVX2)"
    assert context.device_kind(cpu, "native") == f"cpu ({host.host_processor()})"
    recorded = context.of(gpu, "vmapped", 16, "native", "xla", 7)
    assert (recorded.cpu_isa, recorded.cpu_threads, recorded.numerics) == ("", 0, "native")


@pytest.mark.unit
def test_a_run_recorded_without_xla_flags_resumes_in_the_same_context():
    from types import SimpleNamespace

    from bnbench.training import context

    cpu = SimpleNamespace(platform="cpu", device_kind="cpu")
    native = context.of(cpu, "vmapped", 2, "native", "none", 2)._replace(xla_flags="")
    assert context.difference(native.row(), native) is None
    assert context.difference({**native.row(), "numerics": ""}, native)[1].endswith("(results of an older bnbench)")
    assert context.difference(native.row(), native._replace(xla_flags="--xla_cpu_max_isa=AVX2")) == (
        "xla_flags", "xla_flags is '' there, '--xla_cpu_max_isa=AVX2' here")


@pytest.mark.unit
def test_a_gpu_run_records_the_xla_flags_that_bear_on_it(monkeypatch):
    from types import SimpleNamespace

    from bnbench.training import context

    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_autotune_level=0 --xla_cpu_max_isa=AVX2")
    gpu = SimpleNamespace(platform="gpu", device_kind="NVIDIA H100", compute_capability="9.0")
    cpu = SimpleNamespace(platform="cpu", device_kind="cpu")
    assert context.of(gpu, "vmapped", 16, "native", "none", 0).xla_flags == "--xla_gpu_autotune_level=0"
    assert context.of(cpu, "vmapped", 2, "portable", "none", 2).xla_flags == "--xla_gpu_autotune_level=0 --xla_cpu_max_isa=AVX2"
