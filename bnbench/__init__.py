"""bnbench: hard evidence about Batch Normalization, from a pure-JAX BN to sweeps and CSV tables.

The public surface is this module's names, each imported on first use:

* BN and its alternatives: ``batch_norm``, ``init``, ``BNParams``, ``BNState`` (:mod:`bnbench.norm.bn`);
  ``group_norm``, ``layer_norm`` (:mod:`bnbench.norm.per_example`).
* Models: ``make_model``, ``Model``, ``Normalization`` (:mod:`bnbench.models`); your own network's
  contract and the adapters of Keras, Flax NNX, Flax Linen and Equinox models: ``bnbench.plugin``,
  ``bnbench.adapters``.
* Data and specs: ``load_dataset``, ``Dataset`` (:mod:`bnbench.data`); ``load_spec`` (every check done,
  plugins registered: :mod:`bnbench.sweeping.plan`), ``Spec``, ``RunConfig`` (:mod:`bnbench.experiment`).
* Sweeps from Python: ``sweep`` (a spec into its results folder as ``bnbench sweep`` does, the results
  returned: :mod:`bnbench.reporting.sweep`).
* Training: ``run_all``, ``train_run`` (:mod:`bnbench.engine`), ``RunResult``; ``prepare_numerics``
  (portable or native CPU numerics, set up before JAX starts: :mod:`bnbench.training.numerics`).
* Results: ``load_runs``, ``load_curves``, ``load_activations``, ``load_probes``, ``RUN_COLUMNS``,
  ``CURVE_COLUMNS`` (:mod:`bnbench.results`); ``summarize``, ``compare``, ``compare_folders``
  (:mod:`bnbench.stats`); ``report``, ``report_folders`` (:mod:`bnbench.reporting`).
* ``BnbenchError``: every error bnbench reports to its user, with its exit code.

The packages are layers, each importing only those below it (``docs/contributing.md``, "Layers").
"""

import importlib

# Name -> (module, attribute). Each is imported on first use (PEP 562), so that ``import bnbench`` and
# the command line start without JAX, pandas or matplotlib; ``from bnbench import load_runs`` works as
# before.
_EXPORTS = {
    "BNParams": ("bnbench.norm.bn", "BNParams"),
    "BNState": ("bnbench.norm.bn", "BNState"),
    "BnbenchError": ("bnbench.errors", "BnbenchError"),
    "CURVE_COLUMNS": ("bnbench.results.schema", "CURVE_COLUMNS"),
    "Dataset": ("bnbench.data.registry", "Dataset"),
    "Model": ("bnbench.models", "Model"),
    "Normalization": ("bnbench.models", "Normalization"),
    "RUN_COLUMNS": ("bnbench.results.schema", "RUN_COLUMNS"),
    "RunConfig": ("bnbench.experiment.fields", "RunConfig"),
    "RunResult": ("bnbench.training.outcomes", "RunResult"),
    "Spec": ("bnbench.experiment.spec", "Spec"),
    "batch_norm": ("bnbench.norm.bn", "batch_norm"),
    "compare": ("bnbench.stats.comparisons", "compare"),
    "compare_folders": ("bnbench.stats.comparisons", "compare_folders"),
    "group_norm": ("bnbench.norm.per_example", "group_norm"),
    "init": ("bnbench.norm.bn", "init"),
    "layer_norm": ("bnbench.norm.per_example", "layer_norm"),
    "load_activations": ("bnbench.results.frames", "load_activations"),
    "load_curves": ("bnbench.results.frames", "load_curves"),
    "load_dataset": ("bnbench.data.registry", "load"),
    "load_probes": ("bnbench.results.frames", "load_probes"),
    "load_runs": ("bnbench.results.frames", "load_runs"),
    "load_spec": ("bnbench.sweeping.plan", "load_checked"),
    "make_model": ("bnbench.models", "make_model"),
    "prepare_numerics": ("bnbench.training.numerics", "prepare"),
    "report": ("bnbench.reporting.model", "report"),
    "report_folders": ("bnbench.reporting.model", "report_folders"),
    "run_all": ("bnbench.engine", "run_all"),
    "summarize": ("bnbench.stats.summary", "summarize"),
    "sweep": ("bnbench.reporting.sweep", "sweep"),
    "train_run": ("bnbench.engine", "train_run"),
}
# The modules a plugin's author writes against: ``from bnbench import adapters, plugin``.
_MODULES = {"adapters": "bnbench.models.adapters", "plugin": "bnbench.models.plugin"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _EXPORTS:
        module, attribute = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attribute)
    else:
        raise AttributeError(f"module 'bnbench' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__, *_MODULES])
