"""Data sets by name: a registry of loaders that return in-memory train/test splits.

Generated locally, no network: ``mnist1d`` with the published MNIST-1D generator (Greydanus, 2020;
default arguments, seed 42) and ``synthetic``, a small seeded Gaussian mixture for fast tests.
Read from their published files (found or downloaded by :mod:`bnbench.data.files`): ``mnist``,
``fashion_mnist`` and ``cifar10``, as NHWC images scaled to [0, 1] and then standardized per channel
with the mean and standard deviation of the training split. ``num_samples`` below a data set's size
takes the first examples of each split in the published proportion. New data sets plug in with
:func:`register`.
"""

from __future__ import annotations

import contextlib
import hashlib
import functools
import importlib.metadata
import os
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from bnbench.data import files
from bnbench.data import formats
from bnbench.data.files import DataFile, Source
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

    def digest(self) -> str:
        """12 hex digits of the SHA-256 of the arrays' names, shapes, dtypes and bytes, as trained on."""
        hasher = hashlib.sha256()
        for name in ARRAYS:
            a = np.ascontiguousarray(getattr(self, name))
            hasher.update(f"{name}{a.shape}{a.dtype}".encode() + a.tobytes())
        return hasher.hexdigest()[:12]


ARRAYS = ("x_train", "y_train", "x_test", "y_test")


class DatasetInfo(NamedTuple):
    """A registered data set.

    ``build(num_samples, folder)`` makes it (``folder`` holds its files, None for generated data);
    ``split`` is its default (train, test) size; ``source`` its published files (None if generated).
    A researcher's own data set (:func:`bnbench.data.own.register_reference`) has its ``origin`` (the file or module it
    came from) and the ``digest`` of its arrays.
    """

    name: str
    description: str
    split: tuple[int, int]
    input_shape: tuple[int, ...]
    build: Callable[[int, Path | None], Dataset]
    source: Source | None = None
    num_classes: int = 10
    origin: str | None = None
    digest: str = ""

    @property
    def default_num_samples(self) -> int:
        return sum(self.split)

    def train_size(self, num_samples: int) -> int:
        """Training examples among ``num_samples``, in the default split's proportion."""
        return num_samples * self.split[0] // self.default_num_samples


class DataError(BnbenchError):
    """A data set that cannot be built or holds unusable values."""


REGISTRY: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> DatasetInfo:
    """Adds a data set to the registry under ``info.name`` (replacing one of that name: loaded copies of
    it are forgotten)."""
    if REGISTRY.get(info.name) != info:
        load.cache_clear()
    REGISTRY[info.name] = info
    return info


def info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; raises :class:`DataError` naming the known data sets."""
    if name not in REGISTRY:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def folder(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The folder holding data set ``name``'s files (None if generated); raises :class:`DataError`
    naming the files and where to put them if they are not there (:func:`bnbench.data.files.fetch`
    downloads them)."""
    entry = info(name)
    if entry.source is None:
        return None
    found = files.locate(name, entry.source, data_dir)
    if found is None:
        reason = f"`bnbench datasets --download {name}` or a sweep downloads it"
        raise DataError(files.missing_message(name, entry.source, data_dir, reason))
    return found


@functools.lru_cache(maxsize=8)
def load(name: str, num_samples: int | None = None, data_dir: str | Path | None = None) -> Dataset:
    """Builds data set ``name`` with ``num_samples`` examples in all (its default if ``None``).

    Published files are looked for as :func:`folder` says. Raises :class:`DataError` if they are
    missing or the data holds NaN or infinite values, and a :class:`bnbench.errors.BnbenchError` if
    a file fails its checksum or format.
    """
    entry = info(name)
    data = entry.build(entry.default_num_samples if num_samples is None else num_samples, folder(name, data_dir))
    for split in ("x_train", "x_test"):
        bad = int(np.size(getattr(data, split)) - np.count_nonzero(np.isfinite(getattr(data, split))))
        if bad:
            raise DataError(f"dataset {name!r}: {split} holds {bad} NaN/inf values")
    return data


def to_download(names: list[str], data_dir: str | Path | None = None) -> list[str]:
    """The data sets among ``names`` whose published files are not found locally (they download)."""
    return [n for n in names if info(n).source and not files.locate(n, info(n).source, data_dir)]


def availability(data_dir: str | Path | None = None) -> list[tuple[DatasetInfo, Path | None, str | None]]:
    """Every registered data set with its local folder (None if generated or not found) and the
    problem its files have (None if they pass their checksums)."""
    rows = []
    for name, entry in sorted(REGISTRY.items()):
        found = entry.source and files.locate(name, entry.source, data_dir) or None
        rows.append((entry, found, found and files.verify(found, entry.source)))
    return rows


def _split(name: str, x: np.ndarray, y: np.ndarray, num_classes: int) -> Dataset:
    n_train = REGISTRY[name].train_size(len(y))
    x, y = x.astype(np.float32), y.astype(np.int32)
    return Dataset(name, x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes)


