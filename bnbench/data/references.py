"""A spec's references to a researcher's own code and data: resolved, loaded, checked and digested.

A ``model`` or ``dataset`` that is not one of bnbench's own names is a reference:

* ``"./nets/wide.py:wide_net"`` (or any ``path.py:name``): a function in a Python file, the path
  relative to the spec's folder, so that a spec and its files move together;
* ``"package.module:function"``: a function in an importable module;
* ``"name"``: an entry point of that name in the ``bnbench.models`` or ``bnbench.datasets`` group of an
  installed distribution;
* for data sets also ``"npz:data/signals.npz"``: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``
  (and optionally ``num_classes``) in a NumPy ``.npz`` file, read without pickle.

Each resolved reference carries a digest of what it names (the Python file, or the package folder it
belongs to; the data's arrays), which the run records (:mod:`bnbench.training.context`) and the traced-program
cache keys on: editing a plugin or its data never reuses a stale program, and resuming onto runs made
with other code or data is refused, naming the file. Problems are one-line
:class:`ReferenceLoadError` messages naming the file and, where known, the line.

This module lives in the data layer, the lowest one that resolves a reference: a data loader is one
(:mod:`bnbench.data.own`), and the layers above (the spec, plugin networks in :mod:`bnbench.models`,
their checks in :mod:`bnbench.sweeping.plan`) share it from here. It imports only the standard library.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, NamedTuple

from bnbench.errors import BnbenchError

MODEL_GROUP = "bnbench.models"
DATASET_GROUP = "bnbench.datasets"


class ReferenceLoadError(BnbenchError):
    """A model or data set reference that cannot be resolved, loaded or used."""


class Function(NamedTuple):
    """A resolved function reference: the function, where its code lives and the digest of that code."""

    function: Callable
    where: str  # the file (or module) as messages name it
    digest: str

    @property
    def source(self) -> str:
        """``where@digest``: what a run records of the code it ran."""
        return f"{self.where}@{self.digest}"


def is_path(text: str) -> bool:
    """Whether ``module_part:name`` names a file (``./x.py``, ``nets/x.py``) rather than a module."""
    module = text.rpartition(":")[0]
    return module.endswith(".py") or "/" in module or "\\" in module


def digest_of(path: Path) -> str:
    """12 hex digits of the SHA-256 of a file, or of every Python file under a folder (names and text)."""
    hasher = hashlib.sha256()
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    for file in files:
        hasher.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0" + file.read_bytes())
    return hasher.hexdigest()[:12]


def _where_it_failed(err: BaseException, file: str | None) -> str:
    """``file:line`` of the deepest frame of ``err``'s traceback inside ``file`` (or the deepest frame
    outside bnbench and JAX), for messages."""
    frames = traceback.extract_tb(err.__traceback__)
    if isinstance(err, SyntaxError) and err.filename:
        return f"{err.filename}:{err.lineno}"
    ours = [f for f in frames if file and Path(f.filename) == Path(file)]
    outside = [f for f in frames if "/bnbench/" not in f.filename and "/jax/" not in f.filename]
    frame = (ours or outside or frames or [None])[-1]
    return f"{frame.filename}:{frame.lineno}" if frame else (file or "?")


def root_cause(err: BaseException) -> str:
    """The innermost exception of a chain, as ``Type: message``."""
    while err.__cause__ is not None or (err.__context__ is not None and not err.__suppress_context__):
        err = err.__cause__ or err.__context__
    return f"{type(err).__name__}: {err}"


def _import_file(path: Path, digest: str):
    """The module of a Python file, imported under a name that changes with its content (an edited file
    is a new module)."""
    name = f"bnbench_plugin_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before executing it: dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException as err:
        del sys.modules[name]
        where = _where_it_failed(err, str(path))
        raise ReferenceLoadError(f"{where}: cannot import {path.name} ({root_cause(err)})") from None
    return module


def _entry_point(name: str, group: str):
    found = [ep for ep in importlib.metadata.entry_points(group=group) if ep.name == name]
    if not found:
        return None
    try:
        return found[0].load()
    except BaseException as err:
        raise ReferenceLoadError(
            f"entry point {name!r} ({found[0].value}): cannot be loaded ({root_cause(err)})") from None


def entry_point_names(group: str) -> list[str]:
    """The entry points of ``group`` that installed distributions declare."""
    return sorted(ep.name for ep in importlib.metadata.entry_points(group=group))


def _module_folder(module) -> Path:
    """The folder of a module's package (the module's own file for a top-level module)."""
    file = Path(inspect.getfile(module))
    package = module.__name__.partition(".")[0]
    root = sys.modules.get(package)
    if root is not None and getattr(root, "__path__", None):
        return Path(list(root.__path__)[0])
    return file


def _unknown_name(text: str, group: str, what: str, builtins: tuple[str, ...]) -> str:
    installed = entry_point_names(group)
    close = difflib.get_close_matches(text, [*builtins, *installed], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (f"{what} {text!r}: must be one of {', '.join(builtins)}, an entry point in {group!r} (installed: "
            f"{', '.join(installed) or 'none'}) or a reference ./file.py:function or package.module:function{hint}")


def resolve(text: str, base_dir: Path, group: str, what: str, builtins: tuple[str, ...] = ()) -> Function:
    """The function ``text`` names (see the module docstring), relative to ``base_dir``; raises
    :class:`ReferenceLoadError` naming the file and line of what failed. ``builtins`` are the names
    bnbench itself knows, for the message when ``text`` is none of them and no entry point."""
    module_part, colon, name = text.rpartition(":")
    if not colon:
        target = _entry_point(text, group)
        if target is None:
            raise ReferenceLoadError(_unknown_name(text, group, what, builtins))
        module = inspect.getmodule(target)
        return Function(target, f"entry point {text}", digest_of(_module_folder(module)) if module else "")
    if is_path(text):
        path = (base_dir / module_part).resolve()
        if not path.is_file():
            raise ReferenceLoadError(f"{what} {text!r}: no such file {path}")
        digest = digest_of(path)
        module, where = _import_file(path, digest), str(path)
    else:
        try:
            module = importlib.import_module(module_part)
        except BaseException as err:
            raise ReferenceLoadError(f"{_where_it_failed(err, None)}: {what} {text!r}: cannot import {module_part} "
                                 f"({root_cause(err)})") from None
        where, digest = module_part, digest_of(_module_folder(module))
    target = getattr(module, name, None)
    if not callable(target):
        defined = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                   and getattr(v, "__module__", None) == module.__name__]
        close = difflib.get_close_matches(name, defined, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"it defines {', '.join(defined) or 'no function'}"
        raise ReferenceLoadError(f"{where}: {what} {text!r}: no function {name!r} ({hint})")
    return Function(target, where, digest)


def check_keywords(function: Callable, given: dict[str, Any], where: str, what: str) -> None:
    """Raises :class:`ReferenceLoadError` if ``given`` holds a keyword ``function`` does not take (suggesting
    the closest one) or lacks one it requires (its first parameter is the context)."""
    parameters = list(inspect.signature(function).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    names = [p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in given:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"it takes {', '.join(names) or 'none'}"
            raise ReferenceLoadError(
                f"{where}: {what}_args.{key}: {function.__name__} takes no argument {key!r} ({hint})")
    missing = [p.name for p in parameters if p.default is inspect.Parameter.empty and p.name not in given
               and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    if missing:
        raise ReferenceLoadError(f"{where}: {function.__name__} needs {what}_args.{missing[0]} (it has no default)")


def user_frame(err: BaseException, where: str) -> str:
    """``file:line`` in the plugin's code where ``err`` was raised (for errors while tracing it)."""
    return _where_it_failed(err, where)
