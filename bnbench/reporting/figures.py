"""Figures of a sweep, drawn with matplotlib's non-interactive Agg backend, as PNG at
:data:`bnbench.reporting.figure_layout.PNG_DPI` dpi (print quality), PDF or SVG
(:data:`bnbench.options.PLOT_FORMATS`; the names below end in the format's suffix). What every figure
shares (labels, gids, panels, files, legends) is :mod:`bnbench.reporting.figure_layout`.

The contract: no figure pools configurations. A configuration is one combination of the swept axes
(:func:`bnbench.stats.summary.swept_axes`, the seed aside), and every figure draws every configuration apart:

* Every swept axis is on the x axis, makes the lines, or makes the panels; the only statistics over
  runs are over seeds. The axes with the fewest values make panels until no panel holds more than
  :data:`MAX_LINES` lines; the last axis always makes lines
  (:func:`bnbench.reporting.figure_layout.panels_and_lines`).
* A file holds at most :data:`bnbench.reporting.figure_layout.MAX_PANELS` panels, or rows of panels
  where each configuration takes a row. A figure with more goes to several files, ``<name>_1.png``, ``<name>_2.png``, ..., titled
  ``(file i of n)``, rather than shrinking panels or leaving any out; parts an earlier, larger figure
  left are removed. :func:`write_plots` returns every file.
* A configuration with nothing to draw (no rows in that CSV file, no value of the metric) is named in
  a note below the figure.
* Panels, rows and lines come in the order the values first appear, the axis of fewest values varying
  fastest (BN on and off side by side). Values read as in ``runs.csv``, but a list of three or more
  equal values reads ``3×100`` (widths 100-100-100).
* Every drawn line and marker carries a matplotlib gid naming what it draws and its configuration
  (:func:`bnbench.reporting.figure_layout.gid`); SVG writes it as the element's ``id``, so that a test
  reads what was drawn.

The figures:

* ``paired_<axis>_<a>_vs_<b>.png`` for every comparison the spec states (or the report is asked for):
  what its verdicts rest on. One row per group of the comparison (the other swept axes), the mean
  paired difference ``a - b`` over seeds with its paired-t interval, the verdict beside it, a dashed
  zero line and the margin shaded where the spec sets one. Unlike the error bars of the other figures
  (one standard deviation of each configuration's runs), these intervals are of the differences
  between runs paired by seed, so they can exclude 0 where two configurations' bars overlap.
* ``<metric>_vs_<axis>.png`` for every numeric swept axis (:func:`numeric_axes`: depth, dropout,
  noisy_bn, warmup_steps, weight decay, momentum, ... and numeric keyword arguments): one marker per
  configuration at its mean over seeds, error bars of one standard deviation, a line through the
  configurations of each combination of the line axes, one panel (the y axis shared) per combination
  of the panel axes. Configurations whose runs diverged are marked with a red ``x`` at the foot of the
  plot, labelled ``k/n`` (diverged runs of that configuration). Log axes (batch size, epsilon,
  learning rate, weight decay, ...) carry a tick at every value, linear from 0 to the smallest other
  value where 0 is one (weight decay off); BN and SGD momentum are drawn as ``1 - momentum`` on a log
  axis (ticks show the momentum), and ghost batch size 0 (the whole batch) at the batch size.
* ``learning_curves.png``: one row per combination of the panel axes, training loss and test accuracy
  against steps, one line per configuration, a band of one standard deviation over seeds. Runs that
  diverged end at their divergence step (``curves.csv`` holds NaN after it), marked with a red ``x``.
* ``activations.png`` (when runs tracked activations): one row per configuration, one panel per hidden
  layer: the 15th, 50th and 85th percentiles of the layer's input to its nonlinearity against steps,
  as in Ioffe & Szegedy (2015, Fig. 1b-c).
* ``probes.png`` (when runs had probes): one row per configuration, one panel per probe value (the y
  axis shared down each column), one line per layer (coloured from the input to the head; where layers
  are more than :data:`MAX_LINES`, the legend names every k-th), a band of one standard deviation over
  seeds, from step 0 (initialization) on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.transforms as mtransforms  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bnbench.experiment.fields import FIELDS, NUMERIC_AXES  # noqa: E402
from bnbench.experiment.runs import argument_key  # noqa: E402
from bnbench.reporting import paired  # noqa: E402
from bnbench.reporting.figure_layout import (  # noqa: E402
    MAX_LINES, absent_note, axis_label, finish_figure, gid, labelled_artists, legend_name, line_colors,
    ordered_groups, panels_and_lines, place_legend, split_into_files,
)
from bnbench.stats.summary import swept_axes  # noqa: E402

LOG_AXES = tuple(name for name in NUMERIC_AXES if FIELDS[name].scale == "log")
ONE_MINUS_AXES = tuple(name for name in NUMERIC_AXES if FIELDS[name].scale == "one_minus")  # 1 - value, log axis
LINEAR_PROBES = ("ics_cosine", "loss_min", "loss_max")  # signed or compared as differences: never a log axis


def numeric_axes(runs: pd.DataFrame) -> list[str]:
    """The swept axes drawn on an x axis: the numeric run fields and numeric keyword arguments."""
    return [a for a in swept_axes(runs) if a in NUMERIC_AXES or (argument_key(a) and pd.api.types.is_numeric_dtype(runs[a]))]


def metric_label(metric: str, runs: pd.DataFrame) -> str:
    """The axis label of ``metric``, naming the statistics BN was evaluated with where runs used BN."""
    mode = metric.removeprefix("test_acc_") if metric.startswith("test_acc_") else None
    base = "test accuracy" if mode else axis_label(metric)
    uses_bn = ((runs["norm"].astype(str) == "batch") & (runs["placement"].astype(str) != "none")).any()
    if not uses_bn or not (mode or metric in ("test_acc", "test_loss")):
        return base
    modes = mode or "/".join(dict.fromkeys(runs["eval_stats"].astype(str).str.split("-").str[0]))
    return f"{base}, BN with {modes} statistics"


def _positions(frame: pd.DataFrame, axis: str) -> pd.Series:
    """Where each run sits on the x axis of ``axis``."""
    values = frame[axis].astype(float)
    if axis in ONE_MINUS_AXES:
        return 1.0 - values
    if axis == "ghost_batch_size":
        return values.where(values > 0, frame["batch_size"].astype(float))
    return values


def _tick_text(axis: str, position: float) -> str:
    return f"{1.0 - position:g}" if axis in ONE_MINUS_AXES else f"{position:g}"


def _set_x_scale(ax, axis: str, positions: pd.Series) -> None:
    """Log scale where it fits, with a labelled tick at every value (never a lone tick label); a log
    axis whose values include 0 (weight decay off) is linear from 0 to the smallest other value."""
    positive = positions[positions > 0]
    log = axis in ONE_MINUS_AXES or (axis in LOG_AXES and len(positive) > 0 and (positions >= 0).all())
    scale = "; log scale" if log else ""
    if log and len(positive) < len(positions):
        ax.set_xscale("symlog", linthresh=positive.min())
        scale += f", linear from 0 to {positive.min():g}"
    elif log:
        ax.set_xscale("log")
    ticks = sorted(positions.unique())
    step = math.ceil(len(ticks) / 12)
    ticks = ticks[::step]
    ax.set_xticks(ticks, [_tick_text(axis, t) for t in ticks])
    ax.minorticks_off()
    if axis in ONE_MINUS_AXES:
        ax.set_xlabel(f"{axis_label(axis)}; log scale of 1 − momentum")
    else:
        ax.set_xlabel(axis_label(axis) + scale)


def _mark_diverged(ax, x: float, diverged: int, total: int, color, config: dict) -> None:
    foot = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    ax.plot([x], [0.03], "x", color="red", markersize=8, mew=2, transform=foot, clip_on=False,
            label="diverged runs (k/n of that configuration)", gid=gid("diverged", config))
    ax.text(x, 0.07, f"{diverged}/{total}", color=color, fontsize=7, ha="center", transform=foot)


def _metric_panel(ax, panel: pd.DataFrame, axis: str, metric: str, where: dict, line_axes: list[str],
                  colors: dict) -> list[str]:
    """One panel of :func:`metric_vs_axis`: per configuration a marker with error bars (mean ± std over
    seeds) and a red x for its diverged runs, a line through each line's configurations; returns the
    names of the configurations with nothing to draw (no value of the metric)."""
    missing, marks = [], []
    for key, line in ordered_groups(panel, line_axes):
        name = legend_name(key)
        means = []
        for point, runs_at in ordered_groups(line, [axis]):
            config = {**where, **key, **point}
            x, values = runs_at["_x"].iloc[0], runs_at.loc[runs_at["_ok"], metric].dropna()
            diverged = int((~runs_at["_ok"]).sum())
            if len(values):
                spread = values.std() if len(values) > 1 else 0.0
                bars = ax.errorbar([x], [values.mean()], yerr=[spread], fmt="o", color=colors[name], capsize=3)
                bars.lines[0].set_gid(gid(metric, config))
                means.append((x, values.mean()))
            if diverged:
                marks.append((x, diverged, len(runs_at), colors[name], config))
            if not len(values) and not diverged:
                missing.append(legend_name(config))
        # The legend's entry: a line through the means, drawn (empty) where every run diverged.
        ax.plot(*(zip(*sorted(means)) if means else ([], [])), marker="o", color=colors[name], label=name)
    for mark in marks:  # after the lines: the legend lists them last
        _mark_diverged(ax, *mark)
    return missing


def metric_vs_axis(runs: pd.DataFrame, axis: str, metric: str, path: str | Path) -> list[Path]:
    """The metric against one numeric swept axis, in ``path`` or its parts; see the module docstring."""
    frame = runs.assign(_x=_positions(runs, axis), _ok=runs["status"] == "ok")
    panel_axes, line_axes = panels_and_lines(runs, [a for a in swept_axes(runs) if a != axis])
    colors = line_colors(frame, line_axes)
    title = f"{axis_label(metric)} against {axis_label(axis)}, mean ± std over seeds"
    written = []
    for file, panels, part in split_into_files(ordered_groups(frame, panel_axes), Path(path)):
        columns = min(2, len(panels))
        rows = math.ceil(len(panels) / columns)
        fig, grid = plt.subplots(rows, columns, figsize=(7 * columns, 4.5 * rows), squeeze=False, sharey=True)
        missing, left_label = [], None
        for index, ((where, panel), ax) in enumerate(zip(panels, grid.flat)):
            missing += _metric_panel(ax, panel, axis, metric, where, line_axes, colors)
            _set_x_scale(ax, axis, frame["_x"])
            ax.set_title(legend_name(where) if panel_axes else "", fontsize=10)
            ax.grid(alpha=0.3)
            # Each panel's label names the statistics of its own runs: a panel without BN says nothing of BN.
            label = f"{metric_label(metric, panel)}\n(mean ± std over seeds)"
            if index % columns == 0 or label != left_label:
                ax.set_ylabel(label)
            left_label = label
        for ax in grid.flat[len(panels):]:
            ax.remove()
        place_legend(grid[0][-1], labelled_artists(fig.axes))
        notes = [f"{len(missing)} configurations have no value of {metric}: {'; '.join(missing)}"] if missing else []
        written.append(finish_figure(fig, file, title + part, notes))
    return written


def _curve_row(row, panel: pd.DataFrame, where: dict, line_axes: list[str], colors: dict, runs: pd.DataFrame) -> None:
    """One row of :func:`learning_curves`: training loss and test accuracy, a line per configuration."""
    loss_ax, acc_ax = row
    for key, group in ordered_groups(panel, line_axes):
        runs_in = group.drop_duplicates("run_id")
        diverged = runs_in[runs_in["status"] != "ok"]
        label = legend_name(key) + (f" ({len(diverged)}/{len(runs_in)} diverged)" if len(diverged) else "")
        color = colors[legend_name(key)]
        for ax, column in ((loss_ax, "train_loss"), (acc_ax, "test_acc")):
            stats = group.groupby("step")[column].agg(["mean", "std"]).reset_index()
            ax.plot(stats["step"], stats["mean"], marker=".", color=color, label=label, gid=gid(column, {**where, **key}))
            spread = stats["std"].fillna(0)
            ax.fill_between(stats["step"], stats["mean"] - spread, stats["mean"] + spread, color=color, alpha=0.2)
            foot = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
            for step in diverged["diverged_step"].dropna():
                ax.plot([float(step)], [0.03], "x", color="red", mew=2, transform=foot, clip_on=False)
    heading = f"{legend_name(where)}: " if where else ""
    loss_ax.set_title(f"{heading}training loss, mean ± std over seeds", fontsize=10)
    acc_ax.set_title(f"{heading}test accuracy, mean ± std over seeds", fontsize=10)
    loss_ax.set_ylabel("training loss\n(mean minibatch loss per interval)")
    acc_ax.set_ylabel(metric_label("test_acc", runs[runs["run_id"].isin(panel["run_id"])]))
    for ax in row:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    if (panel["train_loss"] > 0).any():
        loss_ax.set_yscale("log")
    place_legend(acc_ax)


def learning_curves(runs: pd.DataFrame, curves: pd.DataFrame, path: str | Path) -> list[Path]:
    """Training loss and test accuracy against steps, in ``path`` or its parts; see the module docstring."""
    axes_names = swept_axes(runs)
    frame = curves.merge(runs[["run_id", "status", "diverged_step", *axes_names]], on="run_id")
    panel_axes, line_axes = panels_and_lines(runs, axes_names)
    colors = line_colors(frame, line_axes)
    notes = absent_note(runs, frame, axes_names, "have no rows in curves.csv")
    if (runs["status"] != "ok").any():
        notes.insert(0, "red x: a run diverged at that step (its metrics are NaN from there on)")
    written = []
    for file, panels, part in split_into_files(ordered_groups(frame, panel_axes), Path(path)):
        fig, grid = plt.subplots(len(panels), 2, figsize=(13, 3.4 * len(panels) + 0.6), squeeze=False)
        for (where, panel), row in zip(panels, grid):
            _curve_row(row, panel, where, line_axes, colors, runs)
        written.append(finish_figure(fig, file, "Learning curves" + part, notes))
    return written


def _rows_figure(rows: int, columns: int, row_height: float):
    """A figure of one row per configuration, ``columns`` panels each, sharing the step axis and each
    column's y axis (one layer, or one probe value, reads down a column)."""
    return plt.subplots(rows, columns, figsize=(4 * columns + 1.5, row_height * rows), squeeze=False, sharex=True,
                        sharey="col")


