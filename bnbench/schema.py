"""The CSV schema of a sweep's result files: column names, their meaning, and row builders.

``runs.csv`` has one row per run, ``curves.csv`` one row per run per evaluation point,
``activations.csv`` one row per run per evaluation point per hidden layer. All are plain
comma-separated files with a header that ``pandas.read_csv`` loads as they are; a diverged run's
metrics are written as ``nan``. ``results/README.md`` documents the same columns.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bnbench import context
from bnbench.options import EVAL_STATS

if TYPE_CHECKING:
    from bnbench.config import RunConfig
    from bnbench.outcomes import RunResult

MOMENTUM_CONVENTION = "running=momentum*running+(1-momentum)*batch"

RUN_COLUMNS: dict[str, str] = {
    "run_id": "stable hash of the run's full configuration (every field below up to seed)",
    "spec": "name of the spec the run came from",
    "spec_hash": "hash of the resolved spec (spec.toml) the run came from",
    "dataset": "data set name",
    "num_samples": "examples in the data set (train + test)",
    "model": "mlp, cnn, vgg or resnet",
    "widths": "hidden widths / channels, dash-separated (100-100-100); vgg and resnet: channels per stage",
    "activation": "relu, sigmoid or tanh",
    "placement": "pre (norm layer before the activation), post (after) or none (no norm layer)",
    "norm": "batch (BN), group (GroupNorm), layer (LayerNorm) or none",
    "groups": "GroupNorm's number of groups (used by norm=group only)",
    "ghost_batch_size": "BN statistics over sub-batches of this size; 0: the whole batch",
    "renorm": "whether BN is Batch Renormalization",
    "renorm_rmax": "renorm's bound on r (used by renorm only)",
    "renorm_dmax": "renorm's bound on d (used by renorm only)",
    "running_var": "biased or unbiased: the batch variance averaged into BN's running variance",
    "batch_size": "examples per training step",
    "epsilon": "epsilon of the norm layer",
    "momentum": "BN running-statistics decay; see momentum_convention",
    "momentum_convention": f"always {MOMENTUM_CONVENTION!r} (flax/keras; PyTorch momentum = 1 - this)",
    "eval_stats": "statistics BN was evaluated with, dash-separated; the first gives test_loss and test_acc",
    "precise_batches": "training batches of the precise statistics (used by eval_stats precise only)",
    "optimizer": "sgd or adam",
    "lr": "learning rate as written in the spec",
    "lr_scaling_batch_size": "0, or the batch size lr is for (the optimizer uses lr * batch_size / this)",
    "effective_lr": "learning rate the optimizer used",
    "optimizer_momentum": "SGD momentum (unused by adam)",
    "weight_decay": "weight decay (L2 for sgd, decoupled for adam)",
    "bn_weight_decay": "whether the norm layers' scale and offset got weight decay",
    "steps": "training steps",
    "epochs": "0, or the epochs steps were derived from",
    "eval_every": "steps between evaluations",
    "track_activations": "whether activations.csv holds this run's activation statistics",
    "probes": "mechanism probes recorded in probes.csv, dash-separated (empty: none)",
    "noisy_bn": "strength of the noise after every norm layer in training (0: off)",
    "depth": "vgg's or resnet's depth (weighted layers); 0 for mlp and cnn",
    "residual_unit": "resnet's unit: original, bn_after_add, relu_before_add, relu_preact, full_preact, or none "
    "(no shortcuts); original for other models",
    "shortcut": "resnet's shortcut where a unit changes shape: pad (option A) or projection (option B)",
    "init": "resnet's initialization: default (He), fixup or skipinit",
    "schedule": "learning-rate schedule: constant, step or cosine",
    "warmup_steps": "steps of linear learning-rate warm-up from 0",
    "lr_milestones": "step schedule: fractions of training after which lr is multiplied by lr_decay, dash-separated",
    "lr_decay": "step schedule's factor",
    "nesterov": "whether SGD used Nesterov momentum",
    "augment": "training augmentation: none or crop_flip (pad 4, random crop, random left-right flip)",
    "dropout": "dropout rate in training (0: off)",
    "dropout_placement": "after_activation or before_norm",
    "dtype": "float32, or bfloat16 (computation; parameters, optimizer state and norm statistics float32)",
    "seed": "seed of initialization and data order",
    "status": "ok or diverged",
    "diverged_step": "first step whose training loss was NaN/inf (empty if ok)",
    "final_train_loss": "mean minibatch training loss over the last evaluation interval",
    "test_loss": "cross-entropy on the test split after the last step, BN in eval mode (first eval_stats mode)",
    "test_acc": "accuracy on the test split after the last step, BN in eval mode (first eval_stats mode)",
    "test_acc_running": "test accuracy with BN's running statistics (empty unless in eval_stats)",
    "test_acc_batch": "test accuracy with each test batch's own statistics (empty unless in eval_stats)",
    "test_acc_precise": "test accuracy with precise population statistics (empty unless in eval_stats)",
    "wall_s": "seconds the run took, including compilation for the first run of each compiled signature on each "
    "device; vmapped runs: their block's time divided by the runs in the block",
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
    "probe": "what the value measures (bnbench.probes): grad_norm, weight_norm, effective_lr, ics_distance, "
    "ics_cosine, loss_min, loss_max, grad_predictiveness, beta_smoothness, mean_gap, var_gap",
    "value": "the measured value",
}


def csv_value(value):
    """A config value as written to CSV: tuples (widths) dash-separated."""
    if isinstance(value, tuple):
        return "-".join(str(v) for v in value)
    return value


def run_row(config: RunConfig, result: RunResult, *, spec: str, spec_hash: str) -> dict:
    """The ``runs.csv`` row of one finished run, keyed by :data:`RUN_COLUMNS`; ``result.context`` gives
    its execution context."""
    row = {"run_id": config.run_id, "spec": spec, "spec_hash": spec_hash}
    row.update({k: csv_value(v) for k, v in dataclasses.asdict(config).items()})
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
    return {column: row[column] for column in RUN_COLUMNS}


def curve_rows(config: RunConfig, result: RunResult) -> list[dict]:
    """The ``curves.csv`` rows of one finished run, keyed by :data:`CURVE_COLUMNS`."""
    return [{"run_id": config.run_id, **point._asdict()} for point in result.curve]


def activation_rows(config: RunConfig, result: RunResult) -> list[dict]:
    """The ``activations.csv`` rows of one finished run (none unless it tracked activations)."""
    return [{"run_id": config.run_id, **point._asdict()} for point in result.activations]


def probe_rows(config: RunConfig, result: RunResult) -> list[dict]:
    """The ``probes.csv`` rows of one finished run (none unless it has probes)."""
    return [{"run_id": config.run_id, **point._asdict()} for point in result.probes]
