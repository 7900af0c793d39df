"""Which runs of a grid train the same network on the same numbers.

A grid crosses every axis, so it holds configurations that differ only in settings the run never reads:
``placement = "none"`` under every norm kind (no norm layer is built), any placement under ``norm =
"none"`` (unless dropout or noise mark the place), and a norm setting without its
norm (``epsilon`` without a norm layer; ``momentum``, ``ghost_batch_size`` and BN's other options under
GroupNorm or LayerNorm; ``groups`` outside GroupNorm; each field's ``norms``,
:class:`bnbench.experiment.fields.FieldSpec`). Such runs give bitwise the same numbers (a test trains
them and compares), so a sweep trains each once per execution context and records it under every
configuration (:mod:`bnbench.sweeping.session`), each row's ``trains_as`` naming the training it shares; the paired
comparisons never pair a run with itself (:mod:`bnbench.stats.comparisons`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Hashable

from bnbench.experiment.fields import FIELD_DEFAULTS, FIELDS, RunConfig


def canonical(run: RunConfig) -> RunConfig:
    """``run`` with every setting it does not read at its default, ``norm = "none"`` where ``placement =
    "none"`` leaves no norm layer, and ``placement = "none"`` where there is no norm layer to place
    (unless dropout or noise, which keep their places without one): equal for runs that train the same."""
    norm = "none" if run.placement == "none" else run.norm
    placement = "none" if norm == "none" and not run.dropout and not run.noisy_bn else run.placement
    unread = {name: FIELD_DEFAULTS[name] for name, spec in FIELDS.items() if spec.norms is not None and norm not in spec.norms}
    return dataclasses.replace(run, norm=norm, placement=placement, **unread)


def trains_as(run: RunConfig) -> str:
    """The run id of :func:`canonical` ``(run)``: runs with equal ``trains_as`` train the same network
    on the same numbers."""
    return canonical(run).run_id


def shared_trainings(runs: list[RunConfig], context: Callable[[RunConfig], Hashable]) -> dict[str, list[RunConfig]]:
    """The runs of ``runs`` that train as an earlier one in the same execution ``context`` (a run's
    numbers depend on it too: :mod:`bnbench.training.context`), by the run id of the first run of their
    training (which alone needs training)."""
    first: dict[tuple, RunConfig] = {}
    copies: dict[str, list[RunConfig]] = {}
    for run in runs:
        trained = first.setdefault((trains_as(run), context(run)), run)
        if trained is not run:
            copies.setdefault(trained.run_id, []).append(run)
    return copies