def activation_percentiles(runs: pd.DataFrame, activations: pd.DataFrame, path: str | Path) -> list[Path]:
    """Percentiles of each layer's input to its nonlinearity over steps, in ``path`` or its parts; see
    the module docstring."""
    axes_names = swept_axes(runs)
    frame = activations.merge(runs[["run_id", *axes_names]], on="run_id")
    layers = sorted(frame["layer"].unique())
    notes = absent_note(runs, frame, axes_names, "tracked no activations")
    title = "Distribution of each hidden layer's input to its nonlinearity (fixed test batch, mean over seeds)"
    written = []
    for file, rows, part in split_into_files(ordered_groups(frame, axes_names), Path(path)):
        fig, grid = _rows_figure(len(rows), len(layers), 3)
        for (config, group), axes_row in zip(rows, grid):
            for layer, ax in zip(layers, axes_row):
                means = group[group["layer"] == layer].groupby("step")[["p15", "p50", "p85"]].mean()
                if means.empty:  # a shallower net of the sweep has no such layer
                    ax.set_axis_off()
                    continue
                for name, style in (("p85", "--"), ("p50", "-"), ("p15", ":")):
                    ax.plot(means.index, means[name], style, color="k", label=f"{name[1:]}th percentile",
                            gid=gid(f"{name}.layer{layer}", config))
                ax.set_title(f"layer {layer}: {legend_name(config)}", fontsize=9)
                ax.grid(alpha=0.3)
        for ax in grid[:, 0]:
            ax.set_ylabel("input to nonlinearity")
        for ax in grid[-1]:
            ax.set_xlabel("training step")
        place_legend(grid[0][-1], labelled_artists(grid[0]))
        written.append(finish_figure(fig, file, title + part, notes))
    return written


