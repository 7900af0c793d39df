"""The norm sites an adapted model's swapped-in layers call: bnbench's ``norm`` of the forward pass in
progress, set by the adapter around each call of the model."""

from __future__ import annotations

import contextlib
import contextvars

# The norm of the forward pass in progress: the sites the adapted layers call.
_CURRENT: contextvars.ContextVar = contextvars.ContextVar("bnbench_norm")


@contextlib.contextmanager
def norm_in_use(norm):
    """Within the block, :func:`site` calls ``norm``."""
    token = _CURRENT.set(norm)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current():
    """The norm of the forward pass in progress (``norm(h)``, ``norm.act(h, fn)``)."""
    return _CURRENT.get()


def site(x):
    """The next norm site of the forward pass in progress, on ``x`` (channels last)."""
    return current()(x)
