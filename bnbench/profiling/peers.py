"""The BN implementations ``bnbench profile`` times (:func:`implementations`), and their accuracy.

* ``bnbench``: :func:`bnbench.norm.bn.batch_norm` (in ``fold`` mode: the layer, then BN);
  ``bnbench_folded``: BN folded into the preceding layer for inference (:func:`bnbench.norm.bn.fold`).
* ``two_pass`` and ``one_pass``: plain JAX references, the variance as E[(x - mean)^2] and as
  E[x^2] - E[x]^2 (the formula that loses every digit on inputs with a large mean).
* ``flax_fast`` and ``flax_exact``: ``flax.linen.BatchNorm`` with and without its fast variance
  (optional: needs flax).
* ``torch``: ``torch.nn.functional.batch_norm`` on channels_last tensors, on the device JAX runs on
  (optional: needs PyTorch).

:func:`accuracy` compares an implementation's batch variance and training-mode output with float64 on
an input whose mean is 3000 times its standard deviation (:func:`large_mean_input`).
"""

from __future__ import annotations

import importlib.util
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bnbench.norm import bn

EPSILON = 1e-5
MEAN_OVER_STD = 3000.0
ACCURACY_ELEMENTS = 1 << 22  # accuracy is checked on the first samples of the shape, at most this many values


class Case(NamedTuple):
    shape: tuple[int, ...]
    dtype: str
    mode: str

    @property
    def tensor_bytes(self) -> int:
        return math.prod(self.shape) * jnp.dtype(self.dtype).itemsize


def _params_state(channels: int):
    rng = np.random.default_rng(0)
    params = bn.BNParams(
        jnp.asarray(rng.uniform(0.5, 1.5, channels), jnp.float32), jnp.asarray(rng.normal(size=channels), jnp.float32)
    )
    state = bn.BNState(
        jnp.asarray(rng.normal(size=channels), jnp.float32),
        jnp.asarray(rng.uniform(0.5, 1.5, channels), jnp.float32),
        jnp.zeros((), jnp.int32),
    )
    return params, state


def _reference_forward(one_pass: bool):
    """Plain BN forwards for comparison: two-pass, or E[x^2] - E[x]^2."""

    def forward(x, params, state):
        xf = x.astype(jnp.float32)
        axes = tuple(range(x.ndim - 1))
        mean = xf.mean(axes)
        var = (xf * xf).mean(axes) - mean * mean if one_pass else jnp.square(xf - mean).mean(axes)
        y = (xf - mean) * (params.scale * jax.lax.rsqrt(var + EPSILON)) + params.offset
        return y.astype(x.dtype), bn.BNState(mean, var, state.count + 1)

    return forward


def _bnbench_forward(x, params, state):
    return bn.batch_norm(x, params, state, train=True, momentum=0.0, epsilon=EPSILON)


def _flax_forward(fast: bool):
    import flax.linen as nn

    def forward(x, params, state):
        # dtype=x.dtype: flax would otherwise return float32 for bfloat16 inputs.
        module = nn.BatchNorm(
            use_running_average=False, momentum=0.0, epsilon=EPSILON, use_fast_variance=fast, dtype=x.dtype
        )
        variables = {
            "params": {"scale": params.scale, "bias": params.offset},
            "batch_stats": {"mean": state.mean, "var": state.var},
        }
        y, updated = module.apply(variables, x, mutable=["batch_stats"])
        return y, bn.BNState(updated["batch_stats"]["mean"], updated["batch_stats"]["var"], state.count + 1)

    return forward


def _flax_infer(x, params, state):
    import flax.linen as nn

    variables = {
        "params": {"scale": params.scale, "bias": params.offset},
        "batch_stats": {"mean": state.mean, "var": state.var},
    }
    return nn.BatchNorm(use_running_average=True, epsilon=EPSILON, dtype=x.dtype).apply(variables, x)


