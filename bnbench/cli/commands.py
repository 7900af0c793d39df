"""The commands that call one library function and render its result: ``profile``, ``datasets``,
``merge``, ``models``, ``columns``, ``explain`` and ``robustness``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bnbench import options
from bnbench.cli import terminal
from bnbench.cli.arguments import DataDir, Sets, SpecFile
from bnbench.cli.downloads import fetch
from bnbench.cli.streams import console, err_console, one_line_errors, say_notes
from bnbench.errors import BnbenchError
from bnbench.reporting import cells
from bnbench.results import schema


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
    from bnbench.profiling import table  # here: JAX, which help does without

    with one_line_errors():
        shapes = table.parse_shapes(shape)
        with console.status("profiling") as status:
            rows, notes = table.profile_to_csv(
                out, shapes, dtype.split(","), mode.split(","), impl.split(","), repeat=repeat,
                on_case=lambda c, i, n: status.update(f"profiling {i + 1}/{n}: {c.shape} {c.dtype} {c.mode}"),
            )
    terminal.profile_tables(console, rows, notes)
    terminal.say(console, f"rows: {out}")


def datasets(
    data_dir: DataDir = None,
    download: list[str] = typer.Option(
        [], "--download", metavar="NAME", show_default=False, help="Download this data set's files now (repeatable)."
    ),
) -> None:
    """List the data sets: sizes, input shape, and whether each is here (MD5-checked) or downloads."""
    from bnbench import data  # here: it imports numpy, which help and argument errors do without
    from bnbench.data import files

    with one_line_errors():
        for name in download:
            data.info(name)
        fetch(download, data_dir)
    console.print(terminal.datasets_table(data.availability(data_dir)))
    folders = ", ".join(map(str, files.search_roots(data_dir)))
    terminal.say(console, f"searched: {folders} (each holding one sub-folder per data set); files are MD5-checked when read")


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
    from bnbench.results import merging  # here: it imports numpy, which help and argument errors do without

    with one_line_errors():
        merged = merging.merge(sources, out, prefer=prefer, partial=partial, mixed_context=mixed_context)
    say_notes(merged.notes)
    terminal.say(console, f"merged {cells.plural(merged.runs, 'run')} of the grid's {merged.grid_runs} into {out} "
                        f"({cells.plural(merged.duplicates, 'duplicate record')} with the same results left out)")
    if merged.missing:
        listed = "; ".join(merged.missing[:5]) + ("; ..." if len(merged.missing) > 5 else "")
        terminal.say(err_console, f"partial merge: {cells.plural(len(merged.missing), 'run')} of the grid are in none "
                                f"of the folders ({listed}); run their shards and merge again")


def models(spec: SpecFile, set_: Sets = [], data_dir: DataDir = None) -> None:
    """Show the networks and data sets a spec resolves to: where each comes from, input, parameters."""
    from bnbench.sweeping.plan import load_checked  # here: it imports numpy, which help does without
    from bnbench.training import inventory  # here: the models, and through them JAX

    with one_line_errors():
        resolved = inventory.resolve(load_checked(spec, sets=set_), data_dir)
    console.print(terminal.models_table(resolved))


def columns() -> None:
    """The columns of runs.csv, curves.csv, activations.csv and probes.csv, and what each holds."""
    for name, described in (("runs.csv", schema.RUN_COLUMNS), ("curves.csv", schema.CURVE_COLUMNS),
                            ("activations.csv", schema.ACTIVATION_COLUMNS), ("probes.csv", schema.PROBE_COLUMNS)):
        console.print(terminal.columns_table(name, described))


def explain(
    gamma: float = typer.Option(1.0, "--gamma", metavar="G", help="BN scale applied after normalizing."),
    beta: float = typer.Option(0.0, "--beta", metavar="B", help="BN offset applied after scaling."),
) -> None:
    """Show BN's training-mode forward pass on the classic 10 x 2 worked example, step by step."""
    from bnbench.norm import worked_example  # here: JAX, which help does without

    terminal.explanation(console, worked_example.worked_example(gamma, beta), gamma, beta)


def robustness(
    spec: SpecFile,
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR", show_default="results/<spec name>-robustness",
                                       help="Folder for the variants' results folders and robustness.csv."),
    set_: Sets = [],
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, metavar="N", show_default="the spec's",
                                        help="Number of seeds (0..N-1), replacing the spec's."),
    compare: Optional[list[str]] = typer.Option(None, "--compare", metavar="AXIS=A,B", show_default="the spec's compare",
                                                help="A paired comparison whose verdicts to set side by side (repeatable)."),
    fmt: str = typer.Option("table", "--format", metavar="table|markdown", help="How to print the table."),
) -> None:
    """Sweep a spec again where only the rounding changes (native numerics, the sequential engine) and show
    which of its verdicts change: those rest on float rounding (docs/reproducibility.md)."""
    from bnbench.reporting import model, robustness as robustness_lib  # here: JAX and pandas, which help does without
    from bnbench.sweeping import plan as plan_lib

    with one_line_errors():
        if fmt not in ("table", "markdown"):
            raise BnbenchError(f"--format: must be table or markdown, got {fmt!r}")
        plan = plan_lib.plan_file(spec, sets=set_, seeds=seeds, max_runs=None)
        comparisons = [model.parse_comparison(c) for c in compare] if compare else plan.spec.comparisons
        out = out or Path("results") / f"{plan.spec.name}-robustness"
        arguments = [*(f"--set={pair}" for pair in set_), *([f"--seeds={seeds}"] if seeds else [])]
        with console.status("robustness") as status:
            result = robustness_lib.check(
                spec, plan.runs, out, robustness_lib.platform(), arguments, comparisons,
                on_variant=lambda name, index: status.update(f"sweeping variant {index + 1} ({name}) into {out / name}"))
    table = result.table
    rows = [[str(cell) for cell in row] for row in table.itertuples(index=False)]
    terminal.print_table(console, list(table.columns), rows, f"{plan.spec.name}: verdicts by variant", fmt)
    say_notes(result.notes)
    terminal.say(console, f"rows: {out / 'robustness.csv'}; the variants' results: "
                 + ", ".join(str(folder) for folder in result.folders.values()))
