"""What every figure of :mod:`bnbench.reporting.figures` shares: labels and gids, configurations in
their order, panels and lines, files of at most :data:`MAX_PANELS` panels, legends, and saving.
"""

from __future__ import annotations

import math
import numbers
import re
from pathlib import Path
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bnbench.results import metrics  # noqa: E402
from bnbench.experiment.fields import FIELDS, LIST_FIELDS  # noqa: E402
from bnbench.experiment.runs import argument_key  # noqa: E402

MAX_LINES = 10
MAX_PANELS = 8
PNG_DPI = 300


def axis_label(column: str) -> str:
    """A column's axis label: the run field's (:mod:`bnbench.experiment.fields`), the keyword argument's, or the
    metric's (:mod:`bnbench.results.metrics`)."""
    field = FIELDS.get(column)
    if field is not None:
        return field.label or column.replace("_", " ")
    if argument_key(column):
        field, name = argument_key(column)
        return f"{name} ({field.replace('_args', '')} argument)"
    return metrics.label(column)


def gid(what: str, config: dict) -> str:
    """The gid of an artist that draws ``what`` (a metric, ``diverged``, a probe value and layer, ...)
    for one configuration (swept axis -> value): ``bnbench:WHAT:AXIS=VALUE;AXIS=VALUE``, every name and
    value percent-encoded (:func:`urllib.parse.quote`; a number as the ``repr`` of its float), so that
    an SVG id needs no escaping and maps back to the values exactly."""
    def text(value) -> str:
        return repr(float(value)) if isinstance(value, numbers.Number) and not isinstance(value, bool) else str(value)

    pairs = ";".join(f"{quote(str(axis), safe='')}={quote(text(value), safe='')}" for axis, value in config.items())
    return f"bnbench:{quote(what, safe='')}:{pairs}"


def _value_text(axis: str, value) -> str:
    """A value as a figure shows it: as ``runs.csv`` has it, numbers short, a list of three or more
    equal values as ``count×value`` (a deep net's widths would take a panel's width)."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    parts = text.split("-")
    if axis in LIST_FIELDS and len(parts) > 2 and len(set(parts)) == 1:
        return f"{len(parts)}×{parts[0]}"
    return text


def legend_name(config: dict) -> str:
    """A configuration as a legend, panel or note names it: ``axis=value, ...``; ``all runs`` for none."""
    return ", ".join(f"{axis}={_value_text(axis, value)}" for axis, value in config.items()) or "all runs"


def ordered_groups(frame: pd.DataFrame, keys: list[str]) -> list[tuple[dict, pd.DataFrame]]:
    """The groups of ``frame`` of equal ``keys``, each with its values (``{}`` and the whole frame for
    no keys), in the order the values first appear, the key of fewest values varying fastest, so that
    configurations that differ in one two-valued axis (BN on and off) sit side by side."""
    if not keys:
        return [({}, frame)]
    outer_first = sorted(keys, key=lambda k: -frame[k].nunique(dropna=False))
    order = [pd.Series(pd.factorize(frame[k], use_na_sentinel=False)[0], index=frame.index) for k in outer_first]
    return [({k: group[k].iloc[0] for k in keys}, group) for _, group in frame.groupby(order, sort=True)]


def panels_and_lines(runs: pd.DataFrame, axes_names: list[str]) -> tuple[list[str], list[str]]:
    """Splits the swept axes into those that make panels and those that make lines, so that no panel
    holds more than :data:`MAX_LINES` lines where that can be: axes with the fewest values become
    panels first, and the last axis always makes lines (one line per panel would help nobody)."""
    counts = {a: runs[a].nunique(dropna=False) for a in axes_names}
    panels, lines = [], list(axes_names)
    while len(lines) > 1 and math.prod(counts[a] for a in lines) > MAX_LINES:
        fewest = min(lines, key=lambda a: counts[a])
        lines.remove(fewest)
        panels.append(fewest)
    return [a for a in axes_names if a in panels], lines


def line_colors(frame: pd.DataFrame, line_axes: list[str]) -> dict[str, tuple]:
    """The colour of each line (by its legend name), the same in every panel and file of a figure:
    distinct colours up to ten lines, a sequential colormap beyond (then one axis's ordered values)."""
    names = [legend_name(key) for key, _ in ordered_groups(frame, line_axes)]
    palette = plt.get_cmap("tab10").colors if len(names) <= 10 else plt.get_cmap("viridis")(np.linspace(0, 0.9, len(names)))
    return dict(zip(names, palette))


def split_into_files(items: list, path: Path) -> list[tuple[Path, list, str]]:
    """``items`` (panels, or rows of panels) in files of at most :data:`MAX_PANELS`: each file's path,
    its items and the words its title ends with; ``path`` itself where one file holds them all, else
    ``<stem>_1<suffix>``, ``<stem>_2<suffix>``, .... Removes the files of these names that an earlier
    call left and this one does not write, which would pass for part of this figure."""
    chunks = [items[i:i + MAX_PANELS] for i in range(0, len(items), MAX_PANELS)]
    if len(chunks) == 1:
        files = [(path, chunks[0], "")]
    else:
        files = [(path.with_name(f"{path.stem}_{i}{path.suffix}"), chunk, f" (file {i} of {len(chunks)})")
                 for i, chunk in enumerate(chunks, 1)]
    name = re.compile(rf"{re.escape(path.stem)}(_\d+)?{re.escape(path.suffix)}")
    for old in path.parent.iterdir():
        if name.fullmatch(old.name) and old.name not in {file.name for file, _, _ in files}:
            old.unlink()
    return files


def absent_note(runs: pd.DataFrame, drawn: pd.DataFrame, axes: list[str], why: str) -> list[str]:
    """A note naming the configurations of ``runs`` that ``drawn`` holds no row of (none if it holds all)."""
    held = set(drawn[axes].astype(str).itertuples(index=False, name=None))
    configs = ordered_groups(runs, axes)
    missing = [legend_name(key) for key, _ in configs if tuple(str(key[a]) for a in axes) not in held]
    return [f"{len(missing)} of {len(configs)} configurations {why}: {'; '.join(missing)}"] if missing else []


def save_figure(fig, path: Path) -> Path:
    """Writes ``fig`` to ``path`` (its format from the suffix), closes it and returns the path."""
    fig.savefig(path, dpi=PNG_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def finish_figure(fig, path: Path, title: str, notes: list[str]) -> Path:
    """Lays out and saves a figure, its title above the panels and its notes below them (the saved
    figure's bounds include both)."""
    fig.tight_layout()
    fig.suptitle(title, y=1.0, va="bottom")
    if notes:
        fig.text(0.01, 0.0, "\n".join(notes), fontsize=8, va="top", wrap=True)
    return save_figure(fig, path)


def labelled_artists(axes) -> dict:
    """Label -> artist over several axes, each label once (the panels of a figure draw the same lines)."""
    artists = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        artists.update({label: handle for label, handle in zip(labels, handles) if label not in artists})
    return artists


def place_legend(ax, artists: dict | None = None) -> None:
    """A legend beside the axes, where it covers no data, of ``artists`` (default: the axes' own
    labelled ones); none where nothing is labelled."""
    artists = labelled_artists([ax]) if artists is None else artists
    if artists:
        ax.legend(list(artists.values()), list(artists), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0.0)
