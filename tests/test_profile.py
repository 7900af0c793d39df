"""bnbench profile: byte counts and ratios, implementations against float64, folding, peers, CSV."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from bnbench.norm import bn
from bnbench.profiling import peers
from bnbench.profiling import kernels as P
from bnbench.profiling import table

pytestmark = pytest.mark.unit


def test_traffic_and_ratio_arithmetic():
    case = peers.Case((8, 1024, 128), "float32", "train")  # T = 4 MiB
    assert case.tensor_bytes == 8 * 1024 * 128 * 4
    kernel, elementwise, copy = P.Measurement(3e-3, 0, 0), P.Measurement(2e-3, 0, 0), P.Measurement(1e-3, 0, 0)
    gbps, pct, rel = P.rates(case, kernel, elementwise, copy, copy_bytes=10**7)
    assert math.isclose(gbps, 3 * case.tensor_bytes / 3e-3 / 1e9)  # train moves 3T
    assert math.isclose(pct, 100 * gbps / (2 * 10**7 / 1e-3 / 1e9))  # a copy moves 2 x its size
    assert math.isclose(rel, 1.5)
    assert P.TRAFFIC == {"train": 3, "grad": 8, "infer": 2, "fold": 2}
    grad = P.rates(case._replace(mode="grad"), kernel, elementwise, copy, 10**7)[0]
    assert math.isclose(grad, 8 / 3 * gbps)


def test_buffer_count_covers_four_caches_within_limits():
    mib = 1 << 20
    assert P.buffer_count(100 * mib, 32 * mib) == 2  # already > cache: two buffers to alternate
    assert P.buffer_count(16 * mib, 32 * mib) == 8  # 8 x 16 MiB = 4 x cache
    assert P.buffer_count(mib, 32 * mib) == 16  # capped
    assert P.buffer_count(512 * mib, 32 * mib, memory_cap=1 << 30) == 2  # never fewer than two
    assert P.buffer_count(mib, 32 * mib, memory_cap=8 * mib) == 8  # capped by memory


WELL_CONDITIONED = (16, 6, 6, 8)


def available_impls():
    return [i for i in peers.implementations().values() if i.requires is None or peers.installed(i.requires)]


def reference(x, params, state, train):
    x64 = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    mean, var = (x64.mean(axes), x64.var(axes)) if train else (np.asarray(state.mean), np.asarray(state.var))
    return np.asarray(params.scale) * (x64 - mean) / np.sqrt(var + peers.EPSILON) + np.asarray(params.offset)


IMPLEMENTED = [(i, m) for i in available_impls() for m in ("train", "infer") if i.build(peers.Case(WELL_CONDITIONED, "float32", m))]


def test_forward_modes_cover_every_implementation():
    assert {i.name for i, _ in IMPLEMENTED} == {i.name for i in available_impls()} - {"bnbench_folded"}


@pytest.mark.parametrize("impl, mode", IMPLEMENTED, ids=lambda v: getattr(v, "name", v))
def test_every_implementation_matches_float64_on_well_conditioned_input(impl, mode):
    op = impl.build(peers.Case(WELL_CONDITIONED, "float32", mode))
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), WELL_CONDITIONED) * 2 + 1)
    params, state = peers._params_state(WELL_CONDITIONED[-1])
    if impl.name == "torch":
        y = op(peers.to_torch(x, "float32"), None).permute(0, 2, 3, 1).numpy()
    else:
        y = op(jnp.asarray(x), None)
        y = np.asarray(y[0] if isinstance(y, tuple) else y)
    np.testing.assert_allclose(y, reference(x, params, state, mode == "train"), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "impl", [i for i in available_impls() if i.name not in ("bnbench", "bnbench_folded")], ids=lambda i: i.name
)
def test_every_gradient_matches_bnbench(impl):
    case = peers.Case(WELL_CONDITIONED, "float32", "grad")
    x = jax.random.normal(jax.random.PRNGKey(2), WELL_CONDITIONED) * 2 + 1
    g = jax.random.normal(jax.random.PRNGKey(3), WELL_CONDITIONED)
    expected = np.asarray(peers.implementations()["bnbench"].build(case)(x, g)[0])
    if impl.name == "torch":
        dx = impl.build(case)(peers.to_torch(np.asarray(x), "float32"), peers.to_torch(np.asarray(g), "float32"))
        dx = dx.permute(0, 2, 3, 1).numpy()
    else:
        dx = np.asarray(impl.build(case)(x, g)[0])
    np.testing.assert_allclose(dx, expected, rtol=1e-3, atol=1e-4)


def test_bnbench_variance_is_exact_at_mean_over_std_3000_where_one_pass_fails():
    implementations = peers.implementations()
    var_err, out_err = peers.accuracy(implementations["bnbench"], (64, 8, 8, 16), "float32")
    assert var_err <= 1e-5 and out_err <= 1e-3
    one_pass_var_err, _ = peers.accuracy(implementations["one_pass"], (64, 8, 8, 16), "float32")
    assert one_pass_var_err >= 0.5  # cancellation leaves nothing of the variance


@pytest.mark.parametrize("shape", [(8, 5, 5, 16), (32, 64)])
def test_folded_inference_equals_layer_then_bn(shape):
    case = peers.Case(shape, "float32", "fold")
    implementations = peers.implementations()
    x = jax.random.normal(jax.random.PRNGKey(4), shape) * 3 + 0.5
    unfolded = np.asarray(implementations["bnbench"].build(case)(x, None))
    folded = np.asarray(implementations["bnbench_folded"].build(case)(x, None))
    np.testing.assert_allclose(folded, unfolded, rtol=1e-5, atol=1e-5)


def test_fold_matches_batch_norm_after_a_dense_layer():
    rng = np.random.default_rng(5)
    w, b = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32), jnp.asarray(rng.normal(size=4), jnp.float32)
    params = bn.BNParams(jnp.asarray(rng.uniform(0.5, 2, 4), jnp.float32), jnp.asarray(rng.normal(size=4), jnp.float32))
    state = bn.BNState(jnp.asarray(rng.normal(size=4), jnp.float32), jnp.asarray(rng.uniform(0.5, 2, 4), jnp.float32), 0)
    x = jnp.asarray(rng.normal(size=(10, 6)), jnp.float32)
    wf, bf = bn.fold(params, state, w, b)
    expected, _ = bn.batch_norm(x @ w + b, params, state, train=False)
    np.testing.assert_allclose(x @ wf + bf, expected, rtol=1e-5, atol=1e-5)


def test_missing_peers_are_skipped_cleanly(monkeypatch):
    monkeypatch.setattr(table, "installed", lambda package: False)
    rows, notes = table.profile([(4, 32)], ["float32"], ["train"], ["bnbench", "flax_fast", "torch"], repeat=3)
    assert [r.impl for r in rows] == ["bnbench"]
    assert any("flax_fast: skipped" in n for n in notes) and any("torch: skipped" in n for n in notes)


def test_profile_command_writes_the_documented_csv(workdir, cli):
    result = cli("profile", "--shape", "16,4,4,8", "--dtype", "float32", "--mode", "train,infer,fold",
                 "--impl", "bnbench,two_pass,bnbench_folded", "--repeat", "3", "--out", "prof/rows.csv")
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(workdir / "prof" / "rows.csv")
    assert list(rows.columns) == list(table.Row._fields)
    assert list(zip(rows["mode"], rows["impl"])) == [
        ("train", "bnbench"), ("train", "two_pass"), ("infer", "bnbench"), ("fold", "bnbench"), ("fold", "bnbench_folded")
    ]
    assert (rows["median_ms"] > 0).all() and (rows["gbps"] > 0).all() and set(rows["backend"]) == {"cpu"}
    assert rows.loc[rows["mode"] == "train", "var_rel_err"].max() <= 1e-5
    assert "verdict:" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [(["--impl", "cudnn"], "--impl: unknown cudnn"), (["--mode", "backward"], "--mode"), (["--shape", "4,x"], "--shape"),
     (["--dtype", "float16"], "--dtype"), (["--shape", "4,4,4"], "--shape")],
)
def test_profile_bad_arguments_are_one_line_errors(args, message, workdir, cli):
    result = cli("profile", "--repeat", "3", *args)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not (workdir / "results").exists()
