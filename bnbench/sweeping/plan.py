"""Planning a sweep: a spec file, the command line's overrides and its shard made into the runs to
train and the folder they go to, every check done and nothing created (``sweep --dry-run`` stops here).

The experiment layer (:mod:`bnbench.experiment`) checks a spec without JAX. What needs more is checked
here, where models and optax may be imported, before anything runs, for a dry run and a real sweep
alike: an optax optimizer's name and arguments, and each plugin network registered and built as the
engine will build it (its norm sites found, its logits checked). A spec of bnbench's own models and
optimizers imports neither; one that names a plugin or an optax optimizer loads JAX here, in its dry
run too. Every problem is a one-line :class:`bnbench.errors.BnbenchError`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Mapping, NamedTuple

from bnbench import data
from bnbench.data.references import ReferenceLoadError, check_keywords
from bnbench.errors import BnbenchError
from bnbench.experiment import rules
from bnbench.experiment.fields import RunConfig
from bnbench.experiment.runs import SpecError
from bnbench.experiment.spec import Spec, load_spec, with_overrides
from bnbench.options import DEFAULT_MAX_RUNS, ENGINES, MODELS, OPTIMIZERS, SHARD_COUNT_ENV
from bnbench.results.folder import ResultsStore


class SweepPlan(NamedTuple):
    """A validated sweep: every run of the grid (this shard's part), where results go, whether to resume
    there, the data folder and the shard."""

    spec: Spec
    runs: list[RunConfig]
    store: ResultsStore
    resume: bool
    data_dir: Path | None = None
    shard: Shard | None = None

    def check_output(self) -> None:
        """Raises a :class:`bnbench.errors.BnbenchError` if the output folder cannot take this sweep."""
        self.store.check_usable(self.spec, resume=self.resume)

    def load_data(self) -> None:
        """Loads every data set of the runs (from ``data_dir``, :mod:`bnbench.data.files`); raises a
        :class:`bnbench.errors.BnbenchError` if one is missing or holds unusable values."""
        for dataset, num_samples in {(r.dataset, r.num_samples) for r in self.runs}:
            data.load(dataset, num_samples, self.data_dir)


class Shard(NamedTuple):
    """Part ``index`` of ``count`` of a grid: the runs whose position in the grid is ``index`` mod
    ``count``; ``task`` says which scheduler task it was read from (``--shard auto``), if any."""

    index: int
    count: int
    task: str = ""

    @classmethod
    def parse(
        cls, text: str, environ: Mapping[str, str] = os.environ, jax_processes: Callable[[], tuple[int, int]] | None = None
    ) -> Shard:
        """Reads ``i/n`` with ``0 <= i < n``, or ``auto`` / ``auto/n`` (see :func:`shard_from_scheduler`);
        raises :class:`ShardError` otherwise."""
        index, sep, count = text.partition("/")
        if index == "auto":
            return shard_from_scheduler(environ, count or None, jax_processes)
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            shard = None
        if not sep or shard is None or not 0 <= shard.index < shard.count:
            raise ShardError(f"--shard: expected i/n with 0 <= i < n, or auto, got {text!r}")
        return shard


def _jax_processes() -> tuple[int, int]:
    import jax  # here: only a run with no scheduler variables asks JAX

    return jax.process_index(), jax.process_count()


def shard_from_scheduler(
    environ: Mapping[str, str], count_text: str | None = None, jax_processes: Callable[[], tuple[int, int]] | None = None
) -> Shard:
    """This process's shard, from the first scheduler found. The count is ``count_text`` (``--shard
    auto/N``) or ``$BNBENCH_SHARD_COUNT`` where given, so that a task is the same shard whichever part of
    its job runs (a re-submitted SLURM task, a retried Kubernetes index):

    * a SLURM job array: shard ``SLURM_ARRAY_TASK_ID``; without a count, the array's size, read only
      where the array is the whole of ``0..N-1`` (a first submission), since a re-submission of some
      tasks (``--array=3``) or an array of one task would otherwise make one task the whole grid;
    * a Kubernetes indexed job: shard ``JOB_COMPLETION_INDEX``, of a count that must be given;
    * a multi-process JAX run (``jax.distributed.initialize()`` called): ``jax.process_index()`` of
      ``jax.process_count()``, which must agree with a count given.

    Raises :class:`ShardError` when no scheduler is found or its variables do not make a shard.
    """
    try:
        given = count_text if count_text is not None else environ.get(SHARD_COUNT_ENV)
        count = int(given) if given is not None else None
        if count is not None and count < 1:
            raise ShardError(f"--shard auto: the shard count must be at least 1, got {count}")
        if "SLURM_ARRAY_TASK_ID" in environ:
            index = int(environ["SLURM_ARRAY_TASK_ID"])
            total = count if count is not None else _slurm_array_size(environ)
            task = f"SLURM array job {environ.get('SLURM_ARRAY_JOB_ID', '?')} task {index}"
        elif "JOB_COMPLETION_INDEX" in environ:
            index, total = int(environ["JOB_COMPLETION_INDEX"]), count
            task = f"Kubernetes indexed job {environ.get('JOB_NAME', '?')} index {index}"
            if total is None:
                raise ShardError(f"--shard auto: JOB_COMPLETION_INDEX is set but not the number of completions: pass "
                                 f"--shard auto/N or set {SHARD_COUNT_ENV}")
        else:
            index, total = (jax_processes or _jax_processes)()
            if total == 1:
                raise ShardError("--shard auto: no scheduler found (SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX, or a "
                                 "multi-process JAX run); pass --shard I/N")
            if count is not None and count != total:
                raise ShardError(f"--shard auto/{count}: the JAX run has {total} processes")
            task = f"JAX process {index} of {total}"
    except (KeyError, ValueError) as err:
        raise ShardError(f"--shard auto: cannot read the scheduler's variables ({err})") from None
    if not 0 <= index < total:
        raise ShardError(f"--shard auto: {task} is outside shards 0..{total - 1}")
    return Shard(index, total, task)


def _slurm_array_size(environ: Mapping[str, str]) -> int:
    """The size of a SLURM array that is the whole of ``0..N-1``; raises :class:`ShardError` otherwise."""
    first, last, step, size = (int(environ.get(f"SLURM_ARRAY_TASK_{k}", d)) for k, d in
                               (("MIN", "0"), ("MAX", "-1"), ("STEP", "1"), ("COUNT", "0")))
    if first != 0 or step != 1 or last != size - 1 or size < 2:
        running = f"task {first}" if size == 1 else f"tasks {first}-{last}" + (f":{step}" if step != 1 else "")
        raise ShardError(f"--shard auto: this SLURM array runs {running}, not the whole of 0-(N-1), so its size is "
                         "not the shard count (a re-submitted task would run the whole grid): pass --shard auto/N, N "
                         "the number of shards")
    return size


class ShardError(BnbenchError):
    """A malformed ``--shard``."""


class GridTooLarge(BnbenchError):
    """A grid with more runs than the caller allowed."""


def plan(
    spec: Spec,
    out_dir: str | Path,
    *,
    resume: bool = True,
    shard: Shard | None = None,
    max_runs: int | None = DEFAULT_MAX_RUNS,
    data_dir: Path | None = None,
) -> SweepPlan:
    """Expands ``spec`` (as :func:`load_checked` returns it: its plugins registered; this shard's part of
    it) and checks its size and every run of the grid (:func:`check_runs`: a swept ``dtype`` too); reads no
    data, writes nothing (:meth:`SweepPlan.check_output` and :meth:`SweepPlan.load_data` check the rest).

    The size is checked before the grid is built (a grid of more than ``max_runs`` runs is refused at
    once; ``None`` for no limit), and a shard with no run of the grid is refused. Raises a
    :class:`bnbench.errors.BnbenchError` on any problem.
    """
    total = spec.num_runs
    size = len(range(shard.index, total, shard.count)) if shard is not None else total
    if max_runs is not None and size > max_runs:
        raise GridTooLarge(
            f"{spec.source}: grid: {size} runs exceed the limit of {max_runs}; pass --yes to run them all "
            "or --max-runs to change the limit"
        )
    if size == 0:
        raise ShardError(f"--shard {shard.index}/{shard.count}: nothing to run, the grid has only {total} runs")
    runs = spec.expand()
    check_runs(runs, spec.source)
    if shard is not None:
        runs = runs[shard.index :: shard.count]
    return SweepPlan(spec, runs, ResultsStore(out_dir, spec.argument_columns), resume, data_dir, shard)


def plan_file(
    spec: str | Path | Spec,
    *,
    sets: list[str] = (),
    seeds: int | None = None,
    shard: str | None = None,
    out: str | Path | None = None,
    engine: str = "vectorized",
    resume: bool = True,
    max_runs: int | None = DEFAULT_MAX_RUNS,
    data_dir: Path | None = None,
) -> SweepPlan:
    """The :func:`plan` of the spec file ``spec`` (or of a :class:`Spec`, ``bnbench.sweep``'s) with the
    command line's overrides (``--set``, ``--seeds``) and ``--shard`` (``I/N`` or ``auto``); the output
    folder defaults to ``results/<spec name>`` (``-shard<I>of<N>`` for a shard). ``engine`` is checked by
    name."""
    if engine not in ENGINES:
        raise BnbenchError(f"--engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
    spec = (checked if isinstance(spec, Spec) else load_checked)(spec, sets=sets, seeds=seeds)
    part = Shard.parse(shard) if shard else None
    default = Path("results") / (spec.name + (f"-shard{part.index}of{part.count}" if part else ""))
    return plan(spec, out or default, resume=resume, shard=part, max_runs=max_runs, data_dir=data_dir)


def parse_seeds(text: str | None) -> int | None:
    """``--seeds N`` as a count (None: the spec's); raises :class:`bnbench.errors.BnbenchError` for
    anything but a positive integer (``auto`` is the caller's)."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise BnbenchError(f"--seeds: expected a count of seeds or auto, got {text!r}") from None


def load_checked(path: str | Path, *, sets: list[str] = (), seeds: int | None = None) -> Spec:
    """The spec file ``path`` with the command line's overrides (``--set``, ``--seeds``), every check
    done (:func:`check_spec`) and its plugin networks registered: ``bnbench.load_spec``. Errors name the
    spec file, or ``--set`` (``--seeds``) where only the overrides cause them."""
    return checked(load_spec(path, validate=False), sets=sets, seeds=seeds)


def checked(spec: Spec, *, sets: list[str] = (), seeds: int | None = None) -> Spec:
    """``spec`` as :func:`load_checked` gives a spec file's: with the overrides, every check done
    (:func:`check_spec`, again for a spec already checked: it is cheap and idempotent), its plugin
    networks registered."""
    check_spec(spec, spec.source)
    if not sets and seeds is None:
        return spec
    updated = with_overrides(spec, sets=sets, seeds=seeds, validate=False)
    check_spec(updated, "--set" if sets else "--seeds")
    return updated


def check_spec(spec: Spec, source: str) -> None:
    """The checks of ``spec`` that its layer leaves to this one, in the order a spec's errors are told:
    the optimizers' names, then its plugin networks registered (:func:`bnbench.models.register_plugin`),
    then each combination of its grid (:meth:`bnbench.experiment.spec.Spec.validate`, then
    :func:`check_runs`). Raises :class:`bnbench.experiment.runs.SpecError` naming ``source``."""
    _check_optimizer_names(spec, source)
    _register_plugins(spec, source)
    check_runs(spec.validate(source), source)


def _check_optimizer_names(spec: Spec, source: str) -> None:
    """Refuses an optimizer that is neither bnbench's own nor optax's, as the field's rule would name it."""
    swept = spec.grid.get("optimizer", [])
    written = [("optimizer", spec.values["optimizer"]), *(("grid.optimizer", value) for value in swept)]
    others = [(label, value) for label, value in written if value not in OPTIMIZERS]
    if not others:
        return
    # Here: optax's names import optax, hence JAX: a spec naming an optax optimizer loads JAX in its dry run.
    from bnbench.training import optimizers

    rule = rules.choice(optimizers.choices)
    for label, value in others:
        message = rule.check(value)
        if message:
            raise SpecError(source, label, message)


def _register_plugins(spec: Spec, source: str) -> None:
    plugins = [m for m in spec.axis("model") if m not in MODELS]
    if not plugins:
        return
    from bnbench import models  # here: a plugin network needs JAX, built-in specs plan without it

    for text in plugins:
        try:
            models.register_plugin(text, spec.base_dir)
        except BnbenchError as err:
            raise SpecError(source, "model", str(err)) from None


def check_runs(runs: list[RunConfig], source: str) -> None:
    """Refuses a run whose optimizer takes other arguments than it is given, or whose plugin network
    (registered) does not build for it, naming ``source``; distinct networks are built once."""
    for run in runs:
        if run.optimizer not in OPTIMIZERS or run.optimizer_args:
            _check_optimizer_args(run, source)
        if run.model not in MODELS:
            _check_plugin(run, source)


def _check_optimizer_args(run: RunConfig, source: str) -> None:
    from bnbench.training import optimizers  # here: optax imports JAX, which bnbench's own optimizers do without

    problem = optimizers.check_args(run.optimizer, dict(run.optimizer_args))
    if problem:
        raise SpecError(source, "optimizer_args", problem)


def _check_plugin(run: RunConfig, source: str) -> None:
    """Builds the run's plugin network as the engine will (its sites found, its logits checked), so that
    a broken plugin is refused before anything trains."""
    from bnbench import models  # here: a plugin network needs JAX, built-in specs plan without it

    found = models.PLUGINS[run.model]
    try:
        check_keywords(found.function, dict(run.model_args), found.where, "model")
        _built(run.model, run.model_args, found.source, run.dataset, run.placement, run.norm, run.dtype)
    except ReferenceLoadError as err:
        raise SpecError(source, "model", str(err)) from None


@functools.lru_cache(maxsize=64)
def _built(model: str, model_args: tuple, source: str, dataset: str, placement: str, norm: str, dtype: str):
    """The plugin network of one combination, built and traced once per combination."""
    from bnbench import models  # here: a plugin network needs JAX, built-in specs plan without it

    info = data.info(dataset)
    return models.make_model(model, input_shape=info.input_shape, widths=(), num_classes=info.num_classes,
                             placement=placement, norm=models.Normalization(norm), dtype=dtype, model_args=model_args,
                             model_source=source)
