"""The names bnbench's options choose from, their defaults, and the environment bnbench reads.

Importable without JAX, pandas or matplotlib: the command line builds its help and checks a spec from
these alone, so ``bnbench --help`` and ``bnbench sweep --dry-run`` start in a fraction of a second.
The modules that implement each choice (:mod:`bnbench.models`, :mod:`bnbench.norm.bn`,
:mod:`bnbench.profiling.kernels`, ...) use these names, and tests check that they implement exactly them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

# Spec fields (bnbench.experiment.spec)
MODELS = ("mlp", "cnn", "vgg", "resnet")
# What a spec that does not set a model's widths or depth gets (bnbench.experiment.spec resolves them per run).
DEFAULT_WIDTHS = {"mlp": (100, 100, 100), "cnn": (100, 100, 100), "vgg": (64, 128, 256, 512, 512), "resnet": (16, 32, 64)}
DEFAULT_DEPTH = {"vgg": 11, "resnet": 20}
RESIDUAL_UNITS = ("original", "bn_after_add", "relu_before_add", "relu_preact", "full_preact", "none")
SHORTCUTS = ("pad", "projection")
INITS = ("default", "fixup", "skipinit")
AUGMENTATIONS = ("none", "crop_flip")
SCHEDULES = ("constant", "step", "cosine")
DROPOUT_PLACEMENTS = ("after_activation", "before_norm")
DTYPES = ("float32", "bfloat16")
ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu", "silu", "leaky_relu", "elu", "softplus")
PLACEMENTS = ("pre", "post", "none")
NORMS = ("batch", "group", "layer", "none")
RUNNING_VARIANCES = ("biased", "unbiased")
EVAL_STATS = ("running", "batch", "precise")
OPTIMIZERS = ("sgd", "adam")  # bnbench's own; any other optax optimizer by name (bnbench.training.optimizers)
PROBES = ("grad_norm", "weight_norm", "ics", "smoothness", "stats_gap")

# Command line
ENGINES = ("vectorized", "sequential")
EXECUTIONS = ("vmapped", "stepwise")  # how the engine executed a run (bnbench.training.context)
NUMERICS = ("portable", "native")  # the bits a CPU run gets (bnbench.training.numerics); the default is portable where possible
REPORT_FORMATS = ("table", "markdown", "csv")
PLOT_FORMATS = ("png", "pdf", "svg")  # figures (bnbench.reporting.figures); png at print resolution
DEFAULT_MAX_RUNS = 1000
DEFAULT_MAX_SEEDS = 20  # the last look of --seeds auto (bnbench.stats.group_sequential)
MOST_PAIRS = 1000  # beyond it, an estimate of the pairs a comparison needs says nothing a user can act on
PROFILE_MODES = ("train", "grad", "infer", "fold")
PROFILE_DTYPES = ("float32", "bfloat16")
PROFILE_IMPLEMENTATIONS = ("bnbench", "bnbench_folded", "two_pass", "one_pass", "flax_fast", "flax_exact", "torch")

# Environment
DATA_DIR_ENV = "BNBENCH_DATA_DIR"  # a data folder (bnbench.data.files)
COMPILE_CACHE_ENV = "BNBENCH_COMPILE_CACHE"  # the compilation cache's folder, or "off"
SHARD_COUNT_ENV = "BNBENCH_SHARD_COUNT"  # the shard count of --shard auto (a job's tasks or completions)
NUMERICS_ENV = "BNBENCH_NUMERICS"  # portable or native: the numerics where neither --portable/--native nor the spec says


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask (as SLURM's ``--cpus-per-task`` and
    ``taskset`` set it), capped by the cgroup's CPU quota where one is set (a container's or a Kubernetes
    pod's CPU limit)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup"), own: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPUs the process's cgroup may use per period (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us``), or None where no quota is set or none can be read."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        folder = root / path.lstrip("/")
        try:
            if controllers == "":  # cgroup v2
                quota, period = (folder / "cpu.max").read_text().split()
            elif "cpu" in controllers.split(","):
                folder = root / controllers / path.lstrip("/")
                quota, period = ((folder / name).read_text().strip() for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
            else:
                continue
        except (OSError, ValueError):
            continue
        if quota not in ("max", "-1"):
            return int(quota) / int(period)
    return None


def user_cache_dir(environ: dict[str, str]) -> Path:
    """``$XDG_CACHE_HOME/bnbench``, or ``~/.cache/bnbench``."""
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bnbench"


def compile_cache_dir(environ: dict[str, str], explicit: str | Path | None = None, off: bool = False) -> Path | None:
    """The folder of the persistent compilation cache: ``explicit`` (``--compile-cache``), else
    ``$BNBENCH_COMPILE_CACHE``, else ``<user cache>/xla``; None when ``off`` (``--no-compile-cache``) or
    the variable says ``off``."""
    chosen = explicit or environ.get(COMPILE_CACHE_ENV)
    if off or chosen == "off":
        return None
    return Path(chosen).expanduser() if chosen else user_cache_dir(environ) / "xla"
