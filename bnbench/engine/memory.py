"""Device memory: what one vmapped run takes (an estimate from the model's shapes) and what a device has."""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from bnbench.training.signature import Signature

_DEFAULT_MEMORY = 8 << 30  # bytes, assumed where the device does not report its memory (CPU)


def run_memory(sig: Signature, num_test: int) -> int:
    """An upper estimate of the device memory one vectorized run takes, in bytes (float32 values).

    Counted from the model's shapes (``jax.eval_shape``, nothing computed): parameters with their
    gradients, optimizer moments and temporaries (x8); a training step's activations kept for the
    backward pass, for every example of the batch three arrays per nonlinearity (the layer's output,
    the norm layer's, the nonlinearity's), five in a residual net (also a unit's shortcut and sum);
    evaluation, which keeps at most two layers of the test split alive at once; the order of the epoch
    in progress and of the next, being drawn. Programs with XLA's convolutions; where they are patches
    (on CPU) a conv net's blocks hold one run whatever the estimate. Checked against XLA's buffer assignment
    (``compiled.memory_analysis()``) in the tests: never below it, at most 2x above.
    """
    model = sig.make_model()
    params, state = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    example = jax.ShapeDtypeStruct((1, *sig.input_shape), np.float32)
    preacts = jax.eval_shape(lambda p, s, x: model.preactivations(p, s, x), params, state, example)
    sizes = [math.prod(a.shape) for a in preacts] or [0]
    per_example = (5 if sig.model == "resnet" else 3) * sum(sizes) + math.prod(sig.input_shape)
    training = sig.batch_size * per_example
    evaluation = num_test * 2 * (max(sizes) + math.prod(sig.input_shape))
    return 4 * (8 * sig.num_params + max(training, evaluation) + 2 * sig.num_train)


def device_memory(device: jax.Device) -> int:
    """Bytes JAX may use on the device: its allocator's limit (on a GPU with JAX's default
    preallocation, the pool JAX took, 75% of the card); an assumed 8 GiB where the device reports
    nothing (CPU). Not what is free at the moment, which the data sets and programs already on the
    device change: a block's size must not depend on what ran before it."""
    stats = device.memory_stats() or {}
    return stats.get("bytes_limit", _DEFAULT_MEMORY)


def memory_available(device: jax.Device) -> int:
    """The memory the device has in all: its allocator's limit, or on the host its physical memory."""
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
        return stats["bytes_limit"]
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
