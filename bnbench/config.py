"""One training run's settings: :class:`RunConfig`, its fields, their defaults and its id.

A spec (:mod:`bnbench.spec`) expands into a grid of these; the engines train them; ``runs.csv`` has one
column per field (:mod:`bnbench.schema`).

Fields and defaults:

==================== ============ ===================================================================
field                default      meaning
==================== ============ ===================================================================
dataset              "mnist1d"    data set name (see ``bnbench.data.REGISTRY``)
num_samples          data set's   examples generated in all (train + test); mnist1d: 5000
model                "mlp"        "mlp", "cnn", "vgg" or "resnet" (bnbench.models)
widths               model's      hidden widths (MLP) or channels (CNN), one per hidden block; VGG:
                                  channels of its 5 stages; ResNet: of its 3 stages. Default: mlp
                                  and cnn [100, 100, 100], vgg [64, 128, 256, 512, 512], resnet
                                  [16, 32, 64]
depth                0            vgg: 11 or 16; resnet: 6n+2 (8, 14, 20, 32, 44, 56, 110, ...);
                                  0: the model's default (vgg 11, resnet 20); mlp and cnn: 0
residual_unit        "original"   resnet's unit (He et al. 2016, Fig. 4): "original",
                                  "bn_after_add", "relu_before_add", "relu_preact", "full_preact",
                                  or "none" (a plain net: no shortcuts)
shortcut             "pad"        resnet's shortcut where a unit changes shape: "pad" (option A,
                                  parameter-free) or "projection" (1x1 convolution and norm)
init                 "default"    resnet's initialization: "default" (He), "fixup" (Zhang et al.
                                  2019) or "skipinit" (De & Smith 2020)
activation           "relu"       "relu", "sigmoid" or "tanh"
placement            "pre"        the norm layer before the activation ("pre"), after it ("post"), or
                                  none ("none"); mlp, cnn and vgg (resnet: residual_unit)
norm                 "batch"      "batch" (BN), "group" (GroupNorm), "layer" (LayerNorm) or "none"
groups               4            GroupNorm's groups; must divide every width (norm = "group" only)
ghost_batch_size     0            BN statistics over consecutive sub-batches of this size (ghost BN);
                                  must divide batch_size; 0: the whole batch (norm = "batch" only)
renorm               false        Batch Renormalization (Ioffe 2017) (norm = "batch" only)
renorm_rmax          3.0          renorm's bound on r, >= 1 (fixed, no ramp-up)
renorm_dmax          5.0          renorm's bound on d, >= 0 (fixed, no ramp-up)
running_var          "biased"     variance averaged into BN's running variance: "biased" or
                                  "unbiased" (PyTorch's)
batch_size           64           examples per training step, 1 .. training-split size
epsilon              1e-5         epsilon of the norm layer, > 0
momentum             0.99         BN's running-statistics EMA decay, in [0, 1):
                                  running = momentum*running + (1-momentum)*batch (flax/keras;
                                  PyTorch's momentum=0.1 is 0.9 here)
eval_stats           ["running"]  statistics BN evaluates with, one test accuracy each (the first is
                                  test_acc): "running" (EMA), "batch" (each test batch's own, batches
                                  of the size BN normalized in training) or "precise" (population
                                  statistics of precise_batches training batches, weights frozen)
precise_batches      100          training batches "precise" statistics are computed over, >= 1
optimizer            "adam"       "sgd" (with momentum, L2 weight decay added to the gradient) or
                                  "adam" (AdamW: decoupled weight decay)
lr                   1e-3         learning rate, > 0
lr_scaling_batch_size 0           0: lr as given; B > 0: lr is for batch size B and scales linearly,
                                  lr * batch_size / B (Goyal et al. 2017)
optimizer_momentum   0.9          SGD's momentum, in [0, 1) (unused by adam)
nesterov             false        Nesterov momentum for SGD (unused by adam)
schedule             "constant"   learning-rate schedule: "constant", "step" or "cosine" (to 0 at the
                                  last step); closed forms in bnbench.recipe
warmup_steps         0            steps of linear warm-up from 0 to lr before the schedule, < steps
lr_milestones        [0.5, 0.75]  "step": fractions of training after which lr is multiplied by
                                  lr_decay, increasing, in (0, 1)
lr_decay             0.1          "step": the factor, in (0, 1]
weight_decay         0.0          weight decay, >= 0
bn_weight_decay      true         whether the norm layers' scale and offset get weight decay
steps                1000         training steps, >= 1
epochs               0            0: train for steps; E > 0: steps = E * (training split // batch_size)
eval_every           steps // 10  steps between evaluations on the test split, 1 .. steps
augment              "none"       "crop_flip": 4-pixel zero padding, random crop, random left-right
                                  flip of every training image, drawn from the run's seed (images only)
dropout              0.0          dropout rate in training, in [0, 1); 0: off
dropout_placement    "after_activation" where dropout acts: "after_activation" (on each block's
                                  output; resnet: on its branch's inner activation) or "before_norm"
                                  (on the norm layer's input; Li et al. 2019)
dtype                "float32"    "bfloat16": the network computes in bfloat16, with parameters,
                                  optimizer state and norm statistics in float32
track_activations    false        record percentiles of each hidden layer's input to its nonlinearity
                                  at every evaluation (activations.csv)
probes               []           mechanism probes at step 0 and every evaluation (probes.csv; see
                                  bnbench.probes): "grad_norm", "weight_norm", "ics", "smoothness",
                                  "stats_gap"
noisy_bn             0.0          strength s >= 0 of the noise after every norm layer in training
                                  (Santurkar et al. 2018): each channel times 1 + s*u, plus s*v, with
                                  u, v ~ N(0, 1) drawn anew every step and layer; 0: off. Without a
                                  norm layer the noise goes where a "pre" one would be (noise alone)
==================== ============ ===================================================================
"""

