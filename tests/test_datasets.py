"""Image data sets: IDX and CIFAR-binary readers on tiny generated files, MD5 checks, downloads from a
local server, the offline error, and (when ../shared/data/mnist exists) the real MNIST files."""

import functools
import gzip
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from bnbench import data
from bnbench.data import registry
from bnbench.data import files
from bnbench.data import formats
from bnbench.data.files import DataFile

pytestmark = pytest.mark.unit

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data"
IDX_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real cache or data folder; the lru cache of data.load emptied around each test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(files.ENV_VAR, raising=False)
    data.load.cache_clear()
    yield
    data.load.cache_clear()


@pytest.fixture
def tiny_mnist(monkeypatch, tmp_path):
    """A 6/4-example MNIST in DIR/mnist, the registry entry pointed at its MD5s; returns (DIR, arrays)."""
    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (6, 28, 28)),
        rng.integers(0, 10, 6),
        rng.integers(0, 256, (4, 28, 28)),
        rng.integers(0, 10, 4),
    )
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    published = []
    for name, array in zip(IDX_NAMES, arrays):
        raw = idx_bytes(array)
        (folder / name).write_bytes(gzip.compress(raw))
        published.append(DataFile(name, hashlib.md5(raw).hexdigest(), "content", len(raw)))
    entry = data.REGISTRY["mnist"]
    monkeypatch.setitem(data.REGISTRY, "mnist", entry._replace(split=(6, 4), source=entry.source._replace(files=tuple(published))))
    return tmp_path / "data", arrays


