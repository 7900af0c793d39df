"""PNG figures of a sweep, drawn with matplotlib's non-interactive Agg backend.

* ``<metric>_vs_<axis>.png`` for every numeric swept axis: the metric's mean over seeds against the
  axis (log scale for batch size, epsilon, learning rate, weight decay, data set size), one line per
  combination of the other swept axes, error bars of one standard deviation over seeds.
* ``learning_curves.png``: training loss and test accuracy against steps, one line per group, a band
  of one standard deviation over seeds.
* ``activations.png`` (when runs tracked activations): the 15th, 50th and 85th percentiles of each
  hidden layer's input to its nonlinearity against steps, one column per configuration (with and
  without BN side by side), as in Ioffe & Szegedy (2015, Fig. 1b-c).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bnbench.summary import swept_axes  # noqa: E402

NUMERIC_AXES = (
    "batch_size",
    "epsilon",
    "momentum",
    "lr",
    "optimizer_momentum",
    "weight_decay",
    "steps",
    "eval_every",
    "num_samples",
)
LOG_AXES = ("batch_size", "epsilon", "lr", "weight_decay", "num_samples")
MAX_LINES = 10
LABELS = {
    "test_acc": "test accuracy",
    "test_loss": "test loss (cross-entropy)",
    "final_train_loss": "final training loss",
    "batch_size": "batch size",
    "epsilon": "BN epsilon",
    "momentum": "BN momentum (running = m·running + (1−m)·batch)",
    "lr": "learning rate",
    "optimizer_momentum": "SGD momentum",
    "weight_decay": "weight decay",
    "num_samples": "data set size",
    "eval_every": "evaluation interval",
}


def _label(column: str) -> str:
    return LABELS.get(column, column.replace("_", " "))


def _legend_name(keys: list[str], values) -> str:
    values = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values)) or "all runs"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metric_vs_axis(runs: pd.DataFrame, axis: str, metric: str, path: Path) -> Path:
    """The metric against one numeric swept axis; see the module docstring."""
    ok = runs[runs["status"] == "ok"]
    others = [a for a in swept_axes(runs) if a != axis]
    if others and ok.groupby(others, observed=True).ngroups > MAX_LINES:
        # Too many lines to read: one line per categorical combination, averaged over other numeric axes.
        others = [a for a in others if a not in NUMERIC_AXES]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = ok.groupby(others, observed=True, sort=False) if others else [((), ok)]
    for key, group in groups:
        stats = group.groupby(axis)[metric].agg(["mean", "std"]).reset_index()
        ax.errorbar(stats[axis], stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3,
                    label=_legend_name(others, key))
    if axis in LOG_AXES and (ok[axis] > 0).all():
        ax.set_xscale("log", base=2 if axis == "batch_size" else 10)
        if axis == "batch_size":
            ax.set_xticks(sorted(ok[axis].unique()), [str(v) for v in sorted(ok[axis].unique())])
    ax.set_xlabel(_label(axis))
    ax.set_ylabel(f"{_label(metric)} (mean ± std over seeds)")
    averaged = [a for a in swept_axes(runs) if a not in (axis, *others)]
    note = f"; averaged over {', '.join(averaged)}" if averaged else ""
    ax.set_title(f"{_label(metric)} against {_label(axis)}{note}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def learning_curves(runs: pd.DataFrame, curves: pd.DataFrame, path: Path) -> Path:
    """Training loss and test accuracy against steps per group; see the module docstring."""
    axes_names = swept_axes(runs)
    frame = curves.merge(runs[["run_id", *axes_names]], on="run_id")
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    groups = frame.groupby(axes_names, observed=True, sort=False) if axes_names else [((), frame)]
    for (key, group), _ in zip(groups, range(MAX_LINES)):
        for ax, column in ((loss_ax, "train_loss"), (acc_ax, "test_acc")):
            stats = group.groupby("step")[column].agg(["mean", "std"]).reset_index()
            line = ax.plot(stats["step"], stats["mean"], label=_legend_name(axes_names, key))[0]
            spread = stats["std"].fillna(0)
            ax.fill_between(stats["step"], stats["mean"] - spread, stats["mean"] + spread, color=line.get_color(), alpha=0.2)
    loss_ax.set_ylabel("training loss (mean minibatch loss per interval)")
    acc_ax.set_ylabel("test accuracy (BN in eval mode)")
    for ax, title in ((loss_ax, "Training loss"), (acc_ax, "Test accuracy")):
        ax.set_xlabel("training step")
        ax.set_title(f"{title}: mean ± std over seeds")
        ax.grid(alpha=0.3)
    loss_ax.set_yscale("log")
    acc_ax.legend(fontsize=8)
    return _save(fig, path)


def activation_percentiles(runs: pd.DataFrame, activations: pd.DataFrame, path: Path) -> Path:
    """Percentiles of each layer's input to its nonlinearity over steps; see the module docstring."""
    tracked = runs[runs["run_id"].isin(activations["run_id"])]
    columns = [a for a in swept_axes(tracked) if a not in NUMERIC_AXES] or ["placement"]
    frame = activations.merge(tracked[["run_id", *columns]], on="run_id")
    configs = list(frame.groupby(columns, observed=True, sort=False))[:6]
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
    grid[0][0].legend(fontsize=8)
    fig.suptitle("Distribution of each hidden layer's input to its nonlinearity (fixed test batch, mean over seeds)")
    return _save(fig, path)


def write_plots(
    out_dir: str | Path, runs: pd.DataFrame, curves: pd.DataFrame, activations: pd.DataFrame, metric: str
) -> list[Path]:
    """Writes every figure that applies to this sweep into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    paths = [
        metric_vs_axis(runs, axis, metric, out_dir / f"{metric}_vs_{axis}.png")
        for axis in swept_axes(runs)
        if axis in NUMERIC_AXES
    ]
    if len(curves):
        paths.append(learning_curves(runs, curves, out_dir / "learning_curves.png"))
    if len(activations):
        paths.append(activation_percentiles(runs, activations, out_dir / "activations.png"))
    return paths
