"""What each measured value means: its range, whether higher is better, its label and its description.

One table (:data:`METRICS`) for the metrics of ``runs.csv`` and the values of ``probes.csv``: the
summary clips intervals to a metric's range, the tables mark the best mean by its direction, the
figures label their axes with it, and ``bnbench columns`` prints its description.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class Metric(NamedTuple):
    """A measured value: the range it can take, which way is better (None: neither), an axis label."""

    low: float
    high: float
    higher_is_better: bool | None
    label: str
    doc: str


_LOSS = (0.0, math.inf, False)
_ACCURACY = (0.0, 1.0, True)
_NORM = (0.0, math.inf, None)

METRICS: dict[str, Metric] = {
    "final_train_loss": Metric(*_LOSS, "final training loss", "mean minibatch training loss over the last evaluation interval"),
    "test_loss": Metric(*_LOSS, "test loss (cross-entropy)",
                        "cross-entropy on the test split after the last step, BN in eval mode (first eval_stats mode)"),
    "test_acc": Metric(*_ACCURACY, "test accuracy",
                       "accuracy on the test split after the last step, BN in eval mode (first eval_stats mode)"),
    "test_acc_running": Metric(*_ACCURACY, "test accuracy, BN with running statistics",
                               "test accuracy with BN's running statistics (empty unless in eval_stats)"),
    "test_acc_batch": Metric(*_ACCURACY, "test accuracy, BN with batch statistics",
                             "test accuracy with each test batch's own statistics (empty unless in eval_stats)"),
    "test_acc_precise": Metric(*_ACCURACY, "test accuracy, BN with precise statistics",
                               "test accuracy with precise population statistics (empty unless in eval_stats)"),
    "wall_s": Metric(0.0, math.inf, False, "seconds",
                     "seconds the run took, including compilation for the first run of each compiled signature on "
                     "each device; vmapped runs: their block's time divided by the runs in the block"),
    "grad_norm": Metric(*_NORM, "gradient norm ‖∂L/∂W‖", "the layer's weight gradient's norm (Yang et al. 2019)"),
    "weight_norm": Metric(*_NORM, "weight norm ‖W‖", "the layer's weight norm"),
    "effective_lr": Metric(*_NORM, "effective learning rate lr/‖W‖²",
                           "the next update's rate over the squared weight norm (van Laarhoven 2017)"),
    "ics_distance": Metric(0.0, math.inf, False, "ICS ‖G − G′‖",
                           "internal covariate shift, Santurkar et al. 2018 Def. 2.1: gradient change from the "
                           "earlier layers' update"),
    "ics_cosine": Metric(-1.0, 1.0, True, "ICS cos(G, G′)", "cosine of the same two gradients"),
    "loss_min": Metric(*_LOSS, "lowest loss along the gradient", "smoothness: lowest L(w - eta g) over the step sizes"),
    "loss_max": Metric(*_LOSS, "highest loss along the gradient", "smoothness: highest L(w - eta g)"),
    "grad_predictiveness": Metric(0.0, math.inf, False, "gradient predictiveness",
                                  "smoothness: max ‖g − ∇L(w − ηg)‖ (Santurkar et al. 2018, §3.1)"),
    "beta_smoothness": Metric(0.0, math.inf, False, "β-smoothness",
                              "smoothness: max ‖g − ∇L(w − ηg)‖ / ‖ηg‖ (Santurkar et al. 2018, §3.1)"),
    "mean_gap": Metric(0.0, math.inf, False, "running-mean gap",
                       "‖running mean − population mean‖ in units of the population's spread (Wu & Johnson 2021)"),
    "var_gap": Metric(0.0, math.inf, False, "running-variance gap",
                      "‖running variance − population variance‖ relative to the population variance"),
}
RUN_METRICS = ("final_train_loss", "test_loss", "test_acc", "test_acc_running", "test_acc_batch", "test_acc_precise")
PROBE_VALUES = tuple(name for name in METRICS if name not in (*RUN_METRICS, "wall_s"))


def bounds(name: str) -> tuple[float, float]:
    """The range ``name``'s values can take (unbounded for a column the table does not know)."""
    metric = METRICS.get(name)
    return (metric.low, metric.high) if metric else (-math.inf, math.inf)


def higher_is_better(name: str) -> bool | None:
    """Whether a higher value of ``name`` is better (None: neither, or unknown)."""
    metric = METRICS.get(name)
    return metric.higher_is_better if metric else None


def label(name: str) -> str:
    """``name``'s axis label (its name with spaces where the table does not know it)."""
    metric = METRICS.get(name)
    return metric.label if metric else name.replace("_", " ")
