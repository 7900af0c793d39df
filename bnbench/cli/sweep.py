"""``bnbench sweep``: plans a spec's grid, trains it (or, with ``--seeds auto``, adds seeds until its
comparisons are decided) with progress, and ends with its report."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Optional

import typer

from bnbench import options
from bnbench.cli import progress, terminal
from bnbench.cli.arguments import DataDir, PlotFormat, Sets, SpecFile, check_plot_format
from bnbench.cli.downloads import fetch
from bnbench.cli.report import show_report
from bnbench.cli.streams import console, err_console, one_line_errors
from bnbench.errors import BnbenchError

if TYPE_CHECKING:
    from bnbench.stats.group_sequential import Design
    from bnbench.sweeping.plan import SweepPlan

# The sweep command's options, declared once here so that the command reads as what it does.
_Out = Annotated[Optional[Path], typer.Option("--out", metavar="DIR", show_default="results/<spec name>",
                                              help="Output folder.")]
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
    "ResNets on GPU too, where that measured faster (docs/performance.md); on CPU ResNets on images compile "
    "with YNNPACK's element-wise fusions; natively with the onednn extra, ResNets and VGG on images convolve "
    "by oneDNN, one run per block, docs/engine.md); "
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
_CompileCache = Annotated[Optional[Path], typer.Option(
    "--compile-cache", metavar="DIR", show_default=f"${options.COMPILE_CACHE_ENV}, else ~/.cache/bnbench/xla",
    help="Folder where compiled programs are kept for later sweeps (never changes a result).")]
_Portable = Annotated[bool, typer.Option(
    "--portable", help="CPU runs get the same bits on any x86-64 CPU with AVX2: the instruction set capped at AVX2, "
    "no YNNPACK fusions, XLA's pool of 2 threads (so at most 2 blocks at a time). The default, unless the spec "
    "sets numerics = \"native\" or the CPU is not x86-64 with AVX2; runs.csv records it, and a folder is not "
    "extended with the other.")]
_Native = Annotated[bool, typer.Option(
    "--native", help="CPU runs compute as fast as this CPU can: bits that depend on its model and core count.")]
_NoCompileCache = Annotated[bool, typer.Option(
    "--no-compile-cache", help=f"Compile everything afresh (as {options.COMPILE_CACHE_ENV} set to off does).")]


def sweep(
    spec: SpecFile, out: _Out = None, set_: Sets = [], seeds: _Seeds = None, max_seeds: _MaxSeeds = options.DEFAULT_MAX_SEEDS,
    margin: _Margin = None, dry_run: _DryRun = False, no_resume: _NoResume = False, engine: _Engine = "vectorized",
    runs_per_device: _RunsPerDevice = None, devices: _Devices = None, shard: _ShardOption = None,
    max_runs: _MaxRuns = options.DEFAULT_MAX_RUNS, yes: _Yes = False, no_plots: _NoPlots = False,
    plot_format: PlotFormat = "png", data_dir: DataDir = None, compile_cache: _CompileCache = None,
    no_compile_cache: _NoCompileCache = False, portable: _Portable = False, native: _Native = False,
) -> None:
    """Train every run of a spec's grid and write runs.csv, curves.csv, spec.toml and meta.json; end with
    the summary and the spec's comparisons."""
    from bnbench.sweeping import plan as plan_lib  # here: it imports numpy, which help does without

    with one_line_errors():
        check_plot_format(plot_format)
        auto = seeds == "auto"
        if portable and native:
            raise BnbenchError("--portable and --native: pass one of them")
        numerics = options.NUMERICS[0] if portable else options.NUMERICS[1] if native else None
        if not dry_run:
            _prepare_numerics(spec, numerics)
        plan = plan_lib.plan_file(spec, sets=set_, seeds=None if auto else plan_lib.parse_seeds(seeds), shard=shard,
                                  out=out, engine=engine, resume=not no_resume, max_runs=None if yes else max_runs,
                                  data_dir=data_dir)
        if dry_run:
            return _dry_run(plan)
        from bnbench import engine as engine_lib  # here: JAX, which a dry run does without

        program_cache, note = engine_lib.caches(compile_cache, off=no_compile_cache)
        if note:
            terminal.say(err_console, f"note: {note}")
        engine_options = dict(engine=engine, runs_per_device=runs_per_device, devices=devices, numerics=numerics)
        sweep_plan = functools.partial(_sweep_plan, engine_options=engine_options, program_cache=program_cache)
        if auto:
            _until_decided(plan, max_seeds, margin, None if yes else max_runs, sweep_plan)
        else:
            sweep_plan(plan)
        show_report(plan.store.out_dir, plots=not no_plots, plot_format=plot_format,
                    html=plan.store.out_dir / "report.html")


def _prepare_numerics(spec: Path, numerics: Optional[str]) -> None:
    """Sets the process up for the numerics asked for (``--portable``/``--native``, else the spec's), before
    planning starts JAX (:func:`bnbench.training.numerics.prepare`)."""
    from bnbench.experiment.spec import numerics_of
    from bnbench.training import numerics as numerics_lib  # here: JAX, which a dry run does without

    numerics_lib.prepare(numerics or numerics_of(spec))


def _dry_run(plan: SweepPlan) -> None:
    """The expanded grid, and whether a real run would be refused (and why)."""
    console.print(terminal.dry_run_table(plan.spec, plan.runs))
    try:
        plan.check_output()
    except BnbenchError as err:
        terminal.say(console, f"a real run would be refused: {err}")


def _sweep_plan(plan: SweepPlan, *, engine_options: dict, program_cache: Optional[Path],
                design: Optional[Design] = None) -> None:
    """Trains one plan (:func:`bnbench.sweeping.session.sweep`), downloading its data sets and training
    with progress."""
    from bnbench.sweeping import session  # here: it imports JAX, which a dry run does without

    train = functools.partial(progress.train, program_cache=program_cache)
    session.sweep(plan, train, design=design, download=fetch, **engine_options)


def _until_decided(plan: SweepPlan, max_seeds: int, margin: Optional[float], max_runs: Optional[int],
                   sweep_plan: Callable[..., None]) -> None:
    """``--seeds auto`` (:func:`bnbench.sweeping.until_decided.until_decided`): each look trained by
    ``sweep_plan``, then a line saying how many comparisons it decided."""
    from bnbench.sweeping import until_decided  # here: pandas, which a dry run does without

    design = until_decided.until_decided_design(plan, max_seeds, margin, max_runs)
    for look in until_decided.until_decided(plan, design, sweep_plan):
        terminal.say(console, terminal.look_line(look, design))
