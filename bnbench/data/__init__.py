"""Data sets by name: the registry (:mod:`bnbench.data.registry`), the published files and their
formats (:mod:`bnbench.data.files`, :mod:`bnbench.data.formats`) and a researcher's own data
(:mod:`bnbench.data.own`). NumPy only: no JAX at import."""

from bnbench.data.registry import (
    REGISTRY,
    DataError,
    Dataset,
    DatasetInfo,
    availability,
    folder,
    info,
    load,
    raw_splits,
    register,
    to_download,
)

__all__ = ["REGISTRY", "DataError", "Dataset", "DatasetInfo", "availability", "folder", "info", "load", "raw_splits",
           "register", "to_download"]