def _log_scaled(frame: pd.DataFrame, axes: list[str]) -> set[str]:
    """The probe values drawn on a log scale: those whose every band (mean ± std over seeds, any
    configuration, layer and step) stays above 0; a log axis would draw a band below 0 to the edge."""
    stats = frame.groupby([*axes, "probe", "layer", "step"], observed=True, dropna=False)["value"].agg(["mean", "std"])
    lowest = (stats["mean"] - stats["std"].fillna(0)).groupby(level="probe").min()
    return {name for name, low in lowest.items() if low > 0 and name not in LINEAR_PROBES}


def _named_layers(layers: list[int]) -> set[int]:
    """The layers a legend names: all, or where more than :data:`MAX_LINES`, every k-th and the last
    (their colours run in order, so the lines between read from them)."""
    return set(layers[::math.ceil(len(layers) / MAX_LINES)]) | set(layers[-1:])


def _probe_panel(ax, values: pd.DataFrame, name: str, config: dict, colors: dict, named: set[int]) -> None:
    """One panel of :func:`probe_curves`: a probe value against the step, a line and band per layer."""
    if values.empty:
        ax.text(0.5, 0.5, f"{name}: not measured in these runs\n(see bnbench.training.probes)", ha="center", va="center",
                transform=ax.transAxes, fontsize=8, color="0.4")
    for layer, per_layer in values.groupby("layer"):
        stats = per_layer.groupby("step")["value"].agg(["mean", "std"]).reset_index()
        label = ("whole network" if layer == 0 else f"layer {layer}") if layer in named else None
        ax.plot(stats["step"], stats["mean"], marker=".", color=colors[layer], label=label,
                gid=gid(f"{name}.layer{layer}", config))
        spread = stats["std"].fillna(0)
        ax.fill_between(stats["step"], stats["mean"] - spread, stats["mean"] + spread, color=colors[layer], alpha=0.2)
    ax.set_title(f"{name}: {legend_name(config)}", fontsize=9)
    ax.grid(alpha=0.3)


