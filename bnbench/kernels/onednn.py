"""oneDNN's convolution kernels inside JAX programs, through XLA's FFI.

:func:`convolve` is a convolution of channels-last activations ``(N, *spatial, C_in)`` with a kernel
``(*spatial, C_in, C_out)`` (1 to 3 spatial axes, any strides, explicit padding), computed by oneDNN's
forward primitive; its derivative (a ``jax.custom_vjp``) calls oneDNN's input-gradient and
kernel-gradient primitives. It works under ``jit``, ``grad``, ``lax.scan`` and ``vmap`` (each run's
convolution in turn, with its own kernel). Only reverse-mode derivatives exist, as for every
``custom_vjp``.

The kernels live in a C++ extension (``onednn_conv.cc``) built at first use, with the C++ compiler
``$CXX`` (default ``g++``), against oneDNN's pip wheels (``pip install 'bnbench[onednn]'``, the version
pinned there) and jaxlib's FFI headers, into ``<user cache>/onednn`` (a file per source, jaxlib and
oneDNN version, so an upgrade builds again). :func:`load` builds, loads and registers it once per
process and says in one line why not where it cannot: no oneDNN installed, no compiler, a failed
build. The engine then keeps XLA's convolutions (:func:`bnbench.engine.policy.conv_form`).

oneDNN picks its kernels, their blocking and their threads' split of each sum by the CPU (its
instruction set and cache sizes) and its OpenMP threads, so a run's bits with these kernels are those
of its machine: native numerics only (docs/engine.md).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import numpy as np

from bnbench.options import user_cache_dir

SOURCE = Path(__file__).with_name("onednn_conv.cc")
DISTRIBUTIONS = ("onednn-cpu-gomp", "onednn-devel-cpu-gomp")  # the library, its headers
TARGETS = {"forward": "BnbenchOnednnForward", "input_gradient": "BnbenchOnednnInputGradient",
           "kernel_gradient": "BnbenchOnednnKernelGradient"}
_DTYPES = {"float32": 0, "bfloat16": 1}


class OnednnUnavailable(Exception):
    """oneDNN's kernels cannot be had in this process; the message says why, in one line."""


def _prefix() -> Path:
    """The folder holding the wheels' ``lib/libdnnl.so`` and ``include/``."""
    try:
        files = importlib.metadata.files(DISTRIBUTIONS[0]) or []
        importlib.metadata.version(DISTRIBUTIONS[1])
    except importlib.metadata.PackageNotFoundError:
        raise OnednnUnavailable("oneDNN is not installed (pip install 'bnbench[onednn]')") from None
    for file in files:
        if file.name == "libdnnl.so":
            return Path(file.locate()).resolve().parent.parent
    raise OnednnUnavailable(f"{DISTRIBUTIONS[0]} holds no libdnnl.so")


def _compiler() -> str:
    compiler = os.environ.get("CXX", "g++")
    found = shutil.which(compiler)
    if found is None:
        raise OnednnUnavailable(f"no C++ compiler {compiler!r} to build oneDNN's kernels (install g++ or set CXX)")
    return found


def build(cache: Path | None = None) -> Path:
    """The extension, built into ``cache`` (default ``<user cache>/onednn``) unless already there.
    Raises :class:`OnednnUnavailable` naming what is missing or how the build failed."""
    prefix, compiler = _prefix(), _compiler()
    flags = ["-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-isystem", jax.ffi.include_dir(), "-isystem",
             str(prefix / "include"), f"-L{prefix / 'lib'}", "-ldnnl", f"-Wl,-rpath,{prefix / 'lib'}"]
    versions = [importlib.metadata.version(name) for name in ("jaxlib", *DISTRIBUTIONS)]
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join([*versions, compiler, *flags]).encode()).hexdigest()[:16]
    folder = cache or user_cache_dir(os.environ) / "onednn"
    target = folder / f"bnbench_onednn_{digest}.so"
    if target.exists():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as work:
            built = Path(work) / target.name
            done = subprocess.run([compiler, str(SOURCE), "-o", str(built), *flags], capture_output=True, text=True)
            if done.returncode != 0:
                first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip()[:200])
                raise OnednnUnavailable(f"oneDNN's kernels did not build ({Path(compiler).name} exited "
                                        f"{done.returncode}{': ' + first if first else ''})")
            os.replace(built, target)  # atomic: processes building at once each leave a whole file
    except OSError as error:
        raise OnednnUnavailable(f"cannot build oneDNN's kernels into {folder} ({error.strerror})") from None
    return target


