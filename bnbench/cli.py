"""The ``bnbench`` command line: parses arguments, calls the library, renders with rich."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Optional

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
from bnbench import context, options, render
from bnbench.errors import BnbenchError

if TYPE_CHECKING:
    from bnbench.sweep import Session


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
    """Reports ``err`` in one line on stderr; exit code 2 for bad input, 1 for a failure while running."""
    # User text quoted in a message may hold line breaks or control characters: escape them.
    message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(err))
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=code)


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


def _report(
    out_dir: Path,
    *,
    by: list[str] | None = None,
    metric: str = "test_acc",
    comparison: tuple[str, str, str] | None = None,
    fmt: str = "table",
    plots: bool = True,
    probe: str | None = None,
    step: int | None = None,
    plot_dir: Path | None = None,
) -> None:
    """Prints the summary (and a paired comparison) of a results folder and writes its plots (into
    ``plot_dir``, default the folder itself).

    Everything that can fail on the user's arguments is checked before anything is printed; plots that
    cannot be written are reported after the tables (:class:`PlotsNotWritten`). Only the tables go to
    stdout; notes and plot paths go to stderr. With ``fmt="csv"`` stdout holds one table: the
    comparison when one is asked for, else the summary. With ``probe`` the summary is that of the probe
    value at ``step`` (default: the last probed) per group and layer, instead of ``metric``'s.
    """
    from bnbench import frames, summary

    runs = frames.load_runs(out_dir)
    if runs.empty:
        raise frames.LoadError(f"{out_dir / 'runs.csv'}: holds no finished run yet")
    for column in by or []:
        if column not in runs:
            raise frames.LoadError(f"--by: no column {column!r} in {out_dir / 'runs.csv'}")
    summary.check_metric(runs, metric)
    paired = summary.compare(runs, *comparison, metric=metric) if comparison else None
    for note in runs.attrs["notes"]:
        render.say(err_console, f"note: {note}")
    mixed = [a for a in summary.swept_axes(runs) if a in context.COLUMNS]
    if mixed and by is None:
        render.say(err_console, f"note: these runs executed in several contexts ({', '.join(mixed)}): shown apart")
    by = summary.swept_axes(runs) if by is None else by
    name = ", ".join(runs["spec"].astype(str).unique()) or out_dir.name
    if probe:
        table, step = summary.summarize_probe(runs, frames.load_probes(out_dir), probe, step, by)
        by, metric = [*by, "layer"], probe
        title = f"{name}: {probe} at step {step} over seeds ({render.plural(len(runs), 'run')})"
    else:
        table, title = summary.summarize(runs, by, metric), render.summary_title(name, metric, len(runs))
    if fmt == "csv":
        typer.echo((paired if paired is not None else table).to_csv(index=False), nl=False)
    else:
        header, rows = render.summary_cells(table, by)
        render.print_table(console, header, rows, title, fmt, best=None if probe else render.best_row(table, metric))
    if paired is not None and fmt != "csv":
        axis, a, b = comparison
        group_by = [c for c in summary.swept_axes(runs) if c != axis]
        header, rows = render.compare_cells(paired, group_by, a, b)
        title = f"paired differences in {metric}: {axis}={a} minus {b}"
        render.print_table(console, header, rows, title, fmt)
    if plots:
        _write_plots(out_dir, plot_dir or out_dir, runs, metric)


class PlotsNotWritten(BnbenchError):
    """The tables were printed, the plots could not be written."""


def _write_plots(out_dir: Path, plot_dir: Path, runs, metric: str) -> None:
    from bnbench import frames, results
    from bnbench import plots as plot_lib

    hint = "the tables above are complete; pass --plot-dir DIR to write the plots elsewhere, or --no-plots"
    try:
        results.ResultsStore(plot_dir).check_writable()
        plot_dir.mkdir(parents=True, exist_ok=True)
        curves, activations = frames.load_curves(out_dir), frames.load_activations(out_dir)
        paths = plot_lib.write_plots(plot_dir, runs, curves, activations, metric, frames.load_probes(out_dir))
    except results.ResultsError as err:
        raise PlotsNotWritten(f"{err}: cannot write plots there; {hint}") from None
    except OSError as err:
        raise PlotsNotWritten(f"{plot_dir}: cannot write plots ({err.strerror or err}); {hint}") from None
    for path in paths:
        render.say(err_console, f"plot: {path}")


_DATA_DIR_HELP = (
    "Folder holding one sub-folder per data set (DIR/mnist/...); then the cache (~/.cache/bnbench) is "
    "searched, then the files are downloaded into it."
)


def _fetch(names: list[str], data_dir: Optional[Path]) -> None:
    """Downloads the published files of the data sets ``names`` that are not found locally."""
    from bnbench import data, datafiles

    sources = {n: data.info(n).source for n in names}
    missing = [n for n, source in sources.items() if source and not datafiles.locate(n, source, data_dir)]
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
            folder = datafiles.fetch(name, sources[name], data_dir, on_progress)
            render.say(console, f"{name}: verified and saved in {folder}")


def _train_with_progress(session: Session, stop: threading.Event, program_cache: Optional[Path]) -> None:
    """A progress bar on a terminal; one line per finished run when output is piped or logged."""
    from bnbench import sweep as sweep_lib

    todo = len(session.plan.runs) - len(session.done)
    if not todo:
        return
    records = sweep_lib.execute(session, stop, program_cache)
    if not console.is_terminal:
        for i, record in enumerate(records, 1):
            result = record.result
            render.say(console, render.run_line(i, todo, record.config.run_id, result.status, result.test_acc, result.wall_s))
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
            progress.update(task, advance=1, description=f"last: {result.status} test_acc={render.number(result.test_acc, 3)}")


_SET_HELP = (
    "Replace or add a grid axis: KEY=V1,V2 (repeatable); keys are the run fields (`bnbench columns`). "
    "A list value is dash-separated: widths=100-100,50 sweeps two widths. eval_stats takes one list: "
    "eval_stats=batch,precise evaluates every run both ways. BN momentum follows the flax/keras convention: "
    "running = momentum * running + (1 - momentum) * batch (PyTorch's momentum=0.1 is 0.9 here)."
)


@app.command(cls=_Command)
def sweep(
    spec: Path = typer.Argument(..., metavar="SPEC", help="Experiment spec (TOML), e.g. experiments/quickstart.toml."),
    out: Optional[Path] = typer.Option(
        None, "--out", metavar="DIR", show_default="results/<spec name>", help="Output folder."
    ),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=V1,V2", show_default=False, help=_SET_HELP),
    seeds: Optional[int] = typer.Option(
        None, "--seeds", metavar="N", help="Number of seeds (0..N-1), replacing the spec's; more seeds extend a sweep."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the expanded grid and run nothing."),
    no_resume: bool = typer.Option(
        False, "--no-resume", help="Discard earlier results in the output folder instead of skipping finished runs."
    ),
    engine: str = typer.Option(
        "vectorized",
        "--engine",
        metavar="vectorized|sequential",
        help="vectorized: runs sharing a compiled program train together in blocks on each device (vmap, scan; "
        "convolutional nets one at a time on CPU, ResNets on GPU, where that measured faster); "
        "sequential: one run at a time, a Python loop over jitted steps (the reference path).",
    ),
    runs_per_device: Optional[int] = typer.Option(
        None, "--runs-per-device", min=1, metavar="N", show_default="from the program's memory, at most 2 on CPU, 16 on GPU",
        help="Runs vmapped together in one block on one device. A run's float32 numbers depend on it (XLA "
        "compiles each block size differently), never on the other runs of its block; runs.csv records it.",
    ),
    devices: Optional[int] = typer.Option(
        None, "--devices", min=1, metavar="N", show_default="all GPUs/TPUs; on CPU one per CPU the process may use",
        help="Blocks of runs trained at a time: one per GPU/TPU device, or on CPU this many side by side.",
    ),
    shard: Optional[str] = typer.Option(
        None, "--shard", metavar="I/N|auto",
        help="Run only part I of N of the grid; auto: I and N from a SLURM job array, a Kubernetes indexed job "
        "(auto/N, or BNBENCH_SHARD_COUNT) or a multi-process JAX run. Combine the parts with `bnbench merge`."
    ),
    max_runs: int = typer.Option(
        options.DEFAULT_MAX_RUNS, "--max-runs", min=1, metavar="N", help="Refuse grids with more runs than this, unless --yes."
    ),
    yes: bool = typer.Option(False, "--yes", help="Run the grid whatever its size."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Do not write PNG plots beside the CSVs."),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", metavar="DIR", show_default=f"${options.DATA_DIR_ENV}", help=_DATA_DIR_HELP
    ),
    compile_cache: Optional[Path] = typer.Option(
        None, "--compile-cache", metavar="DIR", show_default=f"${options.COMPILE_CACHE_ENV}, else ~/.cache/bnbench/xla",
        help="Folder where compiled programs are kept for later sweeps (never changes a result).",
    ),
    no_compile_cache: bool = typer.Option(
        False, "--no-compile-cache", help=f"Compile everything afresh (as {options.COMPILE_CACHE_ENV} set to off does)."
    ),
) -> None:
    """Train every run of a spec's grid and write runs.csv, curves.csv, spec.toml and meta.json."""
    from bnbench import sweep as sweep_lib
    from bnbench.spec import load_spec, with_overrides

    try:
        resolved = with_overrides(load_spec(spec), sets=set_, seeds=seeds)
        part = sweep_lib.Shard.parse(shard) if shard else None
        if engine not in options.ENGINES:
            raise BnbenchError(f"--engine: must be one of {', '.join(options.ENGINES)}, got {engine!r}")
        default_out = Path("results") / (resolved.name + (f"-shard{part.index}of{part.count}" if part else ""))
        plan_options = dict(resume=not no_resume, shard=part, max_runs=None if yes else max_runs, data_dir=data_dir)
        if dry_run:
            plan = sweep_lib.plan(resolved, out or default_out, check_data=False, check_output=False, **plan_options)
    except BnbenchError as err:
        raise _fail(err) from None
    if dry_run:
        console.print(render.dry_run_table(plan.spec, plan.runs))
        try:
            plan.store.check_usable(plan.spec, resume=plan.resume)
        except BnbenchError as err:
            render.say(console, f"a real run would be refused: {err}")
        return
    from bnbench import engine as engine_lib

    try:
        engine_lib.validate(engine, devices)
    except BnbenchError as err:
        raise _fail(err) from None
    cache = options.compile_cache_dir(os.environ, compile_cache, off=no_compile_cache)
    cache_note = engine_lib.enable_compilation_cache(cache)
    if cache_note:
        render.say(err_console, f"note: {cache_note}")
    program_cache = cache / "traced" if cache is not None and not cache_note else None
    try:
        _fetch(resolved.datasets, data_dir)
    except BnbenchError as err:
        raise _fail(err, code=1) from None
    try:
        plan = sweep_lib.plan(resolved, out or default_out, **plan_options)
        session = sweep_lib.open_sweep(plan, engine=engine, runs_per_device=runs_per_device, devices=devices)
        with session as opened:
            _run_session(opened, program_cache, plots=not no_plots)
    except (BnbenchError, OSError) as err:
        raise _fail(err) from None