def probe_curves(runs: pd.DataFrame, probes: pd.DataFrame, path: str | Path) -> list[Path]:
    """Each probe value against the training step, in ``path`` or its parts; see the module docstring."""
    axes_names = swept_axes(runs)
    frame = probes.merge(runs[["run_id", *axes_names]], on="run_id")
    frame["probe"] = frame["probe"].astype(str)
    names = list(dict.fromkeys(frame["probe"]))
    log = _log_scaled(frame, axes_names)
    layers = sorted(frame["layer"].unique())
    shades = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(layers)))
    colors = {layer: "k" if layer == 0 else shade for layer, shade in zip(layers, shades)}
    notes = absent_note(runs, frame, axes_names, "had no probes")
    title = "Mechanism probes (bnbench.training.probes) on the fixed probe batch: mean ± std over seeds"
    written = []
    for file, rows, part in split_into_files(ordered_groups(frame, axes_names), Path(path)):
        fig, grid = _rows_figure(len(rows), len(names), 2.8)
        for (config, group), axes_row in zip(rows, grid):
            named = _named_layers(sorted(group["layer"].unique()))
            for name, ax in zip(names, axes_row):
                _probe_panel(ax, group[group["probe"] == name], name, config, colors, named)
                if name in log:
                    ax.set_yscale("log")
            place_legend(axes_row[-1], labelled_artists(axes_row))
        for ax in grid[-1]:
            ax.set_xlabel("training step (0: initialization)")
        written.append(finish_figure(fig, file, title + part, notes))
    return written


