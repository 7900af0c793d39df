"""What a run produces, on the host: :class:`RunResult`.

Three stages, three names: the compiled training program returns arrays
(:class:`bnbench.training.program.ProgramOutput`); :func:`summarize_output` turns them into a :class:`RunResult`
(status, learning curve, activation statistics and probe values; NaN from a divergence on); a sweep
appends it to the results folder as CSV rows (:mod:`bnbench.results.schema`) and yields the three together
(:class:`bnbench.sweeping.session.RunRecord`: the configuration, the result and its ``runs.csv`` row).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from bnbench.training.program import ProgramOutput

if TYPE_CHECKING:
    from bnbench.training.context import ExecutionContext
    from bnbench.training.signature import Signature

class CurvePoint(NamedTuple):
    step: int
    train_loss: float
    test_loss: float
    test_acc: float


class ActivationPoint(NamedTuple):
    """Statistics of one hidden layer's input to its nonlinearity at one evaluation point."""

    step: int
    layer: int  # 1-based
    p15: float
    p50: float
    p85: float
    mean: float
    std: float


class ProbePoint(NamedTuple):
    """One probe value at one step (see :mod:`bnbench.training.probes`)."""

    step: int
    layer: int  # 1-based; 0: the whole network
    probe: str
    value: float


class RunResult(NamedTuple):
    """What one run produced; metrics are NaN for a diverged run. ``test_loss``, ``test_acc`` and the
    curve's test metrics are those of the first ``eval_stats`` mode; ``test_acc_by_stats`` holds the
    final test accuracy of each requested mode."""

    status: str  # "ok" or "diverged"
    diverged_step: int | None  # first step (1-based) whose minibatch loss was NaN/inf
    final_train_loss: float
    test_loss: float
    test_acc: float
    curve: tuple[CurvePoint, ...]
    wall_s: float
    activations: tuple[ActivationPoint, ...] = ()
    test_acc_by_stats: dict[str, float] = {}
    probes: tuple[ProbePoint, ...] = ()
    num_params: int | None = None
    context: ExecutionContext | None = None  # how the engine executed the run (bnbench.training.context)


def _shortest(value: np.float32) -> float:
    # The float32 value as the shortest decimal that round-trips to it (0.654, not 0.6539999842643738).
    return float(str(np.float32(value)))


def summarize_output(sig: Signature, output: ProgramOutput, wall_s: float) -> RunResult:
    """Turns one run's arrays into a :class:`RunResult` (host-side; marks divergence)."""
    losses = np.asarray(output.train_losses, np.float32)
    test_loss = np.asarray(output.test_loss, np.float32)
    test_acc = np.asarray(output.test_acc, np.float32)
    bad = ~np.isfinite(losses)
    diverged_step = int(np.argmax(bad)) + 1 if bad.any() else None
    if diverged_step is None and not np.isfinite(test_loss[:, 0]).all():
        # Training stayed finite but evaluation with the running statistics did not.
        diverged_step = sig.eval_steps[int(np.argmax(~np.isfinite(test_loss[:, 0])))]
    bounds = (0, *sig.eval_steps)
    # From the divergence on, every metric is NaN: a diverged network's argmax still "scores" about
    # chance, which a learning curve would show as a real accuracy.
    curve = tuple(
        CurvePoint(end, math.nan, math.nan, math.nan)
        if diverged_step is not None and end >= diverged_step
        else CurvePoint(end, _shortest(losses[start:end].mean()), _shortest(test_loss[i, 0]), _shortest(test_acc[i, 0]))
        for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:]))
    )
    stats = np.asarray(output.activations, np.float32)
    activations = tuple(
        ActivationPoint(step, layer + 1, *(_shortest(v) for v in stats[i, layer]))
        for i, step in enumerate(sig.eval_steps)
        for layer in range(stats.shape[1])
    )
    probed = np.asarray(output.probes, np.float32)
    probe_points = tuple(
        ProbePoint(step, layer, name, math.nan if diverged_step is not None and step >= diverged_step else _shortest(value))
        for step, values in zip((0, *sig.eval_steps), probed)
        for (layer, name), value in zip(sig.probe_labels, values)
    )
    if diverged_step is not None:
        by_stats = dict.fromkeys(sig.eval_stats, math.nan)
        return RunResult("diverged", diverged_step, math.nan, math.nan, math.nan, curve, wall_s, activations, by_stats,
                         probe_points, sig.num_params)
    last = curve[-1]
    by_stats = {mode: _shortest(acc) for mode, acc in zip(sig.eval_stats, test_acc[-1])}
    return RunResult("ok", None, last.train_loss, last.test_loss, last.test_acc, curve, wall_s, activations, by_stats,
                     probe_points, sig.num_params)