def load() -> ctypes.CDLL:
    """The extension, built (:func:`build`), loaded and its handlers registered with XLA:CPU, once per
    process. Raises :class:`OnednnUnavailable` where it cannot be had, also on later calls (without
    trying again: a failed build is not repeated in every program)."""
    outcome = _attempt()
    if isinstance(outcome, OnednnUnavailable):
        raise outcome
    return outcome


@functools.cache
def _attempt() -> ctypes.CDLL | OnednnUnavailable:
    # GNU OpenMP's threads spin after each parallel region by default, taking cores from XLA's threads
    # between convolutions; waiting passively measured faster (`make bench-conv-policy`). Read when
    # libgomp starts, so a user's own setting stands.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        library = ctypes.CDLL(str(build()))
    except OnednnUnavailable as error:
        return error
    except OSError as error:  # the built file cannot be loaded: a library it needs is missing or differs
        return OnednnUnavailable(f"oneDNN's kernels did not load ({error})")
    for name in TARGETS.values():
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
    library.bnbench_onednn_describe.restype = ctypes.c_char_p
    library.omp_get_max_threads.restype = ctypes.c_int
    return library


def problem() -> str | None:
    """Why oneDNN's kernels cannot be had in this process, in one line; None where they can."""
    try:
        load()
    except OnednnUnavailable as error:
        return str(error)
    return None


@functools.cache
def supports(dtype: str) -> bool:
    """Whether oneDNN has the three kernels for ``dtype`` on this CPU (bfloat16 needs AVX-512 or newer
    instructions); the caller keeps XLA's convolution where not. Needs :func:`load` to succeed."""
    return dtype in _DTYPES and bool(load().bnbench_onednn_supports(_DTYPES[dtype]))


def describe() -> str:
    """What a run's context records: ``"onednn <version> <instruction set>, <threads> threads"``."""
    library = load()
    return f"onednn {library.bnbench_onednn_describe().decode()}, {library.omp_get_max_threads()} threads"


def _call(target: str, result: jax.ShapeDtypeStruct, a: jax.Array, b: jax.Array, strides, padding) -> jax.Array:
    load()  # the handlers registered (once per process)
    lo, hi = (np.asarray([p[i] for p in padding], np.int64) for i in (0, 1))
    # broadcast_all: under vmap every operand gets the runs' leading axis, and the handler loops over it.
    call = jax.ffi.ffi_call(TARGETS[target], result, vmap_method="broadcast_all")
    return call(a, b, strides=np.asarray(strides, np.int64), pad_lo=lo, pad_hi=hi)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def convolve(x: jax.Array, w: jax.Array, strides: tuple[int, ...], padding: tuple[tuple[int, int], ...]) -> jax.Array:
    """The convolution of ``x`` ``(N, *spatial, C_in)`` with ``w`` ``(*kernel, C_in, C_out)`` of the same
    dtype (float32, or bfloat16 where :func:`supports` says), ``strides`` and ``padding`` (a
    ``(low, high)`` pair per spatial axis): the same as ``lax.conv_general_dilated`` in that layout, to
    float32 rounding, computed by oneDNN. Raises :class:`OnednnUnavailable` where :func:`load` cannot,
    ValueError where ``x`` and ``w`` differ in dtype."""
    if x.dtype != w.dtype:
        raise ValueError(f"oneDNN's convolution takes x and w of one dtype, not {x.dtype} and {w.dtype}")
    out = [(x.shape[1 + d] + lo + hi - w.shape[d]) // s + 1 for d, (s, (lo, hi)) in enumerate(zip(strides, padding))]
    return _call("forward", jax.ShapeDtypeStruct((x.shape[0], *out, w.shape[-1]), x.dtype), x, w, strides, padding)


def _forward(x, w, strides, padding):
    return convolve(x, w, strides, padding), (x, w)


def _backward(strides, padding, residuals, dy):
    x, w = residuals
    dx = _call("input_gradient", jax.ShapeDtypeStruct(x.shape, x.dtype), dy, w, strides, padding)
    dw = _call("kernel_gradient", jax.ShapeDtypeStruct(w.shape, w.dtype), x, dy, strides, padding)
    return dx, dw


convolve.defvjp(_forward, _backward)
