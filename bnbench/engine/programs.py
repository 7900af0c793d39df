"""The programs this process built, compiled or read back, kept for its life (or until
:func:`release_programs`): the jitted functions of each path, programs traced once per machine
(:mod:`bnbench.engine.trace_cache`), and the compiled programs by device and argument shapes."""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from bnbench.engine import trace_cache
from bnbench.training.program import make_program
from bnbench.training.signature import Signature

_READ_BACK: dict[str, Callable] = {}  # programs read from (or traced into) a program cache, by key
_READ_BACK_LOCK = threading.Lock()  # one thread traces a program while the others wait for it
_COMPILED: dict[tuple, Callable] = {}  # compiled programs, by function, device, arguments' shapes
_COMPILE_LOCK = threading.Lock()
_MAX_COMPILED = 256


@functools.lru_cache(maxsize=64)
def vmapped_fn(sig: Signature, conv: str):
    """The jitted program of a vmapped block: ``Program.run`` over a leading run axis of seeds and
    hyperparameters, with convolutions of form ``conv`` (:func:`bnbench.engine.policy.conv_form`)."""
    return jax.jit(jax.vmap(make_program(sig, conv).run, in_axes=(0, 0, None, None, None, None)))


@functools.lru_cache(maxsize=64)
def stepwise_fns(sig: Signature, conv: str):
    """The jitted parts of a stepwise run, with convolutions of form ``conv``: ``init``, ``batch_indices``,
    ``step``, ``evaluate``, ``probe``."""
    program = make_program(sig, conv)
    return (
        jax.jit(program.init),
        jax.jit(program.batch_indices, static_argnums=2),
        jax.jit(program.step, donate_argnums=0),
        jax.jit(program.evaluate),
        jax.jit(program.probe),
    )


def block_program(sig: Signature, conv: str, device: jax.Device, args: tuple, program_cache: Path | None):
    """What trains a vmapped block: :func:`vmapped_fn` with convolutions of form ``conv``, or with
    ``program_cache`` the same program traced once per machine (:mod:`bnbench.engine.trace_cache`)."""
    fn = vmapped_fn(sig, conv)
    if program_cache is None:
        return fn
    program_key = trace_cache.key(sig, conv, device, args)
    with _READ_BACK_LOCK:
        if program_key not in _READ_BACK:
            exported = trace_cache.load(program_cache, program_key)
            if exported is None:
                exported = trace_cache.export(fn, args)
                trace_cache.save(program_cache, program_key, exported)
            _READ_BACK[program_key] = jax.jit(exported.call)
    return _READ_BACK[program_key]


def compiled(fn: Callable, device: jax.Device, *args, static: tuple = (), options: dict[str, str] | None = None) -> Callable:
    """The jitted ``fn`` compiled ahead of time for ``args`` on ``device`` (``static``: the values of its
    static arguments; ``options``: XLA's, :func:`bnbench.engine.policy.compiler_options`), once per
    process; call it with the arguments but the static ones. Compilations run one at a time, so two
    slots starting blocks of one program compile it once, not side by side."""
    leaves, tree = jax.tree_util.tree_flatten(args)
    shapes = tuple((np.shape(leaf), getattr(leaf, "dtype", type(leaf))) for leaf in leaves)
    key = (fn, device, static, tree, shapes, tuple(sorted((options or {}).items())))
    with _COMPILE_LOCK:
        if key not in _COMPILED:
            if len(_COMPILED) >= _MAX_COMPILED:
                _COMPILED.pop(next(iter(_COMPILED)))
            _COMPILED[key] = fn.lower(*args).compile(compiler_options=options or None)
        return _COMPILED[key]


def release_programs() -> None:
    """Drops every program this process compiled or read back, and JAX's caches of them: each compiled
    executable holds memory maps of its code (a process may have 65530 on Linux by default)."""
    with _COMPILE_LOCK, _READ_BACK_LOCK:
        _COMPILED.clear()
        _READ_BACK.clear()
    vmapped_fn.cache_clear()
    stepwise_fns.cache_clear()
    jax.clear_caches()
