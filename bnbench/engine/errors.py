"""What the engine raises: options it cannot run with, and a block that ran out of device memory."""

from __future__ import annotations

from bnbench.errors import BnbenchError, RunFailure


class EngineError(BnbenchError):
    """The engine cannot run as asked (e.g. more devices requested than exist)."""


class OutOfMemory(RunFailure, EngineError):
    """A block ran out of device memory."""
