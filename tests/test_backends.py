"""Choices that depend on the backend (GPU/TPU paths), checked with the backend mocked where that can
be done honestly: which device the PyTorch peer uses, the cache size that makes buffers cold, the
allocator note, the memory a block size is computed from, out-of-memory detection."""

import jax
import pytest

from bnbench import data, engine, options
from bnbench.engine import run_block
from bnbench.profiling import peers
from bnbench.profiling import kernels as P
from bnbench.profiling import table
from bnbench.experiment.fields import RunConfig
from bnbench.training.signature import Signature

pytestmark = pytest.mark.unit


class FakeDevice:
    def __init__(self, stats, platform="gpu"):
        self.stats, self.platform = stats, platform

    def memory_stats(self):
        return self.stats


def test_device_memory_is_the_allocator_limit_whatever_is_in_use_and_8_gib_without_stats():
    assert engine.device_memory(FakeDevice({"bytes_limit": 60 << 30, "bytes_in_use": 20 << 30})) == 60 << 30
    assert engine.device_memory(FakeDevice({"bytes_limit": 60 << 30, "bytes_in_use": 59 << 30})) == 60 << 30
    assert engine.device_memory(FakeDevice(None)) == 8 << 30
    assert engine.device_memory(FakeDevice({})) == 8 << 30


def test_block_size_follows_the_memory_of_the_device_and_its_platform_maximum():
    config = RunConfig(dataset="synthetic", num_samples=1200, widths=(64, 64), batch_size=32, steps=100, eval_every=10)
    sig = Signature.of(config, data.load("synthetic", 1200))
    per_run = engine.run_memory(sig, 240)
    roomy = engine.block_size(sig, 240, FakeDevice({"bytes_limit": 80 << 30}, "gpu"))
    tight = engine.block_size(sig, 240, FakeDevice({"bytes_limit": 4 * 5 * per_run}, "gpu"))
    full = engine.block_size(sig, 240, FakeDevice({"bytes_limit": 1 << 10}, "gpu"))
    assert roomy == engine.MAX_RUNS_PER_DEVICE["gpu"] and tight == 5 and full == 1
    assert engine.block_size(sig, 240, FakeDevice(None, "cpu")) == engine.MAX_RUNS_PER_DEVICE["cpu"]


def test_device_out_of_memory_errors_are_recognised():
    assert run_block._out_of_memory(jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 2.0GiB on GPU"))
    assert not run_block._out_of_memory(jax.errors.JaxRuntimeError("INVALID_ARGUMENT: shapes"))
    assert not run_block._out_of_memory(ValueError("RESOURCE_EXHAUSTED"))


def test_pytorch_peer_runs_where_jax_runs(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(P.jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert peers.torch_device() == "cuda"
    synchronized = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: synchronized.append(1))
    peers.synchronize("cuda")
    peers.synchronize("cpu")
    assert synchronized == [1]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert peers.torch_device() == "cpu"
    monkeypatch.setattr(P.jax, "default_backend", lambda: "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert peers.torch_device() == "cpu"


def test_cold_buffers_on_an_accelerator_cover_several_times_its_l2(monkeypatch):
    monkeypatch.setattr(P.jax, "default_backend", lambda: "gpu")
    cache, read = P.last_level_cache_bytes()
    assert not read and cache >= 50_000_000  # an H100's L2
    tensor = 32 * 56 * 56 * 64 * 4
    assert P.buffer_count(tensor, cache) * tensor >= 4 * 50_000_000


def test_allocator_note_is_cpu_only(monkeypatch):
    monkeypatch.setattr(P.jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(table, "allocator_overhead", lambda *a: pytest.fail("measured the allocator on a GPU"))
    assert table._allocator_note(peers.Case((128, 56, 56, 64), "float32", "train")) == []


def test_option_names_are_the_implemented_ones():
    from bnbench import models

    assert tuple(peers.implementations()) == options.PROFILE_IMPLEMENTATIONS
    assert tuple(models.ACTIVATION_FUNCTIONS) == options.ACTIVATIONS and tuple(models.FAMILIES) == options.MODELS
    assert tuple(P.TRAFFIC) == options.PROFILE_MODES
