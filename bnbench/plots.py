"""PNG figures of a sweep, drawn with matplotlib's non-interactive Agg backend.

Every figure shows every group of runs, or says on the figure what it leaves out.

* ``<metric>_vs_<axis>.png`` for every numeric swept axis: the metric's mean over seeds against the
  axis, one line per combination of the other swept axes (averaged over the other numeric axes when
  that would give more than :data:`MAX_LINES` lines, and the title says so), error bars of one
  standard deviation over seeds. Values where runs diverged are marked with a red ``x`` at the foot
  of the plot, labelled ``k/n`` (diverged runs of that group at that value). Log axes (batch size,
  epsilon, learning rate, ...) carry a tick at every value; BN and SGD momentum are drawn as
  ``1 - momentum`` on a log axis (ticks show the momentum), and ghost batch size 0 (the whole batch)
  at the batch size.
* ``learning_curves.png``: training loss and test accuracy against steps, one line per group, a band
  of one standard deviation over seeds; when there are more than :data:`MAX_LINES` groups, one row of
  panels per value of the axes that split them (at most :data:`MAX_PANELS` rows; the figure names any
  left out). Runs that diverged end at their divergence step (``curves.csv`` holds NaN after it),
  marked with a red ``x``.
* ``activations.png`` (when runs tracked activations): the 15th, 50th and 85th percentiles of each
  hidden layer's input to its nonlinearity against steps, one column per configuration (with and
  without BN side by side), as in Ioffe & Szegedy (2015, Fig. 1b-c).
* ``probes.png`` (when runs had probes): one row per probe value, one column per configuration of the
  categorical swept axes (norm on and off side by side), one line per layer, a band of one standard
  deviation over seeds, from step 0 (initialization) on; at most :data:`MAX_ACTIVATION_COLUMNS`
  columns, and the figure names any left out.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.transforms as mtransforms  # noqa: E402
import pandas as pd  # noqa: E402

from bnbench import metrics  # noqa: E402
from bnbench.config import FIELDS, NUMERIC_AXES  # noqa: E402
from bnbench.runs import argument_key  # noqa: E402
from bnbench.summary import swept_axes  # noqa: E402

LOG_AXES = tuple(name for name in NUMERIC_AXES if FIELDS[name].scale == "log")
ONE_MINUS_AXES = tuple(name for name in NUMERIC_AXES if FIELDS[name].scale == "one_minus")  # 1 - value, log axis
MAX_LINES = 10
MAX_PANELS = 8
MAX_ACTIVATION_COLUMNS = 6


def _label(column: str) -> str:
    """A column's axis label: the run field's (:mod:`bnbench.config`), the keyword argument's, or the
    metric's (:mod:`bnbench.metrics`)."""
    field = FIELDS.get(column)
    if field is not None:
        return field.label or column.replace("_", " ")
    if argument_key(column):
        field, name = argument_key(column)
        return f"{name} ({field.replace('_args', '')} argument)"
    return metrics.label(column)


def numeric_axes(runs: pd.DataFrame) -> list[str]:
    """The swept axes drawn on an x axis: the numeric run fields and numeric keyword arguments."""
    return [a for a in swept_axes(runs) if a in NUMERIC_AXES or (argument_key(a) and pd.api.types.is_numeric_dtype(runs[a]))]


def metric_label(metric: str, runs: pd.DataFrame) -> str:
    """The axis label of ``metric``, naming the statistics BN was evaluated with where runs used BN."""
    mode = metric.removeprefix("test_acc_") if metric.startswith("test_acc_") else None
    base = "test accuracy" if mode else _label(metric)
    uses_bn = ((runs["norm"].astype(str) == "batch") & (runs["placement"].astype(str) != "none")).any()
    if not uses_bn or not (mode or metric in ("test_acc", "test_loss")):
        return base
    modes = mode or "/".join(dict.fromkeys(runs["eval_stats"].astype(str).str.split("-").str[0]))
    return f"{base}, BN with {modes} statistics"


