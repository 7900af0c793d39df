"""The ``bnbench`` command line: the Typer app, its commands (each in its own module: parses, calls the
library, renders with rich), ``--version``, and the console script :func:`main`."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys

import typer
from typer.core import TyperCommand, TyperGroup

# Only typer, rich and bnbench's light modules are imported by the command modules; each command imports
# what it uses (JAX, pandas, matplotlib) when it runs, so that help and argument errors come at once.
from bnbench.cli.commands import columns, datasets, explain, merge, models, profile, robustness
from bnbench.cli.report import report
from bnbench.cli.sweep import sweep


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
for _command in (sweep, report, robustness, profile, datasets, merge, models, columns, explain):
    app.command(cls=_Command)(_command)


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
