"""bnbench: hard evidence about Batch Normalization, from a pure-JAX BN to sweeps and CSV tables.

Public surface:

* :mod:`bnbench.bn`: ``init``, ``batch_norm``, ``BNParams``, ``BNState`` (the BN function and its state;
  ghost BN, Batch Renormalization and the running-variance convention are options of ``batch_norm``).
* :mod:`bnbench.norms`: ``group_norm``, ``layer_norm`` (the per-example alternatives).
* :mod:`bnbench.models`: ``make_model``, ``Normalization``, ``mlp``, ``cnn``, ``vgg``, ``resnet`` (pure
  init/apply pairs with norm placement, every residual-unit arrangement, Fixup and SkipInit).
* :mod:`bnbench.plugin`: ``Context``, ``Model`` (the contract of your own network, with bnbench's norm
  layers injected); :mod:`bnbench.adapters`: ``nnx``, ``equinox`` (Flax NNX and Equinox models with
  their norm layers swapped for bnbench's); :mod:`bnbench.owndata`: your own data (``npz:`` files,
  loaders); :mod:`bnbench.references`: how a spec names them.
* :mod:`bnbench.optimizers`: bnbench's SGD and Adam, and any optax optimizer by name.
* :mod:`bnbench.recipe`: learning-rate schedules and crop-and-flip augmentation.
* :mod:`bnbench.data`: the data set registry (``load``, ``register``, ``raw_splits``);
  :mod:`bnbench.datafiles` finds, downloads and checks published files; :mod:`bnbench.formats` reads them.
* :mod:`bnbench.config`: ``RunConfig``, the registry of run fields (``FIELDS``); :mod:`bnbench.rules`
  the values each takes.
* :mod:`bnbench.spec`: ``load_spec``, ``Spec`` (the spec parser).
* :mod:`bnbench.signature`: ``Signature``, ``HParams`` (what a program is compiled for, what it traces).
* :mod:`bnbench.train`: the training program (init, train step, evaluation, a whole run as a scan).
* :mod:`bnbench.outcomes`: ``RunResult`` (what a run returns and its summary: curve, activations, probes).
* :mod:`bnbench.engine`: ``run_all``, ``train_run`` (vectorized and sequential engines);
  :mod:`bnbench.context`: the execution context a run's numbers depend on.
* :mod:`bnbench.sweep`: planning, locking, training and recording a spec's grid; :mod:`bnbench.store`:
  the output folder (append, resume, lock, merge).
* :mod:`bnbench.schema`: ``RUN_COLUMNS``, ``CURVE_COLUMNS`` (the CSV schema); :mod:`bnbench.metrics`:
  each metric's range and direction.
* :mod:`bnbench.summary`: ``summarize``, ``compare``, ``compare_folders`` (mean, std, 95% CI over
  seeds; paired differences, the difference each resolves and the pairs an undecided one needs).
* :mod:`bnbench.sequential`: seeds until decided (``sweep --seeds auto``), a group-sequential design.
* :mod:`bnbench.frames`: ``load_runs``, ``load_curves``, ``load_activations``, ``load_probes`` (typed
  DataFrames).
* :mod:`bnbench.reporting`: ``report``, ``report_folders`` (a folder's summary, comparisons and notes,
  or two folders side by side, as ``bnbench report``); :mod:`bnbench.htmlreport`: the page to share.
* :mod:`bnbench.probes`: the mechanism probes (gradient and weight norms, internal covariate shift,
  loss-landscape smoothness, running-statistics gap).
* :mod:`bnbench.plots`: ``write_plots`` (a sweep's figures, PNG, PDF or SVG, no swept axis pooled).
* :mod:`bnbench.options`: the names options choose from, their defaults, the environment read.
"""

import importlib

# Name -> (module, attribute). Each is imported on first use (PEP 562), so that ``import bnbench`` and
# the command line start without JAX, pandas or matplotlib; ``from bnbench import load_runs`` works as
# before.
_EXPORTS = {
    "BNParams": ("bnbench.bn", "BNParams"),
    "BNState": ("bnbench.bn", "BNState"),
    "BnbenchError": ("bnbench.errors", "BnbenchError"),
    "CURVE_COLUMNS": ("bnbench.schema", "CURVE_COLUMNS"),
    "Dataset": ("bnbench.data", "Dataset"),
    "Model": ("bnbench.models", "Model"),
    "Normalization": ("bnbench.models", "Normalization"),
    "RUN_COLUMNS": ("bnbench.schema", "RUN_COLUMNS"),
    "RunConfig": ("bnbench.config", "RunConfig"),
    "RunResult": ("bnbench.outcomes", "RunResult"),
    "Spec": ("bnbench.spec", "Spec"),
    "batch_norm": ("bnbench.bn", "batch_norm"),
    "compare": ("bnbench.summary", "compare"),
    "compare_folders": ("bnbench.summary", "compare_folders"),
    "group_norm": ("bnbench.norms", "group_norm"),
    "init": ("bnbench.bn", "init"),
    "layer_norm": ("bnbench.norms", "layer_norm"),
    "load_activations": ("bnbench.frames", "load_activations"),
    "load_curves": ("bnbench.frames", "load_curves"),
    "load_dataset": ("bnbench.data", "load"),
    "load_probes": ("bnbench.frames", "load_probes"),
    "load_runs": ("bnbench.frames", "load_runs"),
    "load_spec": ("bnbench.spec", "load_spec"),
    "make_model": ("bnbench.models", "make_model"),
    "report": ("bnbench.reporting", "report"),
    "report_folders": ("bnbench.reporting", "report_folders"),
    "run_all": ("bnbench.engine", "run_all"),
    "summarize": ("bnbench.summary", "summarize"),
    "train_run": ("bnbench.engine", "train_run"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bnbench' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
