"""A researcher's own data set: an ``.npz`` file or a loader function, checked and registered.

``dataset = "npz:data/signals.npz"`` reads the arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``
(and, optionally, the scalar ``num_classes``) from a NumPy ``.npz`` file, without pickle; the path is
relative to the spec. ``dataset = "./load.py:load"`` (or ``"package.module:function"``, or an entry
point of the ``bnbench.datasets`` group; :mod:`bnbench.data.references`) calls a function of no arguments
that returns the same four arrays, a mapping holding them, or a :class:`bnbench.data.registry.Dataset`.

The arrays are checked before anything trains (:func:`check`): ``x`` floating point, finite, each
example of one shape; ``y`` integer labels in ``[0, num_classes)`` (``num_classes`` defaults to the
largest label plus one); matching lengths; no object arrays. The data set is registered under the
reference as written (:func:`bnbench.data.registry.register`), with ``num_samples`` taking the first examples
of each split in proportion as for the built-in data sets, and the SHA-256 of its arrays as its
``digest``, which each run records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from bnbench import data
from bnbench.data import references
from bnbench.data.registry import ARRAYS, DataError, Dataset, DatasetInfo



def is_reference(text: str) -> bool:
    """Whether ``dataset = text`` names the user's own data rather than a built-in data set."""
    return text not in data.REGISTRY or data.REGISTRY[text].origin is not None


def _read_npz(path: Path, where: str) -> dict:
    with path.open("rb") as file:
        if file.read(2) != b"PK":  # a zip archive; np.load would take any other file for a pickle
            raise DataError(f"{where}: cannot be read as an .npz file (not a zip archive; write it with numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [name for name in ARRAYS if name not in archive.files]
            if missing:
                raise DataError(f"{where}: holds no array {missing[0]!r} (it holds {', '.join(archive.files)}; needs "
                                f"{', '.join(ARRAYS)})")
            return {name: archive[name] for name in archive.files if name in (*ARRAYS, "num_classes")}
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DataError(f"{where}: holds object arrays, which need pickle to read; save numeric arrays") from None
        raise DataError(f"{where}: cannot be read as an .npz file ({err})") from None
    except OSError as err:
        raise DataError(f"{where}: cannot be read as an .npz file ({err.strerror or err})") from None


def _from_loader(result, where: str) -> dict:
    if isinstance(result, Dataset):
        return {**{name: getattr(result, name) for name in ARRAYS}, "num_classes": result.num_classes}
    if isinstance(result, Mapping):
        return dict(result)
    if isinstance(result, (tuple, list)) and len(result) == 4:
        return dict(zip(ARRAYS, result))
    raise DataError(f"{where}: the loader returned {type(result).__name__}; return (x_train, y_train, x_test, y_test), "
                    "a mapping of them, or a bnbench.data.registry.Dataset")


def check(arrays: dict, where: str, *, as_is: bool = False) -> tuple[dict[str, np.ndarray], int]:
    """The four arrays as float32 inputs and int32 labels, and the number of classes; raises
    :class:`bnbench.data.registry.DataError` naming the array and what is wrong with it. Images that look
    channels first (:func:`looks_channels_first`) are refused unless ``as_is``."""
    out = {}
    for name in ARRAYS:
        if name not in arrays:
            raise DataError(f"{where}: no array {name!r}")
        value = np.asarray(arrays[name])
        if value.dtype == object:
            raise DataError(f"{where}: {name} is an object array; save numeric arrays")
        out[name] = value
    for name in ("x_train", "x_test"):
        x = out[name]
        if not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"{where}: {name} is {x.dtype}, not floating point (convert it, e.g. x / 255)")
        if x.ndim < 2 or len(x) == 0:
            raise DataError(f"{where}: {name} has shape {x.shape}; expected (examples, features...) with examples")
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise DataError(f"{where}: {name} holds {bad} NaN/inf values")
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise DataError(f"{where}: x_train's examples are {out['x_train'].shape[1:]}, x_test's {out['x_test'].shape[1:]}")
    if not as_is and looks_channels_first(out["x_train"].shape):
        raise DataError(f"{where}: x_train is {out['x_train'].shape}, which looks channels first (N, C, H, W); bnbench "
                        "reads images channels last (N, H, W, C): save np.moveaxis(x, 1, -1), or set data_layout = "
                        '"as_is" in the spec to take the arrays as they are')
    for x_name, y_name in (("x_train", "y_train"), ("x_test", "y_test")):
        y = out[y_name]
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            raise DataError(f"{where}: {y_name} must be a 1-D array of integer labels, got {y.dtype} {y.shape}")
        if len(y) != len(out[x_name]):
            raise DataError(f"{where}: {x_name} has {len(out[x_name])} examples, {y_name} {len(y)} labels")
    labels = np.concatenate([out["y_train"], out["y_test"]])
    num_classes = int(arrays["num_classes"]) if "num_classes" in arrays else int(labels.max()) + 1
    if labels.min() < 0 or labels.max() >= num_classes or num_classes < 2:
        raise DataError(f"{where}: labels must lie in [0, num_classes={num_classes}) with at least 2 classes, got "
                        f"{labels.min()} .. {labels.max()}")
    cast = {name: out[name].astype(np.float32 if name.startswith("x") else np.int32) for name in ARRAYS}
    return cast, num_classes


def looks_channels_first(shape: tuple[int, ...]) -> bool:
    """Whether a batch of images looks channels first: ``(N, C, H, W)`` with one or three channels and
    square images, which read channels last would train as images of height ``C``, silently."""
    return len(shape) == 4 and shape[1] in (1, 3) and shape[2] == shape[3] and shape[3] not in (1, 3)


def _builder(name: str, arrays: dict[str, np.ndarray], num_classes: int, split: tuple[int, int]):
    def build(num_samples: int, _folder) -> Dataset:
        n_train = num_samples * split[0] // sum(split)
        return Dataset(name, arrays["x_train"][:n_train], arrays["y_train"][:n_train],
                       arrays["x_test"][: num_samples - n_train], arrays["y_test"][: num_samples - n_train], num_classes)

    return build


def register_reference(text: str, base_dir: Path, *, as_is: bool = False) -> DatasetInfo:
    """Loads, checks and registers the data set ``text`` names (see the module docstring), relative to
    ``base_dir``; raises a :class:`bnbench.errors.BnbenchError` naming the file. ``as_is``: take image
    arrays that look channels first as they are (:func:`check`)."""
    if text.startswith("npz:"):
        path = (base_dir / text[len("npz:"):]).resolve()
        if not path.is_file():
            raise DataError(f"dataset {text!r}: no such file {path}")
        where, raw = str(path), _read_npz(path, str(path))
    else:
        loader = references.resolve(text, base_dir, references.DATASET_GROUP, "dataset",
                                    tuple(n for n, i in data.REGISTRY.items() if i.origin is None))
        where = loader.where
        try:
            result = loader.function()
        except Exception as err:  # noqa: BLE001 - the user's loader failing is reported with where it failed
            raise DataError(f"{references.user_frame(err, where)}: the data loader failed ({references.root_cause(err)})") from None
        raw = _from_loader(result, where)
    arrays, num_classes = check(raw, where, as_is=as_is)
    split = (len(arrays["y_train"]), len(arrays["y_test"]))
    info = DatasetInfo(text, f"your data set ({Path(where).name})", split, arrays["x_train"].shape[1:],
                       _builder(text, arrays, num_classes, split), None, num_classes, where,
                       Dataset(text, *(arrays[n] for n in ARRAYS), num_classes).digest())
    return data.register(info)
