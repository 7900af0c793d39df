"""The training recipe around a model: learning-rate schedules and data augmentation, as pure functions
of the step and a key, evaluated inside the compiled training program.

Learning rate of update ``t`` (0-based: the first update is ``t = 0``) for peak rate ``lr``, ``T``
training steps and ``W`` warm-up steps::

    t < W:                   lr * t / W                         (linear warm-up from 0)
    "constant":              lr
    "step":                  lr * lr_decay ** (number of milestones m with t >= round(m * T))
    "cosine":                lr * (1 + cos(pi * (t - W) / (T - W))) / 2

``lr_milestones`` are fractions of training (e.g. ``(0.5, 0.75)``). With ``W = 0`` and ``"constant"``
the rate is the traced ``lr`` itself.

Augmentation ``"crop_flip"`` (He et al. 2016's CIFAR recipe): each image is zero-padded by 4 pixels on
every side, a random 28x28 (32x32, ...: the original size) window is cut from it, and it is flipped
left-right with probability 1/2; labels are untouched. Offsets and flips are drawn per image from the
step's key, so a run sees the same augmented batches whichever engine trains it, and on every re-run.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

CROP_PADDING = 4


class Schedule(NamedTuple):
    """The static part of a schedule (its kind and milestones); the peak rate, warm-up length and decay
    are traced."""

    kind: str = "constant"
    steps: int = 1
    milestones: tuple[float, ...] = ()
    warmup: bool = False

    @property
    def constant(self) -> bool:
        """Whether every update uses the peak rate (no decay, no warm-up)."""
        return self.kind == "constant" and not self.warmup


def learning_rate(schedule: Schedule, t, lr, warmup_steps, lr_decay) -> jax.Array:
    """The learning rate of update ``t`` (see the module docstring); ``t`` may be traced."""
    t = jnp.asarray(t, jnp.float32)
    lr = jnp.asarray(lr, jnp.float32)
    warmup_steps = jnp.asarray(warmup_steps, jnp.float32)
    if schedule.kind == "step":
        passed = sum((t >= round(m * schedule.steps)).astype(jnp.float32) for m in schedule.milestones)
        rate = lr * jnp.asarray(lr_decay, jnp.float32) ** passed
    elif schedule.kind == "cosine":
        progress = jnp.clip((t - warmup_steps) / jnp.maximum(schedule.steps - warmup_steps, 1.0), 0.0, 1.0)
        rate = lr * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    elif schedule.kind == "constant":
        rate = lr
    else:
        raise ValueError(f"unknown schedule {schedule.kind!r}")
    if schedule.warmup:
        rate = jnp.where(t < warmup_steps, lr * t / jnp.maximum(warmup_steps, 1.0), rate)
    return rate


def crop_flip_draws(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """The random choices of :func:`crop_flip` for ``n`` images: each window's top-left corner in the
    padded image (``(n, 2)``, in ``0 .. 2 * CROP_PADDING``; ``CROP_PADDING`` is the original position)
    and whether it is flipped (``(n,)``)."""
    offset_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(offset_key, (n, 2), 0, 2 * CROP_PADDING + 1)
    return offsets, jax.random.bernoulli(flip_key, 0.5, (n,))


def crop_flip(key: jax.Array, x: jax.Array) -> jax.Array:
    """Random 4-pixel-padded crops and left-right flips of the images ``x`` (``(N, H, W, C)``)."""
    n, height, width = x.shape[:3]
    offsets, flips = crop_flip_draws(key, n)
    padded = jnp.pad(x, [(0, 0), (CROP_PADDING,) * 2, (CROP_PADDING,) * 2, (0, 0)])

    def one(image, offset, flip):
        window = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, x.shape[3]))
        return jnp.where(flip, window[:, ::-1], window)

    return jax.vmap(one)(padded, offsets, flips)
