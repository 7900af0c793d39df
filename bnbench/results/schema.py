"""The CSV schema of a sweep's result files: column names, their meaning, and row builders.

``runs.csv`` has one row per run, ``curves.csv`` one row per run per evaluation point,
``activations.csv`` one row per run per evaluation point per hidden layer, ``probes.csv`` one row per
run per probe point per layer per value. All are plain comma-separated files with a header that
``pandas.read_csv`` loads as they are; a diverged run's metrics are written as ``nan``. The run fields'
columns come from the registry (:mod:`bnbench.experiment.fields`), the metrics' from :mod:`bnbench.results.metrics`;
``docs/columns.md`` lists every column (generated from these).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bnbench.training import context
from bnbench.experiment.fields import FIELDS
from bnbench.experiment.identity import trains_as
from bnbench.experiment.rules import csv_value
from bnbench.results.metrics import METRICS, PROBE_VALUES, RUN_METRICS
from bnbench.options import EVAL_STATS

if TYPE_CHECKING:
    from bnbench.experiment.fields import RunConfig
    from bnbench.training.outcomes import RunResult

MOMENTUM_CONVENTION = "running=momentum*running+(1-momentum)*batch"

# Columns derived from a run field, written after it.
_AFTER_FIELD = {
    "momentum": {"momentum_convention": f"always {MOMENTUM_CONVENTION!r} (flax/keras; PyTorch momentum = 1 - this)"},
    "lr_scaling_batch_size": {"effective_lr": "learning rate the optimizer used (the peak rate under a schedule)"},
}


def _config_columns() -> dict[str, str]:
    columns = {}
    for name, spec in FIELDS.items():
        columns[name] = spec.doc
        columns.update(_AFTER_FIELD.get(name, {}))
    return columns


RUN_COLUMNS: dict[str, str] = {
    "run_id": "stable hash of the run's full configuration (every field below up to seed)",
    "trains_as": "runs with the same trains_as train the same network on the same numbers (placement none under "
    "every norm kind; a norm setting without its norm), trained once (bnbench.experiment.identity); empty for runs "
    "recorded before the column existed",
    "spec": "name of the spec the run came from",
    "spec_hash": "hash of the resolved spec (spec.toml) the run came from",
    **_config_columns(),
    "seed": "seed of initialization, data order and every draw in training",
    "status": "ok or diverged",
    "diverged_step": "first step whose training loss was NaN/inf (empty if ok)",
    **{name: METRICS[name].doc for name in RUN_METRICS},
    "wall_s": METRICS["wall_s"].doc,
    "backend": context.COLUMNS["backend"],
    "num_params": "learned parameters of the run's model (norm layers' scale and offset included; empty for "
    "runs recorded before the column existed)",
    **{name: text for name, text in context.COLUMNS.items() if name != "backend"},
}

CURVE_COLUMNS: dict[str, str] = {
    "run_id": "the run (runs.csv)",
    "step": "training steps completed",
    "train_loss": "mean minibatch training loss since the previous evaluation",
    "test_loss": "test-split cross-entropy, BN in eval mode (first eval_stats mode)",
    "test_acc": "test-split accuracy, BN in eval mode (first eval_stats mode)",
}


ACTIVATION_COLUMNS: dict[str, str] = {
    "run_id": "the run (runs.csv)",
    "step": "training steps completed",
    "layer": "hidden layer, 1 = closest to the input",
    "p15": "15th percentile of the layer's input to its nonlinearity (all units, fixed evaluation batch)",
    "p50": "median of the same values",
    "p85": "85th percentile of the same values",
    "mean": "mean of the same values",
    "std": "standard deviation (ddof=0) of the same values",
}


PROBE_COLUMNS: dict[str, str] = {
    "run_id": "the run (runs.csv)",
    "step": "training steps completed (0: at initialization)",
    "layer": "layer, 1 = closest to the input, hidden layers then the head; 0: the whole network",
    "probe": f"what the value measures (bnbench.training.probes): {', '.join(PROBE_VALUES)}",
    "value": "the measured value",
}


def argument_columns(config: RunConfig, columns: tuple[str, ...]) -> dict:
    """The ``"model_args.NAME"`` columns of a run (empty where it does not set the argument)."""
    values = {}
    for column in columns:
        field, _, name = column.partition(".")
        values[column] = csv_value(dict(getattr(config, field)).get(name, ""))
    return values


def run_row(config: RunConfig, result: RunResult, *, spec: str, spec_hash: str, arguments: tuple[str, ...] = ()) -> dict:
    """The ``runs.csv`` row of one finished run, keyed by :data:`RUN_COLUMNS` and then ``arguments``
    (:func:`argument_columns`); ``result.context`` gives its execution context."""
    row = {"run_id": config.run_id, "trains_as": trains_as(config), "spec": spec, "spec_hash": spec_hash}
    row.update({k: csv_value(v) for k, v in dataclasses.asdict(config).items()})
    row.update(argument_columns(config, arguments))
    row.update(
        momentum_convention=MOMENTUM_CONVENTION,
        num_params=result.num_params,
        effective_lr=config.effective_lr,
        status=result.status,
        diverged_step=result.diverged_step,
        final_train_loss=result.final_train_loss,
        test_loss=result.test_loss,
        test_acc=result.test_acc,
        **{f"test_acc_{mode}": result.test_acc_by_stats.get(mode) for mode in EVAL_STATS},
        wall_s=round(result.wall_s, 4),
        **result.context._asdict(),
    )
    return {column: row[column] for column in (*RUN_COLUMNS, *arguments)}


def curve_rows(config: RunConfig, result: RunResult) -> list[dict]:
    """The ``curves.csv`` rows of one finished run, keyed by :data:`CURVE_COLUMNS`."""
    return [{"run_id": config.run_id, **point._asdict()} for point in result.curve]


def activation_rows(config: RunConfig, result: RunResult) -> list[dict]:
    """The ``activations.csv`` rows of one finished run (none unless it tracked activations)."""
    return [{"run_id": config.run_id, **point._asdict()} for point in result.activations]


def probe_rows(config: RunConfig, result: RunResult) -> list[dict]:
    """The ``probes.csv`` rows of one finished run (none unless it has probes)."""
    return [{"run_id": config.run_id, **point._asdict()} for point in result.probes]
