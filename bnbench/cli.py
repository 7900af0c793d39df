"""The ``bnbench`` command line: parses arguments, calls the library, renders with rich."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich import box
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
from rich.table import Table

from bnbench import data, datafiles, frames, results, schema, summary
from bnbench import explain as explain_lib
from bnbench import plots as plot_lib
from bnbench import profile as profile_lib
from bnbench import sweep as sweep_lib
from bnbench import engine as engine_lib
from bnbench.errors import BnbenchError
from bnbench.spec import RUN_FIELDS, load_spec, with_overrides

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Hard evidence about Batch Normalization: sweeps of small models and BN explained.",
)
console = Console()


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


def _fmt(value: float, digits: int = 4) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    return _fmt(mean) if math.isnan(std) else f"{_fmt(mean)} ± {_fmt(std)}"


def _interval(low: float, high: float) -> str:
    return "—" if math.isnan(low) else f"[{_fmt(low)}, {_fmt(high)}]"


def _summary_cells(table: pd.DataFrame, by: list[str]) -> tuple[list[str], list[list[str]]]:
    header = [*by, "n", "diverged", "mean ± std", "95% CI"]
    rows = [
        [
            *(str(row[c]) for c in by),
            str(row["n"]),
            str(row["diverged"]),
            _mean_std(row["mean"], row["std"]),
            _interval(row["ci_low"], row["ci_high"]),
        ]
        for row in table.to_dict("records")
    ]
    return header, rows


def _compare_cells(table: pd.DataFrame, by: list[str], axis: str, a: str, b: str) -> tuple[list[str], list[list[str]]]:
    header = [*by, "pairs", f"mean {a} − {b}", "95% CI (bootstrap)", "verdict"]
    rows = []
    for row in table.to_dict("records"):
        if row["pairs"] < 2:
            verdict = "too few pairs"
        elif row["ci_includes_zero"]:
            verdict = "no evidence of a difference (CI includes 0)"
        else:
            verdict = f"{axis}={a} {'higher' if row['mean_diff'] > 0 else 'lower'}"
        rows.append(
            [
                *(str(row[c]) for c in by),
                str(row["pairs"]),
                _fmt(row["mean_diff"]),
                _interval(row["ci_low"], row["ci_high"]),
                verdict,
            ]
        )
    return header, rows


def _print_table(header: list[str], rows: list[list[str]], title: str, fmt: str, highlight: int | None = None) -> None:
    if fmt == "markdown":
        lines = [f"**{title}**", ""] + ["| " + " | ".join(cells) + " |" for cells in (header, ["---"] * len(header), *rows)]
        console.print("\n".join(lines) + "\n", markup=False, soft_wrap=True)
        return
    table = Table(title=title)
    for column in header:
        table.add_column(column)
    for i, cells in enumerate(rows):
        table.add_row(*cells, style="bold green" if i == highlight else None)
    console.print(table)


def _best_row(table: pd.DataFrame, metric: str) -> int | None:
    """The row with the best mean: highest for accuracies, lowest for losses."""
    if not table["mean"].notna().any():
        return None
    return int(table["mean"].idxmax() if "acc" in metric else table["mean"].idxmin())


def _report(
    out_dir: Path,
    *,
    by: list[str] | None = None,
    metric: str = "test_acc",
    comparison: tuple[str, str, str] | None = None,
    fmt: str = "table",
    plots: bool = True,
) -> None:
    """Prints the summary (and a paired comparison) of a results folder and writes its plots."""
    runs = frames.load_runs(out_dir)
    for column in [*(by or []), metric, *(comparison[:1] if comparison else [])]:
        if column not in runs:
            raise frames.LoadError(f"{out_dir}: no column {column!r} in runs.csv")
    by = summary.swept_axes(runs) if by is None else by
    table = summary.summarize(runs, by, metric)
    if fmt == "csv":
        typer.echo(table.to_csv(index=False), nl=False)
    else:
        header, rows = _summary_cells(table, by)
        name = ", ".join(runs["spec"].astype(str).unique()) or out_dir.name
        title = f"{name}: {metric} over seeds ({len(runs)} runs; best in bold green)"
        _print_table(header, rows, title, fmt, highlight=_best_row(table, metric))
    if comparison:
        axis, a, b = comparison
        paired = summary.compare(runs, axis, a, b, metric=metric)
        if fmt == "csv":
            typer.echo(paired.to_csv(index=False), nl=False)
        else:
            group_by = [c for c in summary.swept_axes(runs) if c != axis]
            header, rows = _compare_cells(paired, group_by, axis, a, b)
            _print_table(header, rows, f"paired difference in {metric}: {axis}={a} minus {axis}={b}", fmt)
    if plots:
        curves, activations = frames.load_curves(out_dir), frames.load_activations(out_dir)
        for path in plot_lib.write_plots(out_dir, runs, curves, activations, metric):
            console.print(f"plot: {path}")


_DATA_DIR_HELP = (
    f"Folder holding one sub-folder per data set (DIR/mnist/...) [default: ${datafiles.ENV_VAR}]; "
    "then the cache (~/.cache/bnbench) is searched, then the files are downloaded into it."
)


def _fetch(names: list[str], data_dir: Optional[Path]) -> None:
    """Downloads the published files of the data sets ``names`` that are not found locally."""
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
            console.print(f"{name}: verified and saved in {folder}")


def _dry_run_table(plan: sweep_lib.SweepPlan) -> Table:
    axes = list(plan.spec.grid)
    table = Table(title=f"{plan.spec.name}: {len(plan.runs)} runs (dry run, nothing executed)")
    for column in ("#", "run_id", *axes, "seed"):
        table.add_column(column)
    for i, run in enumerate(plan.runs):
        values = [str(schema.csv_value(getattr(run, a))) for a in axes]
        table.add_row(str(i + 1), run.run_id, *values, str(run.seed))
    return table


def _train_with_progress(
    plan: sweep_lib.SweepPlan, done: frozenset[str], stop: threading.Event, engine_options: dict
) -> None:
    todo = len(plan.runs) - len(done)
    if not todo:
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
        for record in sweep_lib.execute(plan, done, stop, **engine_options):
            result = record.result
            progress.update(task, advance=1, description=f"last: {result.status} test_acc={_fmt(result.test_acc, 3)}")


@app.command()
def sweep(
    spec: Path = typer.Argument(..., help="Experiment spec (TOML), e.g. experiments/quickstart.toml."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder [default: results/<spec name>]."),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help=f"Replace or add a grid axis: key=v1,v2 (repeatable). Keys: {', '.join(RUN_FIELDS)}. "
        "Widths are dash-separated: widths=100-100,50. BN momentum follows the flax/keras convention "
        f"{schema.MOMENTUM_CONVENTION} (PyTorch's momentum=0.1 is 0.9 here).",
    ),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Number of seeds (0..N-1), replacing the spec's."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the expanded grid and run nothing."),
    no_resume: bool = typer.Option(
        False, "--no-resume", help="Discard earlier results in the output folder instead of skipping finished runs."
    ),
    engine: str = typer.Option(
        "vectorized",
        "--engine",
        help="vectorized: runs sharing a compiled program train together (vmap, scan, sharded over devices); "
        "sequential: one run at a time, a Python loop over jitted steps (the reference path).",
    ),
    chunk_size: Optional[int] = typer.Option(
        None, "--chunk-size", min=1, help="Most runs vectorized at once [default: from a memory estimate]."
    ),
    devices: Optional[int] = typer.Option(
        None, "--devices", min=1, help="Local devices to shard runs over [default: all; on CPU one per core]."
    ),
    shard: Optional[str] = typer.Option(
        None, "--shard", help="Run only part i/n of the grid (e.g. a SLURM array task); combine with `bnbench merge`."
    ),
    max_runs: int = typer.Option(
        sweep_lib.DEFAULT_MAX_RUNS, "--max-runs", min=1, help="Refuse grids with more runs than this, unless --yes."
    ),
    yes: bool = typer.Option(False, "--yes", help="Run the grid whatever its size."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Do not write PNG plots beside the CSVs."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
) -> None:
    """Train every run of a spec's grid and write runs.csv, curves.csv, spec.toml and meta.json."""
    try:
        resolved = with_overrides(load_spec(spec), sets=set_, seeds=seeds)
        part = sweep_lib.Shard.parse(shard) if shard else None
        engine_lib.validate(engine, devices)
    except BnbenchError as err:
        raise _fail(err) from None
    if not dry_run:
        try:
            _fetch(sorted({r.dataset for r in resolved.expand()}), data_dir)
        except BnbenchError as err:
            raise _fail(err, code=1) from None
    try:
        default_out = Path("results") / (resolved.name + (f"-shard{part.index}of{part.count}" if part else ""))
        plan = sweep_lib.plan(
            resolved,
            out or default_out,
            resume=not no_resume,
            shard=part,
            max_runs=None if yes else max_runs,
            data_dir=data_dir,
            check_data=not dry_run,
        )
    except BnbenchError as err:
        raise _fail(err) from None
    if dry_run:
        console.print(_dry_run_table(plan))
        return
    try:
        done = sweep_lib.open_results(plan)
    except (BnbenchError, OSError) as err:
        raise _fail(err) from None
    console.print(
        f"[bold]{plan.spec.name}[/]: {len(plan.runs)} runs, {len(done)} already in {plan.store.out_dir}, "
        f"{len(plan.runs) - len(done)} to run"
    )
    stop = threading.Event()
    resume_hint = f"finished runs are saved in {plan.store.out_dir}; run the same command again to resume"
    try:
        with _stop_on_interrupt(stop):
            _train_with_progress(plan, done, stop, dict(engine=engine, chunk_size=chunk_size, devices=devices))
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {resume_hint}", err=True)
        raise typer.Exit(code=130) from None
    except BnbenchError as err:
        raise _fail(err, code=1) from None
    if stop.is_set():
        typer.echo(f"stopped: {resume_hint}", err=True)
        raise typer.Exit(code=130)
    console.print(f"results: {plan.store.out_dir}/ (runs.csv, curves.csv; columns in results/README.md)")
    try:
        _report(plan.store.out_dir, plots=not no_plots)
    except BnbenchError as err:
        raise _fail(err, code=1) from None


