"""Seeds until decided (``sweep --seeds auto``): a spec's grid trained at each look of a group-sequential
design (:mod:`bnbench.stats.group_sequential`), into one folder, until every comparison the spec states
is decided or the last look is trained.

Each look adds seeds ``0..n-1`` to the runs of the looks before it (they are resumed, not trained again)
and judges the comparisons on every run in the folder at the level that look spends.
"""

from __future__ import annotations

from typing import Callable, Iterator

from bnbench.errors import BnbenchError
from bnbench.experiment.spec import with_overrides
from bnbench.results import frames
from bnbench.stats import group_sequential
from bnbench.sweeping import session
from bnbench.sweeping.plan import GridTooLarge, SweepPlan


def until_decided_design(
    plan: SweepPlan, max_seeds: int, margin: float | None = None, max_runs: int | None = None
) -> group_sequential.Design:
    """The design for ``plan``: its first look at the spec's seed count (at least 3), its last at
    ``max_seeds``, deciding the spec's comparisons with ``margin`` (default: the spec's). Raises a
    :class:`bnbench.errors.BnbenchError` when the spec states no comparison, for a shard (each would stop
    on its own part), or when the last look's grid would exceed ``max_runs`` (None: no limit)."""
    spec = plan.spec
    if not spec.comparisons:
        raise BnbenchError(f'--seeds auto: {spec.source} states no comparison to decide; add compare = ["AXIS=A,B"]')
    if plan.shard is not None:
        raise BnbenchError("--seeds auto: decides on the whole grid; run it without --shard")
    if spec.seeds != tuple(range(len(spec.seeds))):
        raise BnbenchError(f"--seeds auto: adds seeds 0..N-1, but {spec.source} lists seeds {list(spec.seeds)}")
    design = group_sequential.design(len(spec.seeds), max_seeds, margin=spec.margin if margin is None else margin)
    most = spec.num_runs // len(spec.seeds) * max_seeds
    if max_runs is not None and most > max_runs:
        raise GridTooLarge(f"--max-seeds {max_seeds}: {most} runs exceed the limit of {max_runs}; pass --yes or "
                           "--max-runs to allow them, or fewer --max-seeds")
    return design


def with_seeds(plan: SweepPlan, seeds: int, resume: bool = True) -> SweepPlan:
    """``plan`` with ``seeds`` seeds (``0..seeds-1``), into the same folder."""
    spec = with_overrides(plan.spec, seeds=seeds)
    return plan._replace(spec=spec, runs=spec.expand(), resume=resume)


def until_decided(
    plan: SweepPlan, design: group_sequential.Design, sweep: Callable[..., object] = session.sweep
) -> Iterator[group_sequential.Look]:
    """Trains ``plan`` at each look of ``design`` and yields the look's comparisons, stopping after the
    first look that decides every comparison, or after the last look.

    Each look's plan is trained by ``sweep(looked_plan, design=design)``: :func:`bnbench.sweeping.session.sweep`
    (engine options bound with :func:`functools.partial`, or the command line's with progress), which records
    the design in ``meta.json``. Earlier results in the folder are discarded only where ``plan`` does not
    resume, and only before the first look."""
    for index, seeds in enumerate(design.looks):
        sweep(with_seeds(plan, seeds, resume=plan.resume or index > 0), design=design)
        look = group_sequential.look(frames.load_runs(plan.store.out_dir), plan.spec.comparisons, design)
        yield look
        if look.decided:
            return