def _run_session(session: Session, program_cache: Optional[Path], *, plots: bool) -> None:
    """Trains an open sweep with progress and a resumable interrupt, then prints its report."""
    for note in session.notes:
        render.say(err_console, f"note: {note}")
    plan, done = session.plan, session.done
    render.say(
        console,
        f"{plan.spec.name}: {render.plural(len(plan.runs), 'run')}, {len(done)} already in {plan.store.out_dir}, "
        f"{len(plan.runs) - len(done)} to run",
    )
    stop = threading.Event()
    resume_hint = f"finished runs are saved in {plan.store.out_dir}; run the same command again to resume"
    try:
        with _stop_on_interrupt(stop):
            _train_with_progress(session, stop, program_cache)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {resume_hint}", err=True)
        raise typer.Exit(code=130) from None
    except BnbenchError as err:
        raise _fail(err, code=1) from None
    if stop.is_set():
        typer.echo(f"stopped: {resume_hint}", err=True)
        raise typer.Exit(code=130)
    render.say(console, f"results: {plan.store.out_dir}/ (runs.csv, curves.csv; column meanings: bnbench columns)")
    try:
        _report(plan.store.out_dir, plots=plots)
    except BnbenchError as err:
        raise _fail(err, code=1) from None


@app.command(cls=_Command)
def report(
    results_dir: Path = typer.Argument(
        ..., metavar="DIR", help="A folder written by `bnbench sweep` (finished, interrupted or merged)."
    ),
    by: Optional[list[str]] = typer.Option(
        None, "--by", metavar="COLUMN", show_default="the swept axes", help="Group by this column (repeatable)."
    ),
    metric: str = typer.Option("test_acc", "--metric", metavar="COLUMN", help="Numeric runs.csv column to summarize."),
    compare: Optional[str] = typer.Option(
        None,
        "--compare",
        metavar="AXIS=A,B",
        help="Paired difference A − B over runs equal in every other field (seed too), with a paired Student-t "
        "95% interval; a direction is named only from 3 pairs up.",
    ),
    fmt: str = typer.Option(
        "table", "--format", metavar="|".join(options.REPORT_FORMATS),
        help="table; markdown (to paste into a paper); csv (one table on stdout: the comparison if --compare, else the summary).",
    ),
    no_plots: bool = typer.Option(False, "--no-plots", help="Do not write PNG plots."),
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
) -> None:
    """Summarize a results folder again: mean, std, 95% CI and n over seeds, paired comparisons, plots."""
    try:
        if probe and compare:
            raise BnbenchError("--probe and --compare: pass one of them (a comparison is of a runs.csv metric)")
        if step is not None and not probe:
            raise BnbenchError("--step: applies to --probe only")
        if fmt not in options.REPORT_FORMATS:
            raise BnbenchError(f"--format: must be one of {', '.join(options.REPORT_FORMATS)}, got {fmt!r}")
        comparison = None
        if compare:
            axis, _, values = compare.partition("=")
            pair = values.split(",")
            if not axis or len(pair) != 2 or not all(pair):
                raise BnbenchError(f"--compare: expected AXIS=A,B, got {compare!r}")
            comparison = (axis, pair[0], pair[1])
        _report(results_dir, by=by, metric=metric, comparison=comparison, fmt=fmt, plots=not no_plots, probe=probe,
                step=step, plot_dir=plot_dir)
    except PlotsNotWritten as err:
        raise _fail(err, code=1) from None
    except BnbenchError as err:
        raise _fail(err) from None


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
    from bnbench import profile as profile_lib
    from bnbench import results

    try:
        shapes = [tuple(int(d) for d in s.split(",")) for s in shape] if shape else list(profile_lib.DEFAULT_SHAPES)
    except ValueError:
        raise _fail(BnbenchError(f"--shape: expected comma-separated integers such as 32,56,56,64, got {shape}")) from None
    if any(len(s) not in (2, 4) or min(s) < 1 for s in shapes):
        raise _fail(BnbenchError(f"--shape: each shape is N,C or N,H,W,C with sizes >= 1, got {shape}"))
    unknown = [m for m in mode.split(",") if m not in options.PROFILE_MODES]
    if unknown:
        raise _fail(BnbenchError(f"--mode: must be among {', '.join(options.PROFILE_MODES)}, got {', '.join(unknown)}"))
    try:
        if out.is_dir():
            raise BnbenchError(f"--out: {out} is a folder; give a CSV file name such as {out / 'profile.csv'}")
        results.ResultsStore(out.parent).check_writable()
        with console.status("profiling") as status:
            rows, notes = profile_lib.profile(
                shapes, dtype.split(","), mode.split(","), impl.split(","), repeat=repeat,
                on_case=lambda c, i, n: status.update(f"profiling {i + 1}/{n}: {c.shape} {c.dtype} {c.mode}"),
            )
        results.write_csv(out, profile_lib.Row._fields, [r._asdict() for r in rows])
    except BnbenchError as err:
        raise _fail(err) from None
    render.profile_tables(console, rows, [f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", *notes])
    render.say(console, f"rows: {out}")


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
    from bnbench import data, datafiles

    try:
        for name in download:
            data.info(name)
    except BnbenchError as err:
        raise _fail(err) from None
    try:
        _fetch(download, data_dir)
    except BnbenchError as err:
        raise _fail(err, code=1) from None
    rows = []
    for name, entry in sorted(data.REGISTRY.items()):
        found = entry.source and datafiles.locate(name, entry.source, data_dir)
        rows.append((entry, found, found and datafiles.verify(found, entry.source)))
    console.print(render.datasets_table(rows))
    folders = ", ".join(map(str, datafiles.search_roots(data_dir)))
    render.say(console, f"searched: {folders} (each holding one sub-folder per data set); files are MD5-checked when read")


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
    from bnbench import results

    try:
        merged = results.merge(sources, out, prefer=prefer, partial=partial, mixed_context=mixed_context)
    except results.MergeIncomplete as err:
        raise _fail(err, code=1) from None
    except BnbenchError as err:
        raise _fail(err) from None
    for note in merged.notes:
        render.say(err_console, f"note: {note}")
    render.say(console, f"merged {render.plural(merged.runs, 'run')} of the grid's {merged.grid_runs} into {out} "
                        f"({render.plural(merged.duplicates, 'duplicate record')} with the same results left out)")
    if merged.missing:
        listed = "; ".join(merged.missing[:5]) + ("; ..." if len(merged.missing) > 5 else "")
        render.say(err_console, f"partial merge: {render.plural(len(merged.missing), 'run')} of the grid are in none "
                                f"of the folders ({listed}); run their shards and merge again")


@app.command(cls=_Command)
def columns() -> None:
    """The columns of runs.csv, curves.csv, activations.csv and probes.csv, and what each holds."""
    from bnbench import schema

    for name, table in (("runs.csv", schema.RUN_COLUMNS), ("curves.csv", schema.CURVE_COLUMNS),
                        ("activations.csv", schema.ACTIVATION_COLUMNS), ("probes.csv", schema.PROBE_COLUMNS)):
        console.print(render.columns_table(name, table))


@app.command(cls=_Command)
def explain(
    gamma: float = typer.Option(1.0, "--gamma", metavar="G", help="BN scale applied after normalizing."),
    beta: float = typer.Option(0.0, "--beta", metavar="B", help="BN offset applied after scaling."),
) -> None:
    """Show BN's training-mode forward pass on the classic 10 x 2 worked example, step by step."""
    from bnbench import explain as explain_lib

    render.explanation(console, explain_lib.worked_example(gamma, beta), gamma, beta)


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
