"""Readers of the published file formats of the image data sets; none of them executes code.

* IDX (MNIST, Fashion-MNIST): a big-endian header ``0, 0, type code, number of dimensions``, one
  big-endian uint32 per dimension, then the values in row-major order.
* CIFAR-10 binary version: records of 3073 bytes, a label (0-9) then the 32x32 red, green and blue
  planes, row-major. Read from the published tarball without extracting it (and without the pickled
  Python version).
"""

from __future__ import annotations

import gzip
import io
import tarfile

import numpy as np

from bnbench.errors import BnbenchError

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
CIFAR_RECORD = 1 + 32 * 32 * 3
CIFAR_TRAIN_MEMBERS = tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_MEMBERS = ("cifar-10-batches-bin/test_batch.bin",)


class FormatError(BnbenchError):
    """A data file that does not hold what its format promises."""


def gunzip(raw: bytes, source: str) -> bytes:
    """The decompressed gzip bytes ``raw``; ``source`` names the file in errors."""
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise FormatError(f"{source}: not a valid gzip file ({err})") from None


def read_idx(raw: bytes, source: str) -> np.ndarray:
    """The array stored in IDX bytes ``raw``; ``source`` names the file in errors."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise FormatError(f"{source}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise FormatError(f"{source}: IDX header cut short")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise FormatError(f"{source}: IDX holds {len(raw)} bytes, its header {shape} says {expected}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def read_cifar_records(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 32, 32, 3)`` uint8 (NHWC) and labels ``(N,)`` of CIFAR-10 binary records."""
    if len(raw) % CIFAR_RECORD:
        raise FormatError(f"{source}: {len(raw)} bytes is not a whole number of {CIFAR_RECORD}-byte records")
    records = np.frombuffer(raw, np.uint8).reshape(-1, CIFAR_RECORD)
    labels = records[:, 0]
    if labels.size and labels.max() > 9:
        raise FormatError(f"{source}: label {labels.max()} outside 0-9")
    return records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar_tarball(raw: bytes, source: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": (...)}`` from the bytes of ``cifar-10-binary.tar.gz``."""
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            def split(members):
                parts = []
                for name in members:
                    member = tar.extractfile(name)
                    if member is None:
                        raise FormatError(f"{source}: {name} is not a regular file")
                    parts.append(read_cifar_records(member.read(), f"{source}:{name}"))
                return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

            return {"train": split(CIFAR_TRAIN_MEMBERS), "test": split(CIFAR_TEST_MEMBERS)}
    except (tarfile.TarError, KeyError, OSError, EOFError) as err:
        raise FormatError(f"{source}: not the CIFAR-10 binary tarball ({err})") from None
