"""Traced programs kept on disk, so that a later process skips tracing as well as compiling.

JAX traces a jitted function again in every process, also when the compiled program then comes from
the persistent compilation cache (the trace is that cache's key): for a sweep's program that is most of
a second. The vectorized engine therefore keeps each traced and lowered program (``jax.export``) in
``<compile cache>/traced/``, keyed by everything the trace depends on: the text of bnbench's own
source files, the versions of JAX, jaxlib and optax, the program's signature, the device kind and the
shapes and dtypes of the arguments, and ``XLA_FLAGS``. A later process deserializes it (milliseconds)
and compiles it, which the compilation cache answers.

Entries are written whole (a temporary file renamed into place), so processes may share the folder; an
entry that cannot be read is traced again and rewritten, so a corrupt file costs a trace, never an
error. A program read back is the program that would be traced, so results do not change (tested).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import os
from pathlib import Path

import jax
from jax import export as export_lib

from bnbench.kernels import onednn
from bnbench.training.signature import HParams
from bnbench.training.program import ProgramOutput

SUFFIX = ".jaxexport"


@functools.lru_cache(maxsize=1)
def _register_pytrees() -> None:
    """Names the argument and result types for serialization (once per process)."""
    export_lib.register_namedtuple_serialization(HParams, serialized_name="bnbench.training.signature.HParams")
    export_lib.register_namedtuple_serialization(ProgramOutput, serialized_name="bnbench.training.program.ProgramOutput")


def source_digest(package: Path) -> str:
    """A hash of the names and text of every Python file under ``package``, sub-packages included."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    """The digest of bnbench's own sources (bnbench.models included): any edit traces afresh."""
    return source_digest(Path(__file__).resolve().parents[1])


def key(signature, conv: str, device, args) -> str:
    """The cache key of the program of ``signature`` with convolutions of form ``conv`` on a device of
    ``device``'s kind called with ``args``."""
    parts = [
        _source_digest(),
        *(f"{p}={importlib.metadata.version(p)}" for p in ("jax", "jaxlib", "optax")),
        repr(signature),
        conv,
        f"{device.platform}:{device.device_kind}",
        *(f"{leaf.shape}:{leaf.dtype}" for leaf in jax.tree_util.tree_leaves(args)),
        os.environ.get("XLA_FLAGS", ""),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def export(fn, args: tuple) -> export_lib.Exported:
    """``fn`` traced and lowered for ``args``. oneDNN's convolutions are custom calls, which ``jax.export``
    refuses by default because a program holding them runs only where they are registered: these are
    registered wherever bnbench builds such a program (:mod:`bnbench.kernels.onednn`)."""
    checks = [export_lib.DisabledSafetyCheck.custom_call(target) for target in onednn.TARGETS.values()]
    return export_lib.export(fn, disabled_checks=checks)(*args)


def load(folder: Path, program_key: str) -> export_lib.Exported | None:
    """The traced program stored under ``program_key``, or None if there is none or it cannot be read."""
    _register_pytrees()
    try:
        return export_lib.deserialize(bytearray((folder / f"{program_key}{SUFFIX}").read_bytes()))
    except Exception:  # noqa: BLE001 - a missing, truncated or corrupt entry is traced again
        return None


def save(folder: Path, program_key: str, exported: export_lib.Exported) -> None:
    """Stores ``exported`` whole (atomically); a folder that cannot be written keeps nothing."""
    _register_pytrees()
    path = folder / f"{program_key}{SUFFIX}"
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(exported.serialize())
        os.replace(tmp, path)