def _legend_name(keys: list[str], values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values)) or "all runs"


def _groupby(frame: pd.DataFrame, keys: list[str]):
    return list(frame.groupby(keys, observed=True, sort=False)) if keys else [((), frame)]


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _save_columns(fig, title: str, shown: int, total: int, source: str, path: Path) -> Path:
    """Saves a figure of one column per configuration, its title naming any configurations left out."""
    if total > shown:
        title += f"\n{total - shown} of {total} configurations left out (all in {source})"
    fig.tight_layout()
    fig.suptitle(title, y=1.0, va="bottom")  # above the panels; the saved figure's bounds include it
    return _save(fig, path)


def _legend(ax) -> None:
    """A legend beside the axes, where it covers no data (none for a panel with nothing labelled)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


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
    """Log scale where it fits, with a labelled tick at every value (never a lone tick label)."""
    log = axis in ONE_MINUS_AXES or (axis in LOG_AXES and (positions > 0).all())
    if log:
        ax.set_xscale("log")
    ticks = sorted(positions.unique())
    step = math.ceil(len(ticks) / 12)
    ticks = ticks[::step]
    ax.set_xticks(ticks, [_tick_text(axis, t) for t in ticks])
    ax.minorticks_off()
    if axis in ONE_MINUS_AXES:
        ax.set_xlabel(f"{_label(axis)}; log scale of 1 − momentum")
    else:
        ax.set_xlabel(_label(axis) + ("; log scale" if log else ""))


def _mark_diverged(ax, x: float, diverged: int, total: int, color: str, label: str | None) -> None:
    foot = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    ax.plot([x], [0.03], "x", color="red", markersize=8, mew=2, transform=foot, clip_on=False, label=label)
    ax.text(x, 0.07, f"{diverged}/{total}", color=color, fontsize=7, ha="center", transform=foot)


def metric_vs_axis(runs: pd.DataFrame, axis: str, metric: str, path: Path) -> Path:
    """The metric against one numeric swept axis; see the module docstring."""
    frame = runs.assign(_x=_positions(runs, axis), _ok=runs["status"] == "ok")
    others = [a for a in swept_axes(runs) if a != axis]
    if others and frame.groupby(others, observed=True).ngroups > MAX_LINES:
        others = [a for a in others if a not in numeric_axes(runs)]
    averaged = [a for a in swept_axes(runs) if a not in (axis, *others)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    marked = False
    for key, group in _groupby(frame, others):
        ok = group[group["_ok"]]
        stats = ok.groupby("_x")[metric].agg(["mean", "std"]).reset_index()
        line = ax.errorbar(stats["_x"], stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3,
                           label=_legend_name(others, key))
        color = line.lines[0].get_color()
        counts = group.groupby("_x")["_ok"].agg(["size", "sum"])
        for x, row in counts[counts["sum"] < counts["size"]].iterrows():
            label = None if marked else "diverged runs (k/n at that value)"
            _mark_diverged(ax, x, int(row["size"] - row["sum"]), int(row["size"]), color, label)
            marked = True
    _set_x_scale(ax, axis, frame["_x"])
    ax.set_ylabel(f"{metric_label(metric, runs)}\n(mean ± std over seeds)")
    note = f"; averaged over {', '.join(averaged)}" if averaged else ""
    ax.set_title(f"{_label(metric)} against {_label(axis)}{note}", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def _panel_axes(runs: pd.DataFrame, axes_names: list[str]) -> tuple[list[str], list[str]]:
    """Splits the swept axes into those that make panel rows and those that make lines, so that no
    panel holds more than :data:`MAX_LINES` lines where that can be: axes with the fewest values become
    panels first, and the last axis always makes lines (one line per panel would help nobody)."""
    counts = {a: runs[a].nunique(dropna=False) for a in axes_names}
    panels, lines = [], list(axes_names)
    while len(lines) > 1 and math.prod(counts[a] for a in lines) > MAX_LINES:
        fewest = min(lines, key=lambda a: counts[a])
        lines.remove(fewest)
        panels.append(fewest)
    return [a for a in axes_names if a in panels], lines


def learning_curves(runs: pd.DataFrame, curves: pd.DataFrame, path: Path) -> Path:
    """Training loss and test accuracy against steps per group; see the module docstring."""
    axes_names = swept_axes(runs)
    frame = curves.merge(runs[["run_id", "status", "diverged_step", *axes_names]], on="run_id")
    panel_axes, line_axes = _panel_axes(runs, axes_names)
    panels = _groupby(frame, panel_axes)
    shown = panels[:MAX_PANELS]
    fig, grid = plt.subplots(len(shown), 2, figsize=(13, 3.4 * len(shown) + 0.6), squeeze=False)
    for (panel_key, panel), (loss_ax, acc_ax) in zip(shown, grid):
        for key, group in _groupby(panel, line_axes):
            runs_in = group.drop_duplicates("run_id")
            diverged = runs_in[runs_in["status"] != "ok"]
            label = _legend_name(line_axes, key) + (f" ({len(diverged)}/{len(runs_in)} diverged)" if len(diverged) else "")
            for ax, column in ((loss_ax, "train_loss"), (acc_ax, "test_acc")):
                stats = group.groupby("step")[column].agg(["mean", "std"]).reset_index()
                line = ax.plot(stats["step"], stats["mean"], label=label)[0]
                spread = stats["std"].fillna(0)
                ax.fill_between(stats["step"], stats["mean"] - spread, stats["mean"] + spread, color=line.get_color(), alpha=0.2)
                foot = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
                for step in diverged["diverged_step"].dropna():
                    ax.plot([float(step)], [0.03], "x", color="red", mew=2, transform=foot, clip_on=False)
        where = _legend_name(panel_axes, panel_key) + ": " if panel_axes else ""
        loss_ax.set_title(f"{where}training loss, mean ± std over seeds", fontsize=10)
        acc_ax.set_title(f"{where}test accuracy, mean ± std over seeds", fontsize=10)
        loss_ax.set_ylabel("training loss\n(mean minibatch loss per interval)")
        acc_ax.set_ylabel(metric_label("test_acc", runs))
        for ax in (loss_ax, acc_ax):
            ax.set_xlabel("training step")
            ax.grid(alpha=0.3)
        if (panel["train_loss"] > 0).any():
            loss_ax.set_yscale("log")
        _legend(acc_ax)
    notes = ["red x: a run diverged at that step (its metrics are NaN from there on)"] if (runs["status"] != "ok").any() else []
    if len(panels) > len(shown):
        left_out = [_legend_name(panel_axes, k) for k, _ in panels[len(shown):]]
        listed = "; ".join(left_out[:4]) + ("; ..." if len(left_out) > 4 else "")
        notes.append(f"{len(left_out)} of {len(panels)} panels left out: {listed} (all in curves.csv)")
    if notes:
        fig.text(0.01, 0.0, "\n".join(notes), fontsize=8, va="top", wrap=True)
    fig.tight_layout()
    return _save(fig, path)


def activation_percentiles(runs: pd.DataFrame, activations: pd.DataFrame, path: Path) -> Path:
    """Percentiles of each layer's input to its nonlinearity over steps; see the module docstring."""
    tracked = runs[runs["run_id"].isin(activations["run_id"])]
    columns = [a for a in swept_axes(tracked) if a not in numeric_axes(tracked)] or ["placement"]
    frame = activations.merge(tracked[["run_id", *columns]], on="run_id")
    every = _groupby(frame, columns)
    configs = every[:MAX_ACTIVATION_COLUMNS]
    layers = sorted(frame["layer"].unique())
    fig, grid = plt.subplots(len(layers), len(configs), figsize=(4 * len(configs), 3 * len(layers)),
                             squeeze=False, sharex=True, sharey="row")
    for col, (key, group) in enumerate(configs):
        for row, layer in enumerate(layers):
            ax = grid[row][col]
            means = group[group["layer"] == layer].groupby("step")[["p15", "p50", "p85"]].mean()
            for name, style in (("p85", "--"), ("p50", "-"), ("p15", ":")):
                ax.plot(means.index, means[name], style, color="k", label=f"{name[1:]}th percentile")
            ax.set_title(f"layer {layer}: {_legend_name(columns, key)}", fontsize=9)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("input to nonlinearity")
            if row == len(layers) - 1:
                ax.set_xlabel("training step")
    grid[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    title = "Distribution of each hidden layer's input to its nonlinearity (fixed test batch, mean over seeds)"
    return _save_columns(fig, title, len(configs), len(every), "activations.csv", path)


def probe_curves(runs: pd.DataFrame, probes: pd.DataFrame, path: Path) -> Path:
    """Each probe value against the training step; see the module docstring."""
    columns = [a for a in swept_axes(runs) if a not in numeric_axes(runs)] or swept_axes(runs)[:1]
    frame = probes.merge(runs[["run_id", *columns]], on="run_id")
    names = list(dict.fromkeys(frame["probe"].astype(str)))
    every = _groupby(frame, columns)
    configs = every[:MAX_ACTIVATION_COLUMNS]
    fig, grid = plt.subplots(len(names), len(configs), figsize=(4 * len(configs) + 1.5, 2.8 * len(names)),
                             squeeze=False, sharex=True, sharey="row")
    for col, (key, group) in enumerate(configs):
        for row, name in enumerate(names):
            ax = grid[row][col]
            values = group[group["probe"].astype(str) == name]
            if values.empty:
                ax.text(0.5, 0.5, f"{name}: not measured in these runs\n(see bnbench.probes)", ha="center", va="center",
                        transform=ax.transAxes, fontsize=8, color="0.4")
            lowest = float("inf")
            for layer, per_layer in values.groupby("layer"):
                stats = per_layer.groupby("step")["value"].agg(["mean", "std"]).reset_index()
                label = "whole network" if layer == 0 else f"layer {layer}"
                line = ax.plot(stats["step"], stats["mean"], marker=".", label=label)[0]
                spread = stats["std"].fillna(0)
                ax.fill_between(stats["step"], stats["mean"] - spread, stats["mean"] + spread, color=line.get_color(), alpha=0.2)
                lowest = min(lowest, (stats["mean"] - spread).min())
            # A log scale only where every band stays positive: it would draw a band below 0 to the edge.
            if lowest > 0 and name not in ("ics_cosine", "loss_min", "loss_max"):
                ax.set_yscale("log")
            ax.set_title(f"{name}: {_legend_name(columns, key)}", fontsize=9)
            ax.grid(alpha=0.3)
            if row == len(names) - 1:
                ax.set_xlabel("training step (0: initialization)")
    for row in grid:
        _legend(row[-1])
    title = "Mechanism probes (bnbench.probes) on the fixed probe batch: mean ± std over seeds"
    return _save_columns(fig, title, len(configs), len(every), "probes.csv", path)


def write_plots(
    out_dir: str | Path, runs: pd.DataFrame, curves: pd.DataFrame, activations: pd.DataFrame, metric: str,
    probes: pd.DataFrame | None = None,
) -> list[Path]:
    """Writes every figure that applies to this sweep into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    paths = [metric_vs_axis(runs, axis, metric, out_dir / f"{metric}_vs_{axis}.png") for axis in numeric_axes(runs)]
    if len(curves):
        paths.append(learning_curves(runs, curves, out_dir / "learning_curves.png"))
    if len(activations):
        paths.append(activation_percentiles(runs, activations, out_dir / "activations.png"))
    if probes is not None and len(probes):
        paths.append(probe_curves(runs, probes, out_dir / "probes.png"))
    return paths