def _jax_kernel(forward, infer=None) -> Callable[[Case], Callable | None]:
    """Kernels ``op(x, cotangent)`` of one JAX implementation for each mode."""

    def build(case: Case):
        params, state = _params_state(case.shape[-1])
        if case.mode == "train":
            return lambda x, g: forward(x, params, state)
        if case.mode == "grad":

            def grad(x, g):
                y, vjp = jax.vjp(lambda x, s, o: forward(x, bn.BNParams(s, o), state)[0], x, params.scale, params.offset)
                return vjp(g)

            return grad
        if case.mode == "infer" and infer is not None:
            return lambda x, g: infer(x, params, state)
        return None

    return build


def _bnbench_infer(x, params, state):
    return bn.batch_norm(x, params, state, train=False, epsilon=EPSILON)[0]


def _bnbench_kernel(case: Case):
    if case.mode == "fold":
        return _fold_kernel(False)(case)
    return _jax_kernel(_bnbench_forward, _bnbench_infer)(case)


def _layer(case: Case):
    """The 1x1 conv / dense layer (C -> C) that ``fold`` mode puts before BN, and its parameters."""
    channels = case.shape[-1]
    rng = np.random.default_rng(1)
    weight = jnp.asarray(rng.normal(size=(channels, channels)) / math.sqrt(channels), jnp.float32)
    bias = jnp.asarray(rng.normal(size=channels), jnp.float32)

    def apply(x, w, b):
        return (jnp.einsum("...i,io->...o", x.astype(jnp.float32), w) + b).astype(x.dtype)

    return apply, weight, bias


def _fold_kernel(folded: bool) -> Callable[[Case], Callable | None]:
    def build(case: Case):
        if case.mode != "fold":
            return None
        params, state = _params_state(case.shape[-1])
        apply, weight, bias = _layer(case)
        if folded:
            w, b = bn.fold(params, state, weight, bias, epsilon=EPSILON)
            return lambda x, g: apply(x, w, b)
        return lambda x, g: bn.batch_norm(apply(x, weight, bias), params, state, train=False, epsilon=EPSILON)[0]

    return build


class Impl(NamedTuple):
    name: str
    description: str
    requires: str | None  # an optional package; the row is skipped without it
    build: Callable[[Case], Callable | None]  # None where the implementation has no such mode
    forward: Callable | None  # training-mode forward (x, params, state) -> (y, state), for accuracy


def implementations() -> dict[str, Impl]:
    """Every implementation the profile knows, by name."""
    two_pass, one_pass = _reference_forward(False), _reference_forward(True)
    return {
        "bnbench": Impl("bnbench", "bnbench.batch_norm (fold mode: the layer, then BN)", None, _bnbench_kernel,
                        _bnbench_forward),
        "bnbench_folded": Impl("bnbench_folded", "BN folded into the layer (bnbench.norm.bn.fold)", None, _fold_kernel(True), None),
        "two_pass": Impl("two_pass", "plain two-pass reference", None, _jax_kernel(two_pass), two_pass),
        "one_pass": Impl("one_pass", "E[x^2] - E[x]^2", None, _jax_kernel(one_pass), one_pass),
        "flax_fast": Impl("flax_fast", "flax.linen.BatchNorm(use_fast_variance=True)", "flax",
                          _jax_kernel(_flax_forward(True), _flax_infer) if installed("flax") else lambda c: None,
                          _flax_forward(True) if installed("flax") else None),
        "flax_exact": Impl("flax_exact", "flax.linen.BatchNorm(use_fast_variance=False)", "flax",
                           _jax_kernel(_flax_forward(False)) if installed("flax") else lambda c: None,
                           _flax_forward(False) if installed("flax") else None),
        "torch": Impl("torch", "torch.nn.functional.batch_norm, channels_last, per call", "torch", _torch_kernel, None),
    }


def installed(package: str) -> bool:
    """Whether an optional peer's package can be imported (without importing it)."""
    return importlib.util.find_spec(package) is not None


# --- PyTorch -------------------------------------------------------------------------------------


