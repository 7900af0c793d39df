"""Where a downloadable data set's files are: a data folder, the cache, or the canonical mirrors.

A data folder holds one sub-folder per data set, named as the data set (``DIR/mnist/...``). Files
are looked for in the folder given by ``--data-dir`` or the ``BNBENCH_DATA_DIR`` environment variable,
then in the cache (``$XDG_CACHE_HOME/bnbench``, default ``~/.cache/bnbench``); :func:`fetch` downloads
what is missing into the cache, from each mirror in turn. Every file is checked against its published
MD5 when it is downloaded and again whenever it is read: for MNIST the MD5 of the **uncompressed**
content (mirrors re-gzip the files with different headers, so the ``.gz`` bytes differ; a local copy
may be the ``.gz`` or the uncompressed file); Fashion-MNIST and CIFAR-10 publish only the MD5 of their
archives, which are checked as downloaded from their sole canonical site. A download that fails its
check is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, NamedTuple

from bnbench import options
from bnbench.data import formats
from bnbench.errors import BnbenchError, RunFailure

ENV_VAR = options.DATA_DIR_ENV
CHUNK = 1 << 20
TIMEOUT_S = 30


class DataFile(NamedTuple):
    """One published file: its name, MD5, what the MD5 covers and its download size in bytes."""

    name: str
    md5: str
    checks: str  # "content": the uncompressed content; "file": the file's bytes as published
    size: int


class Source(NamedTuple):
    """A data set's files and the base URLs they are published under (a file's URL is base + name)."""

    files: tuple[DataFile, ...]
    mirrors: tuple[str, ...]

    @property
    def download_size(self) -> int:
        return sum(f.size for f in self.files)


class DataFileError(BnbenchError):
    """A data set's files are missing or fail their checksum."""


class DownloadFailed(RunFailure, DataFileError):
    """A data set's missing files could not be downloaded."""


def data_dir(explicit: str | Path | None = None) -> Path | None:
    """The data folder: ``explicit`` (``--data-dir``), else ``$BNBENCH_DATA_DIR``, else None."""
    chosen = explicit or os.environ.get(ENV_VAR)
    return Path(chosen).expanduser() if chosen else None


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/bnbench``, or ``~/.cache/bnbench``."""
    return options.user_cache_dir(os.environ)


def search_roots(explicit: str | Path | None = None) -> list[Path]:
    """The data folders looked in, in order: the data folder (if any), then the cache."""
    return ([data_dir(explicit)] if data_dir(explicit) else []) + [cache_dir()]


def search_folders(name: str, explicit: str | Path | None = None) -> list[Path]:
    """The folders looked in for data set ``name``, in order."""
    return [root / name for root in search_roots(explicit)]


def _candidates(folder: Path, file: DataFile) -> list[Path]:
    # A content-checked .gz may also be kept uncompressed: the check covers the content either way.
    paths = [folder / file.name]
    if file.checks == "content" and file.name.endswith(".gz"):
        paths.append(folder / file.name.removesuffix(".gz"))
    return paths


def _present(folder: Path, file: DataFile) -> Path | None:
    return next((p for p in _candidates(folder, file) if p.is_file()), None)


def locate(name: str, source: Source, explicit: str | Path | None = None) -> Path | None:
    """The first search folder that holds every file of ``source`` (unchecked), or None."""
    return next((f for f in search_folders(name, explicit) if all(_present(f, x) for x in source.files)), None)


def _verified(path: Path, file: DataFile, *, gzipped: bool) -> bytes:
    """The file's content (decompressed if content-checked and ``gzipped``) after checking its MD5."""
    raw = path.read_bytes()
    data = formats.gunzip(raw, str(path)) if file.checks == "content" and gzipped else raw
    digest = hashlib.md5(data if file.checks == "content" else raw).hexdigest()
    if digest != file.md5:
        what = "uncompressed content" if file.checks == "content" else "file"
        raise DataFileError(f"{path}: MD5 of the {what} is {digest}, expected the published {file.md5}")
    return data


def read(folder: Path, file: DataFile) -> bytes:
    """The file's content (decompressed if content-checked), after checking its MD5."""
    path = _present(folder, file)
    if path is None:
        raise DataFileError(f"{folder / file.name}: no such file")
    return _verified(path, file, gzipped=path.suffix == ".gz")


def verify(folder: Path, source: Source) -> str | None:
    """None if every file of ``source`` in ``folder`` passes its MD5 check, else the first problem."""
    for file in source.files:
        try:
            read(folder, file)
        except BnbenchError as err:
            return str(err)
    return None


def missing_message(name: str, source: Source, explicit: str | Path | None, reason: str) -> str:
    """The one-line error for a data set that is neither local nor downloadable."""
    folders = search_folders(name, explicit)
    names = ", ".join(f.name for f in source.files)
    return (
        f"dataset {name!r} is not available locally and could not be downloaded ({reason}); put {names} "
        f"in {folders[0]}/ (looked in {', '.join(map(str, folders))}; a data folder is set with --data-dir DIR "
        f"or {ENV_VAR}=DIR and holds DIR/{name}/)"
    )


def _download(url: str, part: Path, on_progress: Callable[[str, int, int | None], None], label: str) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, part.open("wb") as out:
        total = response.length
        done = 0
        on_progress(label, done, total)
        while chunk := response.read(CHUNK):
            out.write(chunk)
            done += len(chunk)
            on_progress(label, done, total)


def fetch(
    name: str,
    source: Source,
    explicit: str | Path | None = None,
    on_progress: Callable[[str, int, int | None], None] = lambda label, done, total: None,
) -> Path:
    """The folder holding data set ``name``, downloading its missing files into the cache first.

    Each file is tried from every mirror in turn; a download whose MD5 does not match is deleted and
    the next mirror tried. ``on_progress(file name, bytes done, bytes in all or None)`` reports
    progress. Raises :class:`DownloadFailed` naming the files and the folder to put them in.
    """
    found = locate(name, source, explicit)
    if found is not None:
        return found
    folder = cache_dir() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadFailed(missing_message(name, source, explicit, f"cannot create {folder}: {err.strerror}")) from None
    for file in source.files:
        if _present(folder, file):
            continue
        errors = []
        for mirror in source.mirrors:
            url = mirror + file.name
            part = folder / (file.name + ".part")
            try:
                _download(url, part, on_progress, file.name)
                _verified(part, file, gzipped=file.name.endswith(".gz"))
            except DataFileError as err:
                part.unlink(missing_ok=True)
                errors.append(f"{url}: {err}; deleted the download")
                continue
            except (urllib.error.URLError, OSError) as err:
                part.unlink(missing_ok=True)
                errors.append(f"{url}: {getattr(err, 'reason', err)}")
                continue
            part.rename(folder / file.name)
            break
        else:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: leave no trace of a data set that never arrived
            raise DownloadFailed(missing_message(name, source, explicit, "; ".join(errors)))
    return folder