def write_plots(
    out_dir: str | Path, runs: pd.DataFrame, curves: pd.DataFrame, activations: pd.DataFrame, metric: str,
    probes: pd.DataFrame | None = None, plot_format: str = "png", comparisons: Sequence = (), alpha: float = 0.05,
    margin: float | None = None,
) -> list[Path]:
    """Writes every figure that applies to this sweep into ``out_dir`` as ``plot_format`` files (one of
    :data:`bnbench.options.PLOT_FORMATS`) and returns their paths: the paired differences of each of
    ``comparisons`` (at ``1 - alpha``, with ``margin``), the metric against each numeric axis, the
    learning curves, the activations and the probes, each one file or its parts in order."""
    out_dir = Path(out_dir)

    def path(name: str) -> Path:
        return out_dir / f"{name}.{plot_format}"

    paths = [paired.paired_differences(c, metric, alpha, margin, path(paired.paired_stem(c))) for c in comparisons]
    paths += [p for axis in numeric_axes(runs) for p in metric_vs_axis(runs, axis, metric, path(f"{metric}_vs_{axis}"))]
    if len(curves):
        paths += learning_curves(runs, curves, path("learning_curves"))
    if len(activations):
        paths += activation_percentiles(runs, activations, path("activations"))
    if probes is not None and len(probes):
        paths += probe_curves(runs, probes, path("probes"))
    return paths