@app.command()
def report(
    results_dir: Path = typer.Argument(..., help="A folder written by `bnbench sweep` (finished, interrupted or merged)."),
    by: Optional[list[str]] = typer.Option(None, "--by", help="Group by these columns [default: the swept axes]."),
    metric: str = typer.Option("test_acc", "--metric", help="runs.csv column to summarize."),
    compare: Optional[str] = typer.Option(
        None, "--compare", help="AXIS=A,B: paired difference A − B over runs equal in everything else (seed too)."
    ),
    fmt: str = typer.Option("table", "--format", help="table, markdown (paste into a paper) or csv."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Do not write PNG plots."),
) -> None:
    """Summarize a results folder again: mean, std, 95% CI and n over seeds, paired comparisons, plots."""
    try:
        if fmt not in ("table", "markdown", "csv"):
            raise BnbenchError(f"--format: must be table, markdown or csv, got {fmt!r}")
        comparison = None
        if compare:
            axis, _, values = compare.partition("=")
            pair = values.split(",")
            if not axis or len(pair) != 2 or not all(pair):
                raise BnbenchError(f"--compare: expected AXIS=A,B, got {compare!r}")
            comparison = (axis, pair[0], pair[1])
        _report(results_dir, by=by, metric=metric, comparison=comparison, fmt=fmt, plots=not no_plots)
    except BnbenchError as err:
        raise _fail(err) from None


def _profile_tables(rows: list, notes: list[str]) -> None:
    for shape, dtype in dict.fromkeys((r.shape, r.dtype) for r in rows):
        group_rows = [r for r in rows if (r.shape, r.dtype) == (shape, dtype)]
        table = Table(title=f"BN kernels, {shape} {dtype} ({rows[0].device_kind}, {rows[0].backend})",
                      box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
        for column in ("mode", "impl", "ms", "spread", "GB/s", "%copy", "×ew", "var", "out"):
            table.add_column(column, justify="left" if column in ("mode", "impl") else "right", no_wrap=True)
        for mode in dict.fromkeys(r.mode for r in group_rows):
            group = [r for r in group_rows if r.mode == mode]
            fastest = min(group, key=lambda r: r.median_ms)
            for r in group:
                table.add_row(
                    r.mode, r.impl, f"{r.median_ms:.3g}", f"{100 * (r.p90_ms - r.p10_ms) / r.median_ms:.0f}%", f"{r.gbps:.3g}",
                    f"{r.pct_copy_bw:.0f}%", f"{r.rel_to_elementwise:.3g}", _error_text(r.var_rel_err),
                    _error_text(r.out_rel_err), style="bold green" if r is fastest else None,
                )
            table.add_section()
        console.print(table)
        console.print(_profile_verdict(group_rows))
    console.print("ms: median time per kernel call; spread: (p90 - p10) / median; %copy: GB/s of minimum traffic over the"
                  " copy's GB/s; ×ew: time over x*a+b's; var, out: relative error of the variance and the output against float64 at"
                  " mean/std = 3000 (train mode)")
    for note in notes:
        console.print(f"note: {note}")


def _error_text(error: float) -> str:
    return "" if math.isnan(error) else f"{error:.0e}"


def _profile_verdict(rows: list) -> str:
    """The fastest accurate implementation in training mode, and where bnbench stands."""
    train = [r for r in rows if r.mode == "train"]
    if not train:
        return "verdict: no train rows"
    accurate = [r for r in train if r.var_rel_err <= 1e-5] or train
    best = min(accurate, key=lambda r: r.median_ms)
    fastest = min(train, key=lambda r: r.median_ms)
    ours = next((r for r in train if r.impl == "bnbench"), None)
    text = f"verdict: train, fastest with variance error ≤ 1e-5: {best.impl} ({best.median_ms:.3g} ms, {best.pct_copy_bw:.0f}% of copy)"
    if fastest is not best:
        text += f"; {fastest.impl} is faster ({fastest.median_ms:.3g} ms) but off by {fastest.var_rel_err:.0e} in variance"
    if ours is not None and ours is not best:
        text += f"; bnbench {ours.median_ms:.3g} ms ({ours.median_ms / best.median_ms:.2f}x)"
    return text


@app.command()
def profile(
    shape: Optional[list[str]] = typer.Option(
        None, "--shape", help="N,H,W,C or N,C, repeatable [default: ResNet-like NHWC shapes and (N, 4096)]."
    ),
    dtype: str = typer.Option(",".join(profile_lib.DEFAULT_DTYPES), "--dtype", help="Comma-separated dtypes."),
    mode: str = typer.Option(",".join(profile_lib.MODES), "--mode", help="Comma-separated: train, grad, infer, fold."),
    impl: str = typer.Option(
        ",".join(profile_lib.implementations()), "--impl", help="Comma-separated implementations; missing peers are skipped."
    ),
    repeat: int = typer.Option(15, "--repeat", min=3, help="Timed repeats per row, interleaved round-robin."),
    out: Path = typer.Option(Path("results") / "profile.csv", "--out", help="CSV file for the rows."),
) -> None:
    """Time BN kernels (train, grad, infer, fold) against peers and the device's copy bandwidth."""
    try:
        shapes = [tuple(int(d) for d in s.split(",")) for s in shape] if shape else list(profile_lib.DEFAULT_SHAPES)
    except ValueError:
        raise _fail(BnbenchError(f"--shape: expected comma-separated integers such as 32,56,56,64, got {shape}")) from None
    if any(len(s) not in (2, 4) or min(s) < 1 for s in shapes):
        raise _fail(BnbenchError(f"--shape: each shape is N,C or N,H,W,C with sizes >= 1, got {shape}"))
    try:
        results.ResultsStore(out.parent).check_writable()
        with console.status("profiling") as status:
            rows, notes = profile_lib.profile(
                shapes, dtype.split(","), mode.split(","), impl.split(","), repeat=repeat,
                on_case=lambda c, i, n: status.update(f"profiling {i + 1}/{n}: {c.shape} {c.dtype} {c.mode}"),
            )
        results.write_csv(out, profile_lib.Row._fields, [r._asdict() for r in rows])
    except BnbenchError as err:
        raise _fail(err) from None
    _profile_tables(rows, [f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", *notes])
    console.print(f"rows: {out}")


@app.command()
def datasets(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
    download: list[str] = typer.Option([], "--download", help="Download this data set's files now (repeatable)."),
) -> None:
    """List the data sets: sizes, input shape, and whether (and where) each is available locally."""
    try:
        for name in download:
            data.info(name)
    except BnbenchError as err:
        raise _fail(err) from None
    try:
        _fetch(download, data_dir)
    except BnbenchError as err:
        raise _fail(err, code=1) from None
    table = Table(title="data sets (spec field `dataset`)")
    for column in ("name", "description", "train", "test", "input", "available"):
        table.add_column(column, justify="right" if column in ("train", "test") else "left", overflow="fold")
    for name, entry in sorted(data.REGISTRY.items()):
        if entry.source is None:
            where = "generated locally"
        else:
            found = datafiles.locate(name, entry.source, data_dir)
            size = f"{entry.source.download_size / 1e6:.0f} MB"
            where = f"[green]yes[/]: {found.resolve()}" if found else f"[yellow]no[/]: {size} download on first use"
        shape = "×".join(map(str, entry.input_shape))
        table.add_row(name, entry.description, f"{entry.split[0]:,}", f"{entry.split[1]:,}", shape, where)
    console.print(table)
    folders = ", ".join(map(str, datafiles.search_roots(data_dir)))
    console.print(f"searched: {folders} (each holding one sub-folder per data set); files are MD5-checked when read")


@app.command()
def merge(
    sources: list[Path] = typer.Argument(..., help="Result folders of one spec, e.g. its --shard parts."),
    out: Path = typer.Option(..., "--out", help="New folder for the combined results."),
) -> None:
    """Combine the runs.csv/curves.csv of several folders of one spec, each run once, in grid order."""
    try:
        summary_ = results.merge(sources, out)
    except BnbenchError as err:
        raise _fail(err) from None
    console.print(f"merged {summary_.runs} runs into {out} ({summary_.duplicates} duplicate rows skipped)")


@app.command()
def explain(
    gamma: float = typer.Option(1.0, "--gamma", help="BN scale applied after normalizing."),
    beta: float = typer.Option(0.0, "--beta", help="BN offset applied after scaling."),
) -> None:
    """Show BN's training-mode forward pass on the classic 10 x 2 worked example, step by step."""
    ex = explain_lib.worked_example(gamma, beta)
    console.print(
        "Batch Normalization, training mode: per feature, mean and [bold]biased[/] variance over the batch, "
        f"x̂ = (x − mean) / √(var + ε) with ε = {ex.epsilon:g}, then y = γ·x̂ + β with γ = {gamma:g}, β = {beta:g}."
    )
    stats = Table(title="Step 1–2: batch statistics per feature")
    stats.add_column("statistic")
    stats.add_column("feature 0", justify="right")
    stats.add_column("feature 1", justify="right")
    stats.add_row("mean = Σx / 10", *(f"{v:g}" for v in ex.mean))
    stats.add_row("var = Σ(x − mean)² / 10", *(f"{v:g}" for v in ex.var))
    console.print(stats)
    steps = Table(title="Step 3–4: normalize, then scale and shift")
    for column in ("x₀", "x₁", "x̂₀", "x̂₁", "y₀", "y₁"):
        steps.add_column(column, justify="right")
    for x, x_hat, y in zip(ex.x, ex.x_hat, ex.y):
        steps.add_row(*(f"{v:g}" for v in x), *(f"{v:+.4f}" for v in (*x_hat, *y)))
    console.print(steps)


def main() -> None:
    """The console script: on CPU, one JAX device per core, so the vectorized engine uses them all."""
    flag = engine_lib.cpu_device_flag(os.environ)
    if flag:
        os.environ["XLA_FLAGS"] = flag
    app()
