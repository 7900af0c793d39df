"""The names bnbench's options choose from, their defaults, and the environment bnbench reads.

Importable without JAX, pandas or matplotlib: the command line builds its help and checks a spec from
these alone, so ``bnbench --help`` and ``bnbench sweep --dry-run`` start in a fraction of a second.
The modules that implement each choice (:mod:`bnbench.models`, :mod:`bnbench.bn`,
:mod:`bnbench.profile`, ...) use these names, and tests check that they implement exactly them.
"""

from __future__ import annotations

import os
from pathlib import Path

# Spec fields (bnbench.spec)
MODELS = ("mlp", "cnn", "vgg", "resnet")
# What a spec that does not set a model's widths or depth gets (bnbench.spec resolves them per run).
DEFAULT_WIDTHS = {"mlp": (100, 100, 100), "cnn": (100, 100, 100), "vgg": (64, 128, 256, 512, 512), "resnet": (16, 32, 64)}
DEFAULT_DEPTH = {"vgg": 11, "resnet": 20}
RESIDUAL_UNITS = ("original", "bn_after_add", "relu_before_add", "relu_preact", "full_preact", "none")
SHORTCUTS = ("pad", "projection")
INITS = ("default", "fixup", "skipinit")
AUGMENTATIONS = ("none", "crop_flip")
SCHEDULES = ("constant", "step", "cosine")
DROPOUT_PLACEMENTS = ("after_activation", "before_norm")
DTYPES = ("float32", "bfloat16")
ACTIVATIONS = ("relu", "sigmoid", "tanh")
PLACEMENTS = ("pre", "post", "none")
NORMS = ("batch", "group", "layer", "none")
RUNNING_VARIANCES = ("biased", "unbiased")
EVAL_STATS = ("running", "batch", "precise")
OPTIMIZERS = ("sgd", "adam")
PROBES = ("grad_norm", "weight_norm", "ics", "smoothness", "stats_gap")

# Command line
ENGINES = ("vectorized", "sequential")
REPORT_FORMATS = ("table", "markdown", "csv")
DEFAULT_MAX_RUNS = 1000
PROFILE_MODES = ("train", "grad", "infer", "fold")
PROFILE_DTYPES = ("float32", "bfloat16")
PROFILE_IMPLEMENTATIONS = ("bnbench", "bnbench_folded", "two_pass", "one_pass", "flax_fast", "flax_exact", "torch")

# Environment
DATA_DIR_ENV = "BNBENCH_DATA_DIR"  # a data folder (bnbench.datafiles)
COMPILE_CACHE_ENV = "BNBENCH_COMPILE_CACHE"  # the compilation cache's folder, or "off"
SHARD_COUNT_ENV = "BNBENCH_SHARD_COUNT"  # a Kubernetes indexed job's completions (--shard auto)


def cpu_device_flag(environ: dict[str, str]) -> str | None:
    """The XLA flag exposing one host device per CPU core, or None if ``environ`` already sets a count.

    Must be applied before JAX initializes its backends.
    """
    flags = environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return None
    return f"{flags} --xla_force_host_platform_device_count={os.cpu_count() or 1}".strip()


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
