"""Downloading data sets on the command line, with a progress bar per file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from bnbench.cli import terminal
from bnbench.cli.streams import console


def fetch(names: list[str], data_dir: Optional[Path]) -> None:
    """Downloads the published files of the data sets ``names`` that are not found locally, with a
    progress bar."""
    from bnbench import data  # here: it imports numpy, which help and argument errors do without
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
