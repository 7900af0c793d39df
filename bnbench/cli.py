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
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bnbench import explain as explain_lib
from bnbench import results, schema, summary
from bnbench import sweep as sweep_lib
from bnbench.engine import ENGINES, EngineError, cpu_device_flag, select_devices
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
    if isinstance(mean, float) and math.isnan(mean):
        return "—"
    return _fmt(mean) if math.isnan(std) else f"{_fmt(mean)} ± {_fmt(std)}"


def _summary_table(runs: pd.DataFrame, by: list[str], title: str) -> Table:
    table_data = summary.summarize(runs, by)
    best = table_data["test_acc_mean"].idxmax() if table_data["test_acc_mean"].notna().any() else None
    table = Table(title=title, caption="mean ± std over seeds; best test accuracy in bold green")
    for column in by:
        table.add_column(column)
    for column in ("n", "diverged"):
        table.add_column(column, justify="right")
    table.add_column("test acc", justify="right")
    table.add_column("final train loss", justify="right")
    for i, row in table_data.iterrows():
        cells = [str(row[c]) for c in by] + [str(row["n"]), str(row["diverged"])]
        cells += [
            _mean_std(row["test_acc_mean"], row["test_acc_std"]),
            _mean_std(row["final_train_loss_mean"], row["final_train_loss_std"]),
        ]
        table.add_row(*cells, style="bold green" if i == best else None)
    return table


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
) -> None:
    """Train every run of a spec's grid and write runs.csv, curves.csv, spec.toml and meta.json."""
    try:
        resolved = with_overrides(load_spec(spec), sets=set_, seeds=seeds)
        part = sweep_lib.Shard.parse(shard) if shard else None
        default_out = Path("results") / (resolved.name + (f"-shard{part.index}of{part.count}" if part else ""))
        plan = sweep_lib.plan(
            resolved, out or default_out, resume=not no_resume, shard=part, max_runs=None if yes else max_runs
        )
        if engine not in ENGINES:
            raise EngineError(f"--engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
        select_devices(devices)
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
    runs = pd.read_csv(plan.store.runs_path)
    console.print(_summary_table(runs, list(plan.spec.grid), f"{plan.spec.name}: test accuracy by swept axes"))
    console.print(f"results: {plan.store.runs_path}, {plan.store.curves_path}")


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
    flag = cpu_device_flag(os.environ)
    if flag:
        os.environ["XLA_FLAGS"] = flag
    app()
