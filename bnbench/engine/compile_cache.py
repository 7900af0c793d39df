"""The persistent compilation cache: compiled programs kept on disk for later processes.

Traced programs go to a folder inside it (:mod:`bnbench.engine.trace_cache`).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from bnbench.options import compile_cache_dir


def enable_compilation_cache(folder: Path | None) -> str | None:
    """Keeps every compiled program in ``folder`` for later processes (JAX's persistent compilation
    cache), or turns the cache off with ``None``; returns a note if the folder cannot be used (then the
    cache is off).

    Entries are keyed by a hash of the program, the devices and the JAX version, so a cached program is
    the program that would be compiled, and results do not change. Processes may share the folder (each
    entry is written once; one read while another process writes it fails its zlib check), and an
    entry that cannot be read (half-written, truncated, corrupt) costs a compilation and a warning from
    JAX, never an error: ``jax_raise_persistent_cache_errors`` stays off.
    """
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            jax.config.update("jax_enable_compilation_cache", False)
            return f"compilation cache off: cannot create {folder} ({err.strerror})"
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_enable_compilation_cache", folder is not None)
    return None


def caches(explicit: Path | None = None, off: bool = False) -> tuple[Path | None, str | None]:
    """Turns on the persistent compilation cache (``--compile-cache``, ``--no-compile-cache``,
    ``$BNBENCH_COMPILE_CACHE``: :func:`bnbench.options.compile_cache_dir`); returns the folder traced
    programs go to (:mod:`bnbench.engine.trace_cache`; None when off) and a note if the folder cannot be used."""
    folder = compile_cache_dir(os.environ, explicit, off=off)
    note = enable_compilation_cache(folder)
    return (folder / "traced" if folder is not None and note is None else None), note