def torch_device() -> str:
    """Where the PyTorch peer runs: on the GPU when JAX runs on one and PyTorch sees CUDA, else the CPU,
    so that both sides of a comparison run on the same device."""
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def synchronize(device: str) -> None:
    """Waits for the device's queued work: CUDA kernels return before they finish."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def to_torch(x: np.ndarray, dtype: str, device: str = "cpu"):
    import torch

    tensor = torch.from_numpy(np.array(x, dtype=np.float32)).to(device=device, dtype=_torch_dtype(dtype))
    # NHWC memory seen as NCHW: PyTorch's channels_last layout, without a copy.
    return tensor.permute(0, 3, 1, 2) if tensor.ndim == 4 else tensor


def _torch_dtype(dtype: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def _torch_kernel(case: Case):
    if case.mode == "fold" or not installed("torch"):
        return None
    import torch
    import torch.nn.functional as F

    params, state = _params_state(case.shape[-1])
    device = torch_device()
    weight, bias = (torch.from_numpy(np.array(a)).to(device) for a in params)
    mean, var = (torch.from_numpy(np.array(a)).to(device) for a in state[:2])

    def run(x, g):
        if case.mode == "infer":
            with torch.no_grad():
                return F.batch_norm(x, mean, var, weight, bias, training=False, eps=EPSILON)
        if case.mode == "train":
            with torch.no_grad():
                return F.batch_norm(x, mean.clone(), var.clone(), weight, bias, training=True, momentum=1.0, eps=EPSILON)
        leaf = x.detach().requires_grad_()
        w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
        F.batch_norm(leaf, None, None, w, b, training=True, eps=EPSILON).backward(g)
        return leaf.grad

    return run


def _torch_accuracy(x: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    import torch
    import torch.nn.functional as F

    tensor = to_torch(x, dtype)
    channels = x.shape[-1]
    running_var = torch.zeros(channels, dtype=torch.float32)
    with torch.no_grad():
        y = F.batch_norm(tensor, torch.zeros(channels), running_var, training=True, momentum=1.0, eps=EPSILON)
    n = x.size // channels
    biased = running_var.double().numpy() * (n - 1) / n  # PyTorch stores the unbiased variance
    y = y.permute(0, 2, 3, 1) if y.ndim == 4 else y
    return biased, y.double().numpy()


# --- accuracy ------------------------------------------------------------------------------------


def large_mean_input(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """The accuracy input: N(3000, 1) per element, at most ACCURACY_ELEMENTS values, in ``dtype``."""
    per_sample = math.prod(shape[1:])
    samples = max(2, min(shape[0], ACCURACY_ELEMENTS // per_sample))
    x = MEAN_OVER_STD + np.random.default_rng(2).standard_normal((samples, *shape[1:]), dtype=np.float32)
    return np.asarray(jnp.asarray(x, dtype))


def accuracy(impl: Impl, shape: tuple[int, ...], dtype: str) -> tuple[float, float]:
    """Relative error of the batch variance (max over channels) and of the output (max abs over the
    reference's std) against float64, on :func:`large_mean_input`."""
    x = large_mean_input(shape, dtype)
    x64 = x.astype(np.float64).reshape(-1, shape[-1])
    var_ref = x64.var(axis=0)
    y_ref = (x64 - x64.mean(axis=0)) / np.sqrt(var_ref + EPSILON)
    if impl.name == "torch":
        var, y = _torch_accuracy(x, dtype)
    else:
        identity = bn.BNParams(jnp.ones(shape[-1]), jnp.zeros(shape[-1]))
        _, state = bn.init(shape[-1])
        y, new_state = jax.jit(impl.forward)(jnp.asarray(x), identity, state)
        var, y = np.asarray(new_state.var, np.float64), np.asarray(y, np.float64)
    var_err = float(np.max(np.abs(var - var_ref) / var_ref))
    out_err = float(np.max(np.abs(y.reshape(-1, shape[-1]) - y_ref)))
    # A NaN anywhere (a negative variance under rsqrt) is a failure: report it as an infinite error.
    return (var_err if math.isfinite(var_err) else math.inf), (out_err if math.isfinite(out_err) else math.inf)
