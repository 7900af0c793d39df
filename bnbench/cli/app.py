"""The ``bnbench`` command line: parses arguments, calls the library, renders with rich."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from typer.core import TyperCommand, TyperGroup

# Only typer, rich and bnbench's light modules are imported here; each command imports what it uses
# (JAX, pandas, matplotlib) when it runs, so that help and argument errors come at once.
from bnbench import options
from bnbench.cli import terminal
from bnbench.errors import BnbenchError

if TYPE_CHECKING:
    from bnbench.sweeping.session import Session


class _FlagsWithoutType:
    """Help without the Python types Typer shows beside each parameter (``<bool>``, ``<list[Path]>``):
    a flag (``--dry-run``, ``--help``, ``--install-completion``) takes no value, and every other
    parameter names its value itself (``DIR``, ``KEY=V1,V2``)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
            elif param.param_type_name == "argument":
                param.display_type_rich = lambda ctx: None
        return params


class _Command(_FlagsWithoutType, TyperCommand):
    pass


class _Group(_FlagsWithoutType, TyperGroup):
    pass


app = typer.Typer(
    cls=_Group,
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Hard evidence about Batch Normalization: sweeps of small models, reports, BN kernel profiles.",
)
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bnbench {importlib.metadata.version('bnbench')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Hard evidence about Batch Normalization: sweeps of small models, reports, BN kernel profiles."""


def _fail(err: Exception, code: int = 2) -> typer.Exit:
    """Reports ``err`` in one line on stderr; the exit status to leave with."""
    # User text quoted in a message may hold line breaks or control characters: escape them.
    message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(err))
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=code)


@contextlib.contextmanager
def _one_line_errors():
    """Turns a :class:`bnbench.errors.BnbenchError` into one line on stderr and its exit code (2 for
    bad input, 1 for a failure while running): every command runs inside this."""
    try:
        yield
    except BnbenchError as err:
        raise _fail(err, err.exit_code) from None


@contextlib.contextmanager
def _stop_on_interrupt(stop: threading.Event):
    """The first Ctrl-C sets ``stop`` (the sweep ends once the runs in progress are saved); a second
    one interrupts at once."""

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        typer.echo("stopping after the runs in progress are saved (Ctrl-C again to abort now)", err=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


_DATA_DIR_HELP = (
    "Folder holding one sub-folder per data set (DIR/mnist/...); then the cache (~/.cache/bnbench) is "
    "searched, then the files are downloaded into it."
)


def _fetch(names: list[str], data_dir: Optional[Path]) -> None:
    """Downloads the published files of the data sets ``names`` that are not found locally, with a
    progress bar."""
    from bnbench import data
    from bnbench.data import files

    missing = data.to_download(names, data_dir)
    if not missing:
        return
    columns = (TextColumn("download {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, int] = {}

        def on_progress(label: str, done: int, total: int | None) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        for name in missing:
            folder = files.fetch(name, data.info(name).source, data_dir, on_progress)
            terminal.say(console, f"{name}: verified and saved in {folder}")


def _train_with_progress(session: Session, stop: threading.Event, program_cache: Optional[Path]) -> None:
    """A progress bar on a terminal; one line per finished run when output is piped or logged."""
    from bnbench.sweeping import session as sweep_lib

    todo = len(session.plan.runs) - len(session.done)
    if not todo:
        return
    records = sweep_lib.execute(session, stop, program_cache)
    axes = list(session.plan.spec.grid)
    if not console.is_terminal:
        for i, record in enumerate(records, 1):
            result, label = record.result, terminal.run_label(record.config, axes)
            terminal.say(console, terminal.run_line(i, todo, label, record.config.run_id, result.status, result.test_acc,
                                                result.wall_s))
            console.file.flush()
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("training", total=todo)
        for record in records:
            result = record.result
            progress.update(task, advance=1, description=f"last: {terminal.run_label(record.config, axes)} {result.status} "
                                                          f"test_acc={terminal.number(result.test_acc, 3)}")


def _train(session: Session, program_cache: Optional[Path]) -> None:
    """Trains an open sweep with progress; the first Ctrl-C stops once the runs in progress are saved."""
    plan = session.plan
    for note in session.notes:
        terminal.say(err_console, f"note: {note}")
    terminal.say(console, f"{plan.spec.name}: {terminal.plural(len(plan.runs), 'run')}, {len(session.done)} already in "
                        f"{plan.store.out_dir}, {len(plan.runs) - len(session.done)} to run")
    stop = threading.Event()
    resume_hint = f"finished runs are saved in {plan.store.out_dir}; run the same command again to resume"
    try:
        with _stop_on_interrupt(stop):
            _train_with_progress(session, stop, program_cache)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {resume_hint}", err=True)
        raise typer.Exit(code=130) from None
    if stop.is_set():
        typer.echo(f"stopped: {resume_hint}", err=True)
        raise typer.Exit(code=130)
    terminal.say(console, f"results: {plan.store.out_dir}/ (runs.csv, curves.csv; column meanings: bnbench columns)")


def _show_report(results_dir: Path, *, fmt: str = "table", plots: bool = True, plot_dir: Optional[Path] = None,
                 plot_format: str = "png", html: Optional[Path] = None, **options) -> None:
    """Prints a folder's report (:func:`bnbench.reporting.model.report`): its notes and plot paths on stderr,
    its tables on stdout; then writes its figures, and the HTML page ``html`` if given."""
    from bnbench.reporting import model

    result = model.report(results_dir, **options)
    for note in result.notes:
        terminal.say(err_console, f"note: {note}")
    terminal.report(console, result, fmt)
    figures = model.write_plots(results_dir, result.runs, result.metric, plot_dir, plot_format) if plots else []
    for path in figures:
        terminal.say(err_console, f"plot: {path}")
    if html is not None:
        terminal.say(err_console, f"page: {model.write_html(html, results_dir, result, figures)}")


_SET_HELP = (
    "Replace or add a grid axis: KEY=V1,V2 (repeatable); keys are the run fields (`bnbench columns`). "
    "A list value is dash-separated: widths=100-100,50 sweeps two widths. eval_stats takes one list: "
    "eval_stats=batch,precise evaluates every run both ways. BN momentum follows the flax/keras convention: "
    "running = momentum * running + (1 - momentum) * batch (PyTorch's momentum=0.1 is 0.9 here)."
)


# The sweep command's options, declared once here so that the command reads as what it does.
_Spec = Annotated[Path, typer.Argument(metavar="SPEC", help="Experiment spec (TOML), e.g. experiments/quickstart.toml.")]
_Out = Annotated[Optional[Path], typer.Option("--out", metavar="DIR", show_default="results/<spec name>",
                                              help="Output folder.")]
_Set = Annotated[list[str], typer.Option("--set", metavar="KEY=V1,V2", show_default=False, help=_SET_HELP)]
_Seeds = Annotated[Optional[str], typer.Option(
    "--seeds", metavar="N|auto", show_default="the spec's",
    help="Number of seeds (0..N-1), replacing the spec's; more seeds extend a sweep. auto: add seeds in rounds "
    "until every comparison the spec states is decided (a direction, or no difference beyond --margin), at most "
    "--max-seeds; each look spends its share of a 5% error rate, so stopping early does not inflate it.")]
_MaxSeeds = Annotated[int, typer.Option(
    "--max-seeds", min=3, metavar="N", help="With --seeds auto: the most seeds to run.")]
_Margin = Annotated[Optional[float], typer.Option(
    "--margin", min=0, clamp=False, metavar="D", show_default="the spec's margin, else none",
    help="With --seeds auto: a comparison is also decided once its interval rules out a difference beyond ±D.")]
_DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the expanded grid and run nothing.")]
_NoResume = Annotated[bool, typer.Option(
    "--no-resume", help="Discard earlier results in the output folder instead of skipping finished runs.")]
_Engine = Annotated[str, typer.Option(
    "--engine", metavar="vectorized|sequential",
    help="vectorized: runs sharing a compiled program train together in blocks on each device (vmap, scan; "
    "on CPU a conv net's convolutions as patches, one run per block, and ResNets one at a time, "
    "ResNets on GPU too, where that measured faster; on CPU ResNets on images compile with YNNPACK's "
    "element-wise fusions); "
    "sequential: one run at a time, a Python loop over jitted steps (the reference path).")]
_RunsPerDevice = Annotated[Optional[int], typer.Option(
    "--runs-per-device", min=1, metavar="N", show_default="from the program's memory, at most 2 on CPU, 16 on GPU",
    help="Runs vmapped together in one block on one device. A run's float32 numbers depend on it (XLA compiles "
    "each block size differently), never on the other runs of its block; runs.csv records it.")]
_Devices = Annotated[Optional[int], typer.Option(
    "--devices", min=1, metavar="N", show_default="all GPUs/TPUs; on CPU one per CPU the process may use",
    help="Blocks of runs trained at a time: one per GPU/TPU device, or on CPU this many side by side.")]
_ShardOption = Annotated[Optional[str], typer.Option(
    "--shard", metavar="I/N|auto/N",
    help="Run only part I of N of the grid. auto/N: I from the scheduler (a SLURM array's task id, a Kubernetes "
    "indexed job's index, a multi-process JAX run's process), so a re-submitted task is the same shard; auto: N "
    "too, from a whole SLURM array 0-(N-1), BNBENCH_SHARD_COUNT or JAX. Combine the parts with `bnbench merge`.")]
_MaxRuns = Annotated[int, typer.Option(
    "--max-runs", min=1, metavar="N", help="Refuse grids with more runs than this, unless --yes.")]
_Yes = Annotated[bool, typer.Option("--yes", help="Run the grid whatever its size.")]
_NoPlots = Annotated[bool, typer.Option("--no-plots", help="Do not write plots beside the CSVs.")]
_PlotFormat = Annotated[str, typer.Option(
    "--plot-format", metavar="|".join(options.PLOT_FORMATS),
    help="File format of the figures: png (300 dpi), pdf or svg (vector, for print).")]
_DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", metavar="DIR", show_default=f"${options.DATA_DIR_ENV}", help=_DATA_DIR_HELP)]
_CompileCache = Annotated[Optional[Path], typer.Option(
    "--compile-cache", metavar="DIR", show_default=f"${options.COMPILE_CACHE_ENV}, else ~/.cache/bnbench/xla",
    help="Folder where compiled programs are kept for later sweeps (never changes a result).")]
_NoCompileCache = Annotated[bool, typer.Option(
    "--no-compile-cache", help=f"Compile everything afresh (as {options.COMPILE_CACHE_ENV} set to off does).")]


def _check_plot_format(plot_format: str) -> None:
    """Refuses a --plot-format before anything runs (a sweep would otherwise train to fail at its end)."""
    if plot_format not in options.PLOT_FORMATS:
        raise BnbenchError(f"--plot-format: must be one of {', '.join(options.PLOT_FORMATS)}, got {plot_format!r}")


def _dry_run(plan) -> None:
    """The expanded grid, and whether a real run would be refused (and why)."""
    console.print(terminal.dry_run_table(plan.spec, plan.runs))
    try:
        plan.check_output()
    except BnbenchError as err:
        terminal.say(console, f"a real run would be refused: {err}")


@app.command(cls=_Command)
def sweep(
    spec: _Spec, out: _Out = None, set_: _Set = [], seeds: _Seeds = None, max_seeds: _MaxSeeds = options.DEFAULT_MAX_SEEDS,
    margin: _Margin = None, dry_run: _DryRun = False, no_resume: _NoResume = False, engine: _Engine = "vectorized",
    runs_per_device: _RunsPerDevice = None, devices: _Devices = None, shard: _ShardOption = None,
    max_runs: _MaxRuns = options.DEFAULT_MAX_RUNS, yes: _Yes = False, no_plots: _NoPlots = False,
    plot_format: _PlotFormat = "png", data_dir: _DataDir = None, compile_cache: _CompileCache = None,
    no_compile_cache: _NoCompileCache = False,
) -> None:
    """Train every run of a spec's grid and write runs.csv, curves.csv, spec.toml and meta.json; end with
    the summary and the spec's comparisons."""
    from bnbench.sweeping import session as sweep_lib

    with _one_line_errors():
        _check_plot_format(plot_format)
        auto = seeds == "auto"
        plan = sweep_lib.plan_file(spec, sets=set_, seeds=None if auto else sweep_lib.parse_seeds(seeds), shard=shard,
                                   out=out, engine=engine, resume=not no_resume, max_runs=None if yes else max_runs,
                                   data_dir=data_dir)
        if dry_run:
            return _dry_run(plan)
        from bnbench import engine as engine_lib

        program_cache, note = engine_lib.caches(compile_cache, off=no_compile_cache)
        if note:
            terminal.say(err_console, f"note: {note}")
        execution = dict(engine=engine, runs_per_device=runs_per_device, devices=devices)
        if auto:
            _until_decided(plan, max_seeds, margin, None if yes else max_runs, execution, program_cache)
        else:
            _sweep_plan(plan, execution, program_cache)
        _show_report(plan.store.out_dir, plots=not no_plots, plot_format=plot_format,
                     html=plan.store.out_dir / "report.html")


def _sweep_plan(plan, execution: dict, program_cache: Optional[Path], sequential: Optional[dict] = None) -> None:
    """Trains one plan: fetches its data, opens its folder, trains with progress."""
    from bnbench.sweeping import session as sweep_lib

    plan.check_output()
    _fetch(plan.spec.datasets, plan.data_dir)
    plan.load_data()
    with sweep_lib.open_sweep(plan, **execution, sequential=sequential) as session:
        _train(session, program_cache)


def _until_decided(plan, max_seeds: int, margin: Optional[float], max_runs: Optional[int], execution: dict,
                   program_cache: Optional[Path]) -> None:
    """``--seeds auto``: trains the plan at each look of a :mod:`bnbench.stats.group_sequential` design, until every
    comparison of the spec is decided or the last look is done."""
    from bnbench.results import frames
    from bnbench.stats import group_sequential
    from bnbench.sweeping import session as sweep_lib

    design = sweep_lib.sequential_design(plan, max_seeds, margin, max_runs)
    for look, seeds in enumerate(design.looks):
        looked = sweep_lib.replan(plan, seeds, resume=plan.resume or look > 0)
        _sweep_plan(looked, execution, program_cache, sequential=design.to_meta())
        result = group_sequential.look(frames.load_runs(plan.store.out_dir), plan.spec.comparisons, design)
        terminal.say(console, terminal.look_line(result, design))
        if result.decided:
            return


@app.command(cls=_Command)
def report(
    results_dirs: list[Path] = typer.Argument(
        ..., metavar="DIR [DIR2]", help="A folder written by `bnbench sweep` (finished, interrupted or merged); "
        "with a second folder, the two side by side: runs paired across them (a model's two versions, before and "
        "after a change), no plots."
    ),
    by: Optional[list[str]] = typer.Option(
        None, "--by", metavar="COLUMN", show_default="the swept axes", help="Group by this column (repeatable)."
    ),
    metric: str = typer.Option("test_acc", "--metric", metavar="COLUMN", help="Numeric runs.csv column to summarize."),
    compare: Optional[list[str]] = typer.Option(
        None,
        "--compare",
        metavar="AXIS=A,B",
        show_default="the spec's compare",
        help="Paired difference A − B over runs equal in every other field (seed too), with a paired Student-t "
        "95% interval, the difference it resolves, and the pairs an undecided one needs (an estimate); a "
        "direction is named only from 3 pairs up (repeatable).",
    ),
    fmt: str = typer.Option(
        "table", "--format", metavar="|".join(options.REPORT_FORMATS),
        help="table; markdown (to paste into a paper); csv (one table on stdout: the comparisons if any, else the summary).",
    ),
    no_plots: bool = typer.Option(False, "--no-plots", help="Do not write plots."),
    probe: Optional[str] = typer.Option(
        None, "--probe", metavar="NAME",
        help="Summarize this probe value (probes.csv: grad_norm, ics_distance, beta_smoothness, mean_gap, ...) "
        "per group and layer instead of --metric.",
    ),
    step: Optional[int] = typer.Option(
        None, "--step", metavar="N", show_default="the last step probed", help="With --probe: the step to summarize."
    ),
    plot_dir: Optional[Path] = typer.Option(
        None, "--plot-dir", metavar="DIR", show_default="DIR itself", help="Folder to write the plots into."
    ),
    plot_format: _PlotFormat = "png",
    html: Optional[Path] = typer.Option(
        None, "--html", metavar="FILE", help="Also write the report as one self-contained HTML page (offline, no "
        "script): the question, verdicts, tables, every figure, claims and provenance."),
) -> None:
    """Summarize a results folder again: mean, std, 95% CI and n over seeds, paired comparisons, plots;
    or compare two folders."""
    from bnbench.reporting import model

    with _one_line_errors():
        if fmt not in options.REPORT_FORMATS:
            raise BnbenchError(f"--format: must be one of {', '.join(options.REPORT_FORMATS)}, got {fmt!r}")
        _check_plot_format(plot_format)
        if len(results_dirs) == 2:
            return _show_two(results_dirs, fmt, metric, by=by, compare=compare, probe=probe, step=step, html=html)
        if len(results_dirs) > 2:
            raise BnbenchError(f"report: takes one folder, or two to compare, got {len(results_dirs)}")
        comparisons = [model.parse_comparison(c) for c in compare] if compare else None
        _show_report(results_dirs[0], fmt=fmt, plots=not no_plots, plot_dir=plot_dir, plot_format=plot_format, by=by,
                     metric=metric, comparisons=comparisons, probe=probe, step=step, html=html)


def _show_two(folders: list[Path], fmt: str, metric: str, **single_folder_options) -> None:
    """``report A B``: the two folders side by side (:func:`bnbench.reporting.model.report_folders`)."""
    from bnbench.reporting import model

    given = [f"--{name}" for name, value in single_folder_options.items() if value]
    if given:
        raise BnbenchError(f"{', '.join(given)}: applies to one folder; two are compared on their matching runs")
    result = model.report_folders(*folders, metric=metric)
    for note in result.notes:
        terminal.say(err_console, f"note: {note}")
    terminal.report(console, result, fmt)


@app.command(cls=_Command)
def profile(
    shape: Optional[list[str]] = typer.Option(
        None, "--shape", metavar="N,H,W,C", show_default="ResNet-like NHWC shapes and (N, 4096)",
        help="N,H,W,C or N,C (repeatable).",
    ),
    dtype: str = typer.Option(",".join(options.PROFILE_DTYPES), "--dtype", metavar="DTYPES", help="Comma-separated dtypes."),
    mode: str = typer.Option(
        ",".join(options.PROFILE_MODES), "--mode", metavar="MODES",
        help=f"Comma-separated, of {', '.join(options.PROFILE_MODES)}.",
    ),
    impl: str = typer.Option(
        ",".join(options.PROFILE_IMPLEMENTATIONS), "--impl", metavar="IMPLS", show_default="all",
        help=f"Comma-separated, of {', '.join(options.PROFILE_IMPLEMENTATIONS)}; missing peers are skipped.",
    ),
    repeat: int = typer.Option(15, "--repeat", min=3, metavar="K", help="Timed repeats per row, interleaved round-robin."),
    out: Path = typer.Option(Path("results") / "profile.csv", "--out", metavar="FILE", help="CSV file for the rows."),
) -> None:
    """Time BN kernels (train, grad, infer, fold) against peers and the device's copy bandwidth."""
    from bnbench.profiling import kernels as profile_lib

    with _one_line_errors():
        shapes = profile_lib.parse_shapes(shape)
        with console.status("profiling") as status:
            rows, notes = profile_lib.profile_to_csv(
                out, shapes, dtype.split(","), mode.split(","), impl.split(","), repeat=repeat,
                on_case=lambda c, i, n: status.update(f"profiling {i + 1}/{n}: {c.shape} {c.dtype} {c.mode}"),
            )
    terminal.profile_tables(console, rows, notes)
    terminal.say(console, f"rows: {out}")


@app.command(cls=_Command)
def datasets(
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", metavar="DIR", show_default=f"${options.DATA_DIR_ENV}", help=_DATA_DIR_HELP
    ),
    download: list[str] = typer.Option(
        [], "--download", metavar="NAME", show_default=False, help="Download this data set's files now (repeatable)."
    ),
) -> None:
    """List the data sets: sizes, input shape, and whether each is here (MD5-checked) or downloads."""
    from bnbench import data
    from bnbench.data import files

    with _one_line_errors():
        for name in download:
            data.info(name)
        _fetch(download, data_dir)
    console.print(terminal.datasets_table(data.availability(data_dir)))
    folders = ", ".join(map(str, files.search_roots(data_dir)))
    terminal.say(console, f"searched: {folders} (each holding one sub-folder per data set); files are MD5-checked when read")


