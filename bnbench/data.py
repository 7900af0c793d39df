"""Data sets by name: a registry of loaders that return in-memory train/test splits.

Every loader is deterministic and needs no network: ``mnist1d`` is generated locally with the
published MNIST-1D generator (Greydanus, 2020; default arguments, seed 42), ``synthetic`` is a small
seeded Gaussian mixture for fast tests. New data sets plug in with :func:`register`.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numpy as np

from bnbench.errors import BnbenchError


class Dataset(NamedTuple):
    """A classification data set held in memory: ``x`` float32 ``(N, *input_shape)``, ``y`` int32 ``(N,)``."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


class DatasetInfo(NamedTuple):
    """A registered data set: ``load(num_samples)`` builds it; ``train_fraction`` of it is training data."""

    name: str
    description: str
    default_num_samples: int
    train_fraction: float
    load: Callable[[int], Dataset]

    def train_size(self, num_samples: int) -> int:
        return int(num_samples * self.train_fraction)


class DataError(BnbenchError):
    """A data set that cannot be built or holds unusable values."""


REGISTRY: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> DatasetInfo:
    """Adds a data set to the registry under ``info.name``."""
    REGISTRY[info.name] = info
    return info


def info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; raises :class:`DataError` naming the known data sets."""
    if name not in REGISTRY:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


@functools.lru_cache(maxsize=8)
def load(name: str, num_samples: int | None = None) -> Dataset:
    """Builds data set ``name`` with ``num_samples`` examples in all (its default if ``None``).

    Raises :class:`DataError` if the data holds NaN or infinite values.
    """
    entry = info(name)
    data = entry.load(entry.default_num_samples if num_samples is None else num_samples)
    for split in ("x_train", "x_test"):
        bad = int(np.size(getattr(data, split)) - np.count_nonzero(np.isfinite(getattr(data, split))))
        if bad:
            raise DataError(f"dataset {name!r}: {split} holds {bad} NaN/inf values")
    return data


def _split(name: str, x: np.ndarray, y: np.ndarray, train_fraction: float, num_classes: int) -> Dataset:
    n_train = int(len(y) * train_fraction)
    x, y = x.astype(np.float32), y.astype(np.int32)
    return Dataset(name, x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes)


def _load_mnist1d(num_samples: int) -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    # The generator seeds NumPy's global RNG; restore it so loading data has no side effects.
    saved = np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(saved)
    x = np.concatenate([raw["x"], raw["x_test"]])
    y = np.concatenate([raw["y"], raw["y_test"]])
    return _split("mnist1d", x, y, args.train_split, 10)


def _load_synthetic(num_samples: int, num_features: int = 16, num_classes: int = 4) -> Dataset:
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 1.0, size=(num_classes, num_features))
    y = rng.integers(0, num_classes, size=num_samples)
    x = centers[y] + rng.normal(0.0, 1.0, size=(num_samples, num_features))
    return _split("synthetic", x, y, 0.8, num_classes)


register(
    DatasetInfo(
        "mnist1d",
        "MNIST-1D: 10 classes of length-40 signals, generated locally (4000/1000 split by default)",
        5000,
        0.8,
        _load_mnist1d,
    )
)
register(
    DatasetInfo(
        "synthetic",
        "Seeded Gaussian mixture: 4 classes, 16 features (960/240 split by default), for fast tests",
        1200,
        0.8,
        _load_synthetic,
    )
)
