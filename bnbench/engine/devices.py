"""The slots blocks train in: which device each one uses, one slot per block trained at a time."""

from __future__ import annotations

import jax

from bnbench.engine.errors import EngineError
from bnbench.options import usable_cpus


def slots(count: int | None = None) -> tuple[jax.Device, ...]:
    """Where blocks train, one entry per block trained at a time.

    On CPU: the first host device, ``count`` times (default: once per CPU the process may use,
    :func:`bnbench.options.usable_cpus`). XLA runs programs called at once on one CPU device side by
    side, and compiles a program once per device, so one device trains as fast as one per core and
    compiles each program once. Elsewhere: the first ``count`` local devices (default: all).
    """
    devices = jax.local_devices()
    if devices[0].platform == "cpu":
        if count is not None and count < 1:
            raise EngineError(f"--devices: must be >= 1, got {count}")
        return (devices[0],) * (count or usable_cpus())
    if count is None:
        return tuple(devices)
    if not 1 <= count <= len(devices):
        raise EngineError(f"--devices: {count} requested, {len(devices)} available ({devices[0].platform})")
    return tuple(devices[:count])