from __future__ import annotations

import dataclasses
import hashlib
import json


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines one training run. The module docstring describes every field."""

    dataset: str = "mnist1d"
    num_samples: int | None = None
    model: str = "mlp"
    widths: tuple[int, ...] = (100, 100, 100)
    activation: str = "relu"
    placement: str = "pre"
    norm: str = "batch"
    groups: int = 4
    ghost_batch_size: int = 0
    renorm: bool = False
    renorm_rmax: float = 3.0
    renorm_dmax: float = 5.0
    running_var: str = "biased"
    batch_size: int = 64
    epsilon: float = 1e-5
    momentum: float = 0.99
    eval_stats: tuple[str, ...] = ("running",)
    precise_batches: int = 100
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_scaling_batch_size: int = 0
    optimizer_momentum: float = 0.9
    weight_decay: float = 0.0
    bn_weight_decay: bool = True
    steps: int = 1000
    epochs: int = 0
    eval_every: int | None = None
    track_activations: bool = False
    probes: tuple[str, ...] = ()
    noisy_bn: float = 0.0
    depth: int = 0
    residual_unit: str = "original"
    shortcut: str = "pad"
    init: str = "default"
    schedule: str = "constant"
    warmup_steps: int = 0
    lr_milestones: tuple[float, ...] = (0.5, 0.75)
    lr_decay: float = 0.1
    nesterov: bool = False
    augment: str = "none"
    dropout: float = 0.0
    dropout_placement: str = "after_activation"
    dtype: str = "float32"
    seed: int = 0

    @property
    def effective_lr(self) -> float:
        """The learning rate the optimizer uses: ``lr``, scaled linearly if ``lr_scaling_batch_size``."""
        return self.lr * self.batch_size / self.lr_scaling_batch_size if self.lr_scaling_batch_size else self.lr

    @property
    def run_id(self) -> str:
        """A stable 12-hex-digit hash of every field: the same config always has the same id.

        Fields added after results existed (:data:`LATER_FIELDS`) count only when they differ from
        their default, so that the runs of earlier results keep their ids.
        """
        fields = dataclasses.asdict(self)
        for name in LATER_FIELDS:
            if fields[name] == FIELD_DEFAULTS[name]:
                del fields[name]
        payload = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


# Every field but the seed: what a spec may set or sweep.
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name != "seed")
LATER_FIELDS = (
    "probes", "noisy_bn", "depth", "residual_unit", "shortcut", "init", "schedule", "warmup_steps", "lr_milestones",
    "lr_decay", "nesterov", "augment", "dropout", "dropout_placement", "dtype",
)

FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}