def test_idx_images_load_as_nhwc_standardized_with_training_statistics(tiny_mnist):
    root, (x_train, y_train, x_test, y_test) = tiny_mnist
    dataset = data.load("mnist", None, root)
    scaled = x_train.astype(np.float64) / 255
    mean, std = scaled.mean(), scaled.std()
    assert dataset.x_train.shape == (6, 28, 28, 1) and dataset.x_train.dtype == np.float32
    np.testing.assert_allclose(dataset.x_train[..., 0], (scaled - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dataset.x_test[..., 0], (x_test / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(dataset.y_train, y_train)
    np.testing.assert_array_equal(dataset.y_test, y_test)


def test_num_samples_takes_the_first_examples_of_each_split(tiny_mnist):
    root, (x_train, y_train, x_test, y_test) = tiny_mnist
    dataset = data.load("mnist", 5, root)  # 5 * 6 // 10 = 3 training examples, 2 test examples
    np.testing.assert_array_equal(dataset.y_train, y_train[:3])
    np.testing.assert_array_equal(dataset.y_test, y_test[:2])


def test_uncompressed_copies_pass_the_content_checksum(tiny_mnist):
    root, arrays = tiny_mnist
    for name in IDX_NAMES:
        path = root / "mnist" / name
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    np.testing.assert_array_equal(data.load("mnist", None, root).y_test, arrays[3])


def test_a_regzipped_file_passes_but_a_changed_one_fails(tiny_mnist):
    root, _ = tiny_mnist
    path = root / "mnist" / IDX_NAMES[1]
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw, compresslevel=1, mtime=12345))  # other gzip header, same content
    data.load("mnist", None, root)
    data.load.cache_clear()
    path.write_bytes(gzip.compress(raw[:-1] + bytes([(raw[-1] + 1) % 10])))
    with pytest.raises(files.DataFileError, match="MD5 of the uncompressed content is .* expected the published"):
        data.load("mnist", None, root)


def test_idx_reader_rejects_bad_magic_and_truncated_files():
    with pytest.raises(formats.FormatError, match="bad magic"):
        formats.read_idx(b"\x00\x01\x08\x01" + bytes(8), "f")
    with pytest.raises(formats.FormatError, match="header"):
        formats.read_idx(idx_bytes(np.zeros((3, 2)))[:-1], "f")


def cifar_tarball(records: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, payload in records.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


def test_cifar_binary_tarball_is_read_without_extracting_and_as_nhwc(monkeypatch, tmp_path):
    rng = np.random.default_rng(1)
    members = {**{m: 2 for m in formats.CIFAR_TRAIN_MEMBERS}, **{m: 3 for m in formats.CIFAR_TEST_MEMBERS}}
    images, labels, records = {}, {}, {}
    for name, n in members.items():
        images[name] = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)  # channel planes, as published
        labels[name] = rng.integers(0, 10, n, dtype=np.uint8)
        records[name] = np.concatenate([labels[name][:, None], images[name].reshape(n, -1)], axis=1).tobytes()
    tarball = cifar_tarball(records)
    (tmp_path / "data" / "cifar10").mkdir(parents=True)
    (tmp_path / "data" / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(tarball)
    entry = data.REGISTRY["cifar10"]
    file = DataFile("cifar-10-binary.tar.gz", hashlib.md5(tarball).hexdigest(), "file", len(tarball))
    monkeypatch.setitem(data.REGISTRY, "cifar10", entry._replace(split=(10, 3), source=entry.source._replace(files=(file,))))
    x_train, y_train, x_test, y_test = data.raw_splits("cifar10", tmp_path / "data")
    expected = np.concatenate([images[m] for m in formats.CIFAR_TRAIN_MEMBERS]).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(x_train, expected)
    np.testing.assert_array_equal(y_train, np.concatenate([labels[m] for m in formats.CIFAR_TRAIN_MEMBERS]))
    np.testing.assert_array_equal(x_test, images[formats.CIFAR_TEST_MEMBERS[0]].transpose(0, 2, 3, 1))
    dataset = data.load("cifar10", None, tmp_path / "data")
    assert dataset.x_train.shape == (10, 32, 32, 3)
    # Per-channel standardization: every channel of the training split has mean 0 and std 1.
    np.testing.assert_allclose(dataset.x_train.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(dataset.x_train.std(axis=(0, 1, 2)), 1, rtol=1e-4)


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over tmp/served; returns (base URL, folder)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/", served
    httpd.shutdown()


def _serve_tiny_mnist(monkeypatch, tiny_mnist, served, mirrors):
    root, _ = tiny_mnist
    for name in IDX_NAMES:
        # A mirror's own gzip header: the content check still passes.
        raw = gzip.decompress((root / "mnist" / name).read_bytes())
        (served / name).write_bytes(gzip.compress(raw, mtime=1))
    entry = data.REGISTRY["mnist"]
    monkeypatch.setitem(data.REGISTRY, "mnist", entry._replace(source=entry.source._replace(mirrors=mirrors)))
    return data.REGISTRY["mnist"].source


def test_download_tries_the_next_mirror_verifies_and_caches(monkeypatch, tiny_mnist, server, tmp_path):
    base, served = server
    source = _serve_tiny_mnist(monkeypatch, tiny_mnist, served, ("http://127.0.0.1:1/", base))
    progress = []
    folder = files.fetch("mnist", source, on_progress=lambda *event: progress.append(event))
    assert folder == tmp_path / "cache" / "bnbench" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(IDX_NAMES)
    assert {label for label, _, _ in progress} == set(IDX_NAMES)
    last = {label: (done, total) for label, done, total in progress}
    assert all(done == total > 0 for done, total in last.values())
    np.testing.assert_array_equal(data.load("mnist").y_train, tiny_mnist[1][1])


def test_a_download_with_the_wrong_checksum_is_deleted(monkeypatch, tiny_mnist, server, tmp_path):
    base, served = server
    source = _serve_tiny_mnist(monkeypatch, tiny_mnist, served, (base,))
    (served / IDX_NAMES[2]).write_bytes(gzip.compress(b"not the published file"))
    with pytest.raises(files.DataFileError, match="MD5 of the uncompressed content .* deleted the download"):
        files.fetch("mnist", source)
    assert not list((tmp_path / "cache" / "bnbench" / "mnist").glob("*.part"))


def test_offline_sweep_fails_in_one_line_naming_files_and_folder(monkeypatch, write_spec, cli, workdir):
    entry = data.REGISTRY["mnist"]
    monkeypatch.setitem(data.REGISTRY, "mnist", entry._replace(source=entry.source._replace(mirrors=("http://127.0.0.1:1/",))))
    spec = write_spec('dataset = "mnist"\nsteps = 5\n')
    result = cli("sweep", spec)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "dataset 'mnist' is not available locally and could not be downloaded" in line
    assert "train-images-idx3-ubyte.gz" in line and str(workdir / "cache" / "bnbench" / "mnist") in line
    assert not (workdir / "results").exists() and not (workdir / "cache" / "bnbench" / "mnist").exists()


def test_datasets_command_lists_availability(tiny_mnist, cli):
    root, _ = tiny_mnist
    result = cli("datasets", "--data-dir", root)
    assert result.exit_code == 0
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ ")}
    assert "yes" in lines["mnist"] and "no" in lines["cifar10"] and "generated" in lines["mnist1d"]


@pytest.mark.skipif(not (SHARED_MNIST / "mnist").is_dir(), reason="../shared/data/mnist is not here")
def test_real_mnist_files():
    x_train, y_train, x_test, y_test = data.raw_splits("mnist", SHARED_MNIST)
    assert x_train.shape == (60000, 28, 28, 1) and x_test.shape == (10000, 28, 28, 1)
    assert len(y_train) == 60000 and len(y_test) == 10000
    assert abs(x_train.mean() / 255 - 0.1307) < 1e-4
    assert set(np.unique(y_train)) == set(range(10))


def test_generated_mnist1d_is_cached_bitwise_and_regenerated_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fresh = registry._load_mnist1d(600)
    (path,) = (tmp_path / "bnbench" / "mnist1d").glob("mnist1d-*-600.npz")
    cached = registry._load_mnist1d(600)
    for a, b in zip(fresh[1:5], cached[1:5]):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    monkeypatch.setattr(registry, "_generate_mnist1d", lambda n: pytest.fail("generated although a cached copy exists"))
    registry._load_mnist1d(600)
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    again = registry._load_mnist1d(600)
    assert np.array_equal(again.x_train, fresh.x_train) and path.stat().st_size == len(blob)
    path.write_bytes(blob[:100] + bytes(255 - b for b in blob[100:200]) + blob[200:])
    assert np.array_equal(registry._load_mnist1d(600).x_test, fresh.x_test)