@app.command(cls=_Command)
def merge(
    sources: list[Path] = typer.Argument(..., metavar="DIR...", help="Result folders of one spec, e.g. its --shard parts."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="New folder for the combined results."),
    prefer: Optional[Path] = typer.Option(
        None, "--prefer", metavar="DIR", help="Where folders hold one run with different results, keep this folder's."
    ),
    partial: bool = typer.Option(
        False, "--partial", help="Merge even if runs of the grid are in none of the folders (they are listed)."
    ),
    mixed_context: bool = typer.Option(
        False, "--mixed-context",
        help="Merge runs executed on other machines, software or engine options (report then groups by them).",
    ),
) -> None:
    """Combine the runs.csv/curves.csv of several folders of one spec, each run once, in grid order.

    Exits 1, writing nothing, if runs of the grid are in none of the folders (unless --partial), and 2
    if folders hold one run with different results (unless --prefer)."""
    from bnbench.results import store

    with _one_line_errors():
        merged = store.merge(sources, out, prefer=prefer, partial=partial, mixed_context=mixed_context)
    for note in merged.notes:
        terminal.say(err_console, f"note: {note}")
    terminal.say(console, f"merged {terminal.plural(merged.runs, 'run')} of the grid's {merged.grid_runs} into {out} "
                        f"({terminal.plural(merged.duplicates, 'duplicate record')} with the same results left out)")
    if merged.missing:
        listed = "; ".join(merged.missing[:5]) + ("; ..." if len(merged.missing) > 5 else "")
        terminal.say(err_console, f"partial merge: {terminal.plural(len(merged.missing), 'run')} of the grid are in none "
                                f"of the folders ({listed}); run their shards and merge again")


