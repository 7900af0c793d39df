"""bnbench: hard evidence about Batch Normalization, from a pure-JAX BN to sweeps and CSV tables.

Public surface:

* :mod:`bnbench.norm.bn`: ``init``, ``batch_norm``, ``BNParams``, ``BNState`` (the BN function and its state;
  ghost BN, Batch Renormalization and the running-variance convention are options of ``batch_norm``).
* :mod:`bnbench.norm.per_example`: ``group_norm``, ``layer_norm`` (the per-example alternatives).
* :mod:`bnbench.models`: ``make_model``, ``Normalization``, ``mlp``, ``cnn``, ``vgg``, ``resnet`` (pure
  init/apply pairs with norm placement, every residual-unit arrangement, Fixup and SkipInit).
* :mod:`bnbench.models.plugin`: ``Context``, ``Model`` (the contract of your own network, with bnbench's norm
  layers injected); :mod:`bnbench.models.adapters`: ``nnx``, ``equinox`` (Flax NNX and Equinox models with
  their norm layers swapped for bnbench's); :mod:`bnbench.data.own`: your own data (``npz:`` files,
  loaders); :mod:`bnbench.experiment.references`: how a spec names them.
* :mod:`bnbench.training.optimizers`: bnbench's SGD and Adam, and any optax optimizer by name.
* :mod:`bnbench.training.recipe`: learning-rate schedules and crop-and-flip augmentation.
* :mod:`bnbench.data.registry`: the data set registry (``load``, ``register``, ``raw_splits``);
  :mod:`bnbench.data.files` finds, downloads and checks published files; :mod:`bnbench.data.formats` reads them.
* :mod:`bnbench.experiment.fields`: ``RunConfig``, the registry of run fields (``FIELDS``); :mod:`bnbench.experiment.rules`
  the values each takes.
* :mod:`bnbench.experiment.spec`: ``load_spec``, ``Spec`` (the spec parser).
* :mod:`bnbench.training.signature`: ``Signature``, ``HParams`` (what a program is compiled for, what it traces).
* :mod:`bnbench.training.program`: the training program (init, train step, evaluation, a whole run as a scan).
* :mod:`bnbench.training.outcomes`: ``RunResult`` (what a run returns and its summary: curve, activations, probes).
* :mod:`bnbench.engine.execution`: ``run_all``, ``train_run`` (vectorized and sequential engines);
  :mod:`bnbench.training.context`: the execution context a run's numbers depend on.
* :mod:`bnbench.sweeping.session`: planning, locking, training and recording a spec's grid; :mod:`bnbench.results.store`:
  the output folder (append, resume, lock, merge).
* :mod:`bnbench.results.schema`: ``RUN_COLUMNS``, ``CURVE_COLUMNS`` (the CSV schema); :mod:`bnbench.results.metrics`:
  each metric's range and direction.
* :mod:`bnbench.stats.summary`: ``summarize``, ``compare``, ``compare_folders`` (mean, std, 95% CI over
  seeds; paired differences, the difference each resolves and the pairs an undecided one needs).
* :mod:`bnbench.stats.group_sequential`: seeds until decided (``sweep --seeds auto``), a group-sequential design.
* :mod:`bnbench.results.frames`: ``load_runs``, ``load_curves``, ``load_activations``, ``load_probes`` (typed
  DataFrames).
* :mod:`bnbench.reporting.model`: ``report``, ``report_folders`` (a folder's summary, comparisons and notes,
  or two folders side by side, as ``bnbench report``); :mod:`bnbench.reporting.page`: the page to share.
* :mod:`bnbench.training.probes`: the mechanism probes (gradient and weight norms, internal covariate shift,
  loss-landscape smoothness, running-statistics gap).
* :mod:`bnbench.reporting.figures`: ``write_plots`` (a sweep's figures, PNG, PDF or SVG, no swept axis pooled).
* :mod:`bnbench.options`: the names options choose from, their defaults, the environment read.
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
    "compare": ("bnbench.stats.summary", "compare"),
    "compare_folders": ("bnbench.stats.summary", "compare_folders"),
    "group_norm": ("bnbench.norm.per_example", "group_norm"),
    "init": ("bnbench.norm.bn", "init"),
    "layer_norm": ("bnbench.norm.per_example", "layer_norm"),
    "load_activations": ("bnbench.results.frames", "load_activations"),
    "load_curves": ("bnbench.results.frames", "load_curves"),
    "load_dataset": ("bnbench.data.registry", "load"),
    "load_probes": ("bnbench.results.frames", "load_probes"),
    "load_runs": ("bnbench.results.frames", "load_runs"),
    "load_spec": ("bnbench.experiment.spec", "load_spec"),
    "make_model": ("bnbench.models", "make_model"),
    "report": ("bnbench.reporting.model", "report"),
    "report_folders": ("bnbench.reporting.model", "report_folders"),
    "run_all": ("bnbench.engine.execution", "run_all"),
    "summarize": ("bnbench.stats.summary", "summarize"),
    "train_run": ("bnbench.engine.execution", "train_run"),
}
# The modules a plugin's author writes against: ``from bnbench import adapters, plugin``.
_MODULES = {"adapters": "bnbench.models.adapters", "plugin": "bnbench.models.plugin"}
__all__ = sorted([*_EXPORTS, *_MODULES])


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
    return sorted([*globals(), *__all__])
