"""bnbench: hard evidence about Batch Normalization, from a pure-JAX BN to sweeps and CSV tables.

Public surface:

* :mod:`bnbench.bn`: ``init``, ``batch_norm``, ``BNParams``, ``BNState`` (the BN function and its state;
  ghost BN, Batch Renormalization and the running-variance convention are options of ``batch_norm``).
* :mod:`bnbench.norms`: ``group_norm``, ``layer_norm`` (the per-example alternatives).
* :mod:`bnbench.models`: ``make_model``, ``Normalization``, ``mlp``, ``cnn`` (pure init/apply pairs with
  norm placement).
* :mod:`bnbench.data`: the data set registry (``load``, ``register``, ``raw_splits``);
  :mod:`bnbench.datafiles` finds, downloads and checks published files; :mod:`bnbench.formats` reads them.
* :mod:`bnbench.spec`: ``load_spec``, ``RunConfig`` (the spec parser and its fields).
* :mod:`bnbench.train`: the training program (init, train step, evaluation, a whole run as a scan).
* :mod:`bnbench.engine`: ``run_all``, ``train_run`` (vectorized and sequential engines).
* :mod:`bnbench.schema`: ``RUN_COLUMNS``, ``CURVE_COLUMNS`` (the CSV schema).
* :mod:`bnbench.summary`: ``summarize``, ``compare`` (mean, std, 95% CI over seeds; paired differences).
* :mod:`bnbench.frames`: ``load_runs``, ``load_curves``, ``load_activations`` (typed DataFrames).
* :mod:`bnbench.plots`: ``write_plots`` (PNG figures of a sweep).
"""

from bnbench.bn import BNParams, BNState, batch_norm, init
from bnbench.data import Dataset, load as load_dataset
from bnbench.errors import BnbenchError
from bnbench.models import Model, Normalization, make_model
from bnbench.norms import group_norm, layer_norm
from bnbench.schema import CURVE_COLUMNS, RUN_COLUMNS
from bnbench.spec import RunConfig, Spec, load_spec
from bnbench.frames import load_activations, load_curves, load_runs
from bnbench.summary import compare, summarize
from bnbench.engine import run_all, train_run
from bnbench.train import RunResult

__all__ = [
    "BNParams",
    "BNState",
    "BnbenchError",
    "CURVE_COLUMNS",
    "Dataset",
    "Model",
    "Normalization",
    "RUN_COLUMNS",
    "RunConfig",
    "RunResult",
    "Spec",
    "batch_norm",
    "compare",
    "group_norm",
    "init",
    "layer_norm",
    "load_activations",
    "load_curves",
    "load_dataset",
    "load_runs",
    "load_spec",
    "make_model",
    "run_all",
    "summarize",
    "train_run",
]