def _load_mnist1d(num_samples: int) -> Dataset:
    """MNIST-1D with the generator's default arguments (seed 42), generated once per ``num_samples``
    and mnist1d version and kept in ``<cache>/mnist1d/`` (see :func:`bnbench.data.files.cache_dir`):
    generating takes seconds, reading the file milliseconds, and the arrays are the same bytes. A file
    that cannot be read (truncated, corrupt: the archive's CRC) is generated again; one that cannot
    be written is not kept."""
    path = files.cache_dir() / "mnist1d" / f"mnist1d-{importlib.metadata.version('mnist1d')}-{num_samples}.npz"
    try:
        with np.load(path) as saved:
            x, y = saved["x"], saved["y"]
    except Exception:  # noqa: BLE001 - any unreadable copy (CRC, truncation, a garbled header numpy cannot parse) is regenerated
        x, y = _generate_mnist1d(num_samples)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            with tmp.open("wb") as out:
                np.savez(out, x=x, y=y)
            os.replace(tmp, path)  # atomic: processes generating at once leave one whole file
    return _split("mnist1d", x, y, 10)


def _generate_mnist1d(num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    # The generator seeds NumPy's global RNG; restore it so loading data has no side effects.
    saved = np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(saved)
    return np.concatenate([raw["x"], raw["x_test"]]), np.concatenate([raw["y"], raw["y_test"]])


def _load_synthetic(num_samples: int, num_features: int = 16, num_classes: int = 4) -> Dataset:
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 1.0, size=(num_classes, num_features))
    y = rng.integers(0, num_classes, size=num_samples)
    x = centers[y] + rng.normal(0.0, 1.0, size=(num_samples, num_features))
    return _split("synthetic", x, y, num_classes)


def raw_splits(name: str, data_dir: str | Path | None = None) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_test, y_test)`` of an image data set as published: uint8 NHWC images."""
    if info(name).source is None:
        raise DataError(f"dataset {name!r} is generated, it has no published files")
    return _read_published(name, folder(name, data_dir))


def _read_published(name: str, location: Path) -> tuple[np.ndarray, ...]:
    entry = REGISTRY[name]
    if name == "cifar10":
        (tarball,) = entry.source.files
        splits = formats.read_cifar_tarball(files.read(location, tarball), str(location / tarball.name))
        return (*splits["train"], *splits["test"])
    arrays = [formats.read_idx(files.read(location, f), str(location / f.name)) for f in entry.source.files]
    x_train, y_train, x_test, y_test = arrays
    return x_train[..., None], y_train, x_test[..., None], y_test


def _load_images(name: str, num_samples: int, location: Path | None) -> Dataset:
    x_train, y_train, x_test, y_test = _read_published(name, location)
    entry = REGISTRY[name]
    expected = (entry.split[0], *entry.input_shape), (entry.split[1], *entry.input_shape)
    if (x_train.shape, x_test.shape) != expected or (len(y_train), len(y_test)) != entry.split:
        raise DataError(f"dataset {name!r}: images {x_train.shape}/{x_test.shape}, labels {len(y_train)}/{len(y_test)}; expected {expected}")
    n_train = entry.train_size(num_samples)
    x_train, y_train = x_train[:n_train], y_train[:n_train]
    x_test, y_test = x_test[: num_samples - n_train], y_test[: num_samples - n_train]
    scaled = x_train.astype(np.float32) / 255
    mean = scaled.mean(axis=(0, 1, 2), dtype=np.float64)
    std = scaled.std(axis=(0, 1, 2), dtype=np.float64)

    def standardize(x):
        return ((x.astype(np.float32) / 255 - mean.astype(np.float32)) / std.astype(np.float32)).astype(np.float32)

    return Dataset(name, standardize(x_train), y_train.astype(np.int32), standardize(x_test), y_test.astype(np.int32), 10)


register(
    DatasetInfo(
        "mnist1d",
        "MNIST-1D signals (Greydanus 2020)",
        (4000, 1000),
        (40,),
        lambda num_samples, _: _load_mnist1d(num_samples),
    )
)
register(
    DatasetInfo(
        "synthetic",
        "Gaussian mixture, for tests",
        (960, 240),
        (16,),
        lambda num_samples, _: _load_synthetic(num_samples),
        num_classes=4,
    )
)
_IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _idx_source(checks: str, md5s: tuple[str, ...], sizes: tuple[int, ...], mirrors: tuple[str, ...]) -> Source:
    """The four IDX files of an MNIST-format data set (train/test images and labels)."""
    return Source(tuple(DataFile(n, md5, checks, size) for n, md5, size in zip(_IDX_NAMES, md5s, sizes)), mirrors)


register(
    DatasetInfo(
        "mnist",
        "handwritten digits (LeCun 1998)",
        (60000, 10000),
        (28, 28, 1),
        functools.partial(_load_images, "mnist"),
        _idx_source(
            "content",
            (
                "6bbc9ace898e44ae57da46a324031adb",
                "a25bea736e30d166cdddb491f175f624",
                "2646ac647ad5339dbf082846283269ea",
                "27ae3e4e09519cfbb04c329615203637",
            ),
            (9912422, 28881, 1648877, 4542),
            ("https://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
        ),
    )
)
register(
    DatasetInfo(
        "fashion_mnist",
        "clothing images (Xiao 2017)",
        (60000, 10000),
        (28, 28, 1),
        functools.partial(_load_images, "fashion_mnist"),
        _idx_source(
            "file",
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
            (26421880, 29515, 4422102, 5148),
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        ),
    )
)
register(
    DatasetInfo(
        "cifar10",
        "photos (Krizhevsky 2009)",
        (50000, 10000),
        (32, 32, 3),
        functools.partial(_load_images, "cifar10"),
        Source(
            (DataFile("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", "file", 170052171),),
            ("https://www.cs.toronto.edu/~kriz/",),
        ),
    )
)