@app.command(cls=_Command)
def models(
    spec: _Spec, set_: _Set = [], data_dir: _DataDir = None,
) -> None:
    """Show the networks and data sets a spec resolves to: where each comes from, input, parameters."""
    from bnbench.training import inventory
    from bnbench.experiment import spec as spec_lib

    with _one_line_errors():
        resolved = inventory.resolve(spec_lib.with_overrides(spec_lib.load_spec(spec), sets=set_), data_dir)
    console.print(terminal.models_table(resolved))


@app.command(cls=_Command)
def columns() -> None:
    """The columns of runs.csv, curves.csv, activations.csv and probes.csv, and what each holds."""
    from bnbench.results import schema

    for name, table in (("runs.csv", schema.RUN_COLUMNS), ("curves.csv", schema.CURVE_COLUMNS),
                        ("activations.csv", schema.ACTIVATION_COLUMNS), ("probes.csv", schema.PROBE_COLUMNS)):
        console.print(terminal.columns_table(name, table))


@app.command(cls=_Command)
def explain(
    gamma: float = typer.Option(1.0, "--gamma", metavar="G", help="BN scale applied after normalizing."),
    beta: float = typer.Option(0.0, "--beta", metavar="B", help="BN offset applied after scaling."),
) -> None:
    """Show BN's training-mode forward pass on the classic 10 x 2 worked example, step by step."""
    from bnbench.norm import worked_example as explain_lib

    terminal.explanation(console, explain_lib.worked_example(gamma, beta), gamma, beta)


def main() -> None:
    """The console script.

    Once the command has returned, the process ends without the interpreter's teardown: every file a
    command writes is closed by then, and freeing JAX's backend and the modules of a sweep costs a
    sizeable part of a short sweep's process (`make bench-sweep`). The process exits normally under a
    tracer or profiler (coverage, cProfile, a debugger), so that they can write what they gathered,
    and in a multi-process JAX run, whose processes shut down together.
    """
    try:
        app()
    except SystemExit as finished:
        status = finished.code
    else:
        status = 0
    jax = sys.modules.get("jax")
    watched = sys.gettrace() is not None or sys.getprofile() is not None
    if not isinstance(status, (int, type(None))) or watched or (jax is not None and jax.process_count() > 1):
        raise SystemExit(status)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a reader that has gone (`bnbench columns | head`)
            stream.flush()
    os._exit(status or 0)
