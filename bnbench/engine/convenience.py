"""Scheduling and training in one call, for scripts and tests."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

from bnbench.engine.blocks import assign_runs
from bnbench.engine.workers import train_blocks
from bnbench.experiment.fields import RunConfig
from bnbench.experiment.runs import completed
from bnbench.training.outcomes import RunResult


def run_all(
    configs: list[RunConfig],
    *,
    engine: str = "vectorized",
    runs_per_device: int | None = None,
    devices: int | None = None,
    done: frozenset[str] = frozenset(),
    stop: threading.Event | None = None,
    data_dir: str | Path | None = None,
    program_cache: Path | None = None,
    numerics: str | None = None,
) -> Iterator[tuple[RunConfig, RunResult]]:
    """Trains every run of ``configs`` whose id is not in ``done``
    (:func:`bnbench.engine.blocks.assign_runs`, then :func:`bnbench.engine.workers.train_blocks`);
    yields ``(config, result)`` as blocks finish. A config built by hand is completed first
    (:func:`bnbench.experiment.runs.completed`: ``eval_every`` and ``num_samples`` as a spec derives
    them), and yielded so. ``numerics``: :func:`bnbench.engine.blocks.assign_groups`."""
    configs = [completed(c) for c in configs]
    assignment = assign_runs(configs, engine=engine, runs_per_device=runs_per_device, devices=devices, data_dir=data_dir,
                             numerics=numerics)
    yield from train_blocks(assignment, done=done, stop=stop, program_cache=program_cache)


def train_run(config: RunConfig, engine: str = "sequential") -> RunResult:
    """Trains one run and returns its result."""
    ((_, result),) = run_all([config], engine=engine)
    return result
