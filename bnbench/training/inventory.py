"""What a spec's models and data sets resolve to: where each comes from, its input shape, its parameter
count and its norm sites, one row per distinct network (``bnbench models SPEC``)."""

from __future__ import annotations

from typing import NamedTuple

from bnbench import data
from bnbench.experiment.spec import Spec


class Resolved(NamedTuple):
    """One network of a spec's grid, as the engine will build it."""

    model: str
    model_args: tuple
    model_from: str  # "built in", or the plugin's file@digest
    dataset: str
    data_from: str  # "built in" (or its published files), or the file@digest of its arrays
    input_shape: tuple[int, ...]
    num_classes: int
    num_params: int
    norm_sites: int  # norm layers (BN, GroupNorm, LayerNorm) of the network as the run configures it


def resolve(spec: Spec, data_dir=None) -> list[Resolved]:
    """One :class:`Resolved` per distinct (model, its arguments, widths, depth, data set) of the grid;
    published data sets are read from ``data_dir`` (:mod:`bnbench.data.files`)."""
    from bnbench.training.signature import Signature  # here: building networks needs JAX

    rows, seen = [], set()
    for run in spec.expand():
        key = (run.model, run.model_args, run.widths, run.depth, run.dataset, run.num_samples)
        if key in seen:
            continue
        seen.add(key)
        dataset = data.load(run.dataset, run.num_samples, data_dir)
        sig = Signature.of(run, dataset)
        model = sig.make_model()
        info = data.info(run.dataset)
        rows.append(Resolved(
            run.model, run.model_args, sig.model_source or "built in", run.dataset,
            f"{info.origin}@{info.digest}" if info.origin else "built in", dataset.input_shape, dataset.num_classes,
            sig.num_params, _norm_sites(model),
        ))
    return rows


def _norm_sites(model) -> int:
    import jax

    params, _ = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    return len(params["norm"])
