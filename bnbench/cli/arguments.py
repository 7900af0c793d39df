"""Parameters more than one command takes, declared once: the spec and its ``--set``, ``--data-dir``,
``--plot-format``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bnbench import options
from bnbench.errors import BnbenchError

_SET_HELP = (
    "Replace or add a grid axis: KEY=V1,V2 (repeatable); keys are the run fields (`bnbench columns`). "
    "A list value is dash-separated: widths=100-100,50 sweeps two widths. eval_stats takes one list: "
    "eval_stats=batch,precise evaluates every run both ways. BN momentum follows the flax/keras convention: "
    "running = momentum * running + (1 - momentum) * batch (PyTorch's momentum=0.1 is 0.9 here)."
)
_DATA_DIR_HELP = (
    "Folder holding one sub-folder per data set (DIR/mnist/...); then the cache (~/.cache/bnbench) is "
    "searched, then the files are downloaded into it."
)

SpecFile = Annotated[Path, typer.Argument(metavar="SPEC", help="Experiment spec (TOML), e.g. experiments/quickstart.toml.")]
Sets = Annotated[list[str], typer.Option("--set", metavar="KEY=V1,V2", show_default=False, help=_SET_HELP)]
DataDir = Annotated[Optional[Path], typer.Option(
    "--data-dir", metavar="DIR", show_default=f"${options.DATA_DIR_ENV}", help=_DATA_DIR_HELP)]
PlotFormat = Annotated[str, typer.Option(
    "--plot-format", metavar="|".join(options.PLOT_FORMATS),
    help="File format of the figures: png (300 dpi), pdf or svg (vector, for print).")]


def check_plot_format(plot_format: str) -> None:
    """Refuses a --plot-format before anything runs (a sweep would otherwise train to fail at its end)."""
    if plot_format not in options.PLOT_FORMATS:
        raise BnbenchError(f"--plot-format: must be one of {', '.join(options.PLOT_FORMATS)}, got {plot_format!r}")
