"""Downloads of the named datasets, from a mirror on 127.0.0.1 serving each dataset's real file format (a few
images each): every dataset downloads, verifies and loads once; a corrupt, stalled or missing file is a one-line
DataError that leaves nothing in the cache; a pickle asking for code is refused; Keras's own caches are read."""

import dataclasses
import gzip
import hashlib
import http.server
import io
import pickle
import socket
import struct
import tarfile
import threading
import time

import numpy as np
import pytest
from robustness_helpers import idx_bytes

from cnnlab.data import DataError, catalogue, load_arrays, load_dataset

N_TRAIN, N_TEST, CIFAR_BATCH = 60, 20, 12  # 5 CIFAR training batches of 12: 60 images, as the IDX sets
MAX_REQUESTS = 40  # per test; the mirror answers 503 beyond it
STALL_S = 10  # the longest a stalled answer holds its thread; teardown releases it at once


# ---------------------------------------------------------------- the real formats, small


def images(shape, mark):
    """Random pixels, seeded by `mark`, and pixel [0, 0, 0] of the first image is `mark`."""
    x = np.random.default_rng(mark).integers(0, 256, shape, dtype=np.uint8)
    x.flat[0] = mark
    return x


def labels(n):
    return np.arange(n, dtype=np.uint8) % 10


def mnist_npz(mark):
    """Keras's mnist.npz: np.savez of the four uint8 arrays."""
    buffer = io.BytesIO()
    np.savez(buffer, x_train=images((N_TRAIN, 28, 28), mark), y_train=labels(N_TRAIN),
             x_test=images((N_TEST, 28, 28), mark + 1), y_test=labels(N_TEST))
    return {"mnist.npz": buffer.getvalue()}


def idx_gz(mark):
    """The four gzipped IDX files of MNIST's distribution, as Fashion-MNIST and KMNIST ship them."""
    arrays = {"train-images-idx3-ubyte": images((N_TRAIN, 28, 28), mark), "train-labels-idx1-ubyte": labels(N_TRAIN),
              "t10k-images-idx3-ubyte": images((N_TEST, 28, 28), mark + 1), "t10k-labels-idx1-ubyte": labels(N_TEST)}
    return {f"{stem}.gz": gzip.compress(idx_bytes(array), mtime=0) for stem, array in arrays.items()}


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote the real batches: every string a byte string, NumPy 1's module names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_string(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data if len(data) < 256 else
                   pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = save_string
    dispatch[type] = save_global


def pickled(batch, protocol):
    if protocol == "python2":
        buffer = io.BytesIO()
        Py2Pickler(buffer, protocol=2).dump(batch)
        return buffer.getvalue()
    return pickle.dumps(batch, protocol=protocol)


def cifar_images():
    """x_train (60, 32, 32, 3) and x_test (20, 32, 32, 3): what the batches below must load as."""
    return images((N_TRAIN, 32, 32, 3), 21), images((N_TEST, 32, 32, 3), 22)


def cifar_batches(protocol="python2", test_batch=None):
    """cifar-10-batches-py's members: data_batch_1..5 and test_batch, pickled dicts with byte-string keys whose
    b"data" rows hold an image's 1024 red, then 1024 green, then 1024 blue values, row by row (channels-first)."""
    (x_train, x_test), y_train = cifar_images(), labels(N_TRAIN)
    members = {"batches.meta": pickled({b"label_names": [c.encode() for c in catalogue.CLASS_NAMES["cifar10"]]},
                                       protocol), "readme.html": b"<html></html>"}
    parts = [(f"data_batch_{i + 1}", slice(i * CIFAR_BATCH, (i + 1) * CIFAR_BATCH)) for i in range(5)]
    for member, x, y in [(m, x_train[rows], y_train[rows]) for m, rows in parts] + [
            ("test_batch", x_test, labels(N_TEST))]:
        members[member] = pickled({b"batch_label": member.encode(), b"labels": [int(v) for v in y],
                                   b"data": x.transpose(0, 3, 1, 2).reshape(len(x), 3072),
                                   b"filenames": [b"image_%d.png" % i for i in range(len(x))]}, protocol)
    if test_batch is not None:
        members["test_batch"] = test_batch
    return members


def cifar_archive(members):
    """cifar-10-python.tar.gz: the batches in a cifar-10-batches-py folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


FIXTURES = {  # name -> the files it is downloaded as, their bytes
    "mnist": lambda: mnist_npz(1),
    "fashion_mnist": lambda: idx_gz(3),
    "kmnist": lambda: idx_gz(5),
    "cifar10": lambda: {"cifar-10-python.tar.gz": cifar_archive(cifar_batches())},
}


# ---------------------------------------------------------------- a mirror on 127.0.0.1


class Mirror:
    """An HTTP server on 127.0.0.1 serving `files` (URL path -> bytes), laid out as cnnlab's cache; it records each
    request, stalls on the paths in `stalls` (path -> bytes sent before the stall) and stops at teardown."""

    def __init__(self):
        self.files, self.stalls, self.requests = {}, {}, []
        self.released = threading.Event()
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5  # a client that stops talking frees its thread

            def do_GET(self):
                mirror.requests.append(self.path)
                content = mirror.files.get(self.path)
                if len(mirror.requests) > MAX_REQUESTS or content is None:
                    self.send_error(404 if content is None else 503)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.path in mirror.stalls:
                    self.wfile.write(content[:mirror.stalls[self.path]])
                    self.wfile.flush()
                    mirror.released.wait(STALL_S)
                    return
                self.wfile.write(content)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def serve(self, name, content=None):
        """Serve `name`'s fixture files (or `content`) where the mirror layout puts them; the catalogue expects
        their SHA-256s. Returns the files."""
        content = content or FIXTURES[name]()
        subdir = catalogue.NAMED[name].keras_subdir
        for fname, data in content.items():
            self.files["/" + "/".join(filter(None, (subdir, fname)))] = data
        return content

    def stop(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty Keras home and cnnlab cache; no data folder, no Debian package, no mirror."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    monkeypatch.delenv("CNNLAB_MIRROR", raising=False)
    monkeypatch.setitem(catalogue.NAMED, "fashion_mnist",
                        dataclasses.replace(catalogue.NAMED["fashion_mnist"], debian_dir=str(tmp_path / "no-debian")))


@pytest.fixture
def mirror(homes, monkeypatch):
    """The mirror that CNNLAB_MIRROR names."""
    server = Mirror()
    monkeypatch.setenv("CNNLAB_MIRROR", server.url)
    yield server
    server.stop()


def expect(monkeypatch, name, content):
    """Make the catalogue expect `content`'s SHA-256s for `name` (the real ones are those of the real files)."""
    entry = catalogue.NAMED[name]
    assert sorted(content) == sorted(entry.downloads)  # the fixture is the files the real dataset downloads
    downloads = {fname: hashlib.sha256(data).hexdigest() for fname, data in content.items()}
    monkeypatch.setitem(catalogue.NAMED, name, dataclasses.replace(entry, downloads=downloads))


def cache_files(tmp_path):
    return sorted(str(p.relative_to(tmp_path / "cache")) for p in (tmp_path / "cache").rglob("*") if p.is_file())


# ---------------------------------------------------------------- each dataset: downloaded, verified, loaded once


@pytest.mark.parametrize("name", list(FIXTURES))
def test_each_named_dataset_downloads_verifies_and_loads_once(mirror, monkeypatch, tmp_path, name):
    expect(monkeypatch, name, mirror.serve(name))
    folder = tmp_path / "cache" / catalogue.NAMED[name].keras_subdir
    arrays, source = load_arrays(name)
    assert source == f"downloaded to {folder}"
    assert sorted(mirror.requests) == sorted(mirror.files)  # each file fetched once
    assert cache_files(tmp_path) == sorted(str((folder / f).relative_to(tmp_path / "cache"))
                                           for f in catalogue.NAMED[name].downloads)  # no temporary beside them
    assert arrays["x_train"].dtype == np.uint8 and arrays["x_test"].shape[0] == N_TEST
    np.testing.assert_array_equal(arrays["y_train"], labels(N_TRAIN))
    np.testing.assert_array_equal(arrays["y_test"], labels(N_TEST))
    if name == "cifar10":
        assert arrays["x_train"].shape == (N_TRAIN, 32, 32, 3)
        np.testing.assert_array_equal(arrays["x_train"], cifar_images()[0])
        np.testing.assert_array_equal(arrays["x_test"], cifar_images()[1])
    else:
        assert arrays["x_train"].shape == (N_TRAIN, 28, 28)
        assert arrays["x_train"][0, 0, 0] == {"mnist": 1, "fashion_mnist": 3, "kmnist": 5}[name]
    again, source = load_arrays(name)
    assert source == f"cnnlab cache {folder}"
    assert len(mirror.requests) == len(mirror.files)  # found in the cache: nothing downloaded again
    np.testing.assert_array_equal(again["x_test"], arrays["x_test"])


def test_cifar_pixels_come_out_channels_last_in_their_place(mirror, monkeypatch):
    """A row of a batch is 1024 red, 1024 green, 1024 blue values, each 32x32 row by row: pixel (row 1, column 2)
    of the first training image is at 34, 1024 + 34 and 2048 + 34."""
    members = cifar_batches(protocol=4)
    row = pickle.loads(members["data_batch_1"])[b"data"][0]
    expect(monkeypatch, "cifar10", mirror.serve("cifar10", {"cifar-10-python.tar.gz": cifar_archive(members)}))
    x = load_arrays("cifar10")[0]["x_train"]
    assert list(x[0, 1, 2]) == [row[34], row[1024 + 34], row[2048 + 34]]
    assert list(x[0, 2, 1]) == [row[65], row[1024 + 65], row[2048 + 65]]


@pytest.mark.parametrize("protocol", ["python2", 2, 4, 5])
def test_cifar_batches_pickled_by_any_python_and_numpy_load(homes, tmp_path, protocol):
    """The real batches are Python 2 pickles naming numpy.core; Python 3 and NumPy 2 write other globals."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for member, content in cifar_batches(protocol).items():
        (folder / member).write_bytes(content)
    np.testing.assert_array_equal(load_arrays("cifar10", tmp_path, allow_download=False)[0]["x_train"],
                                  cifar_images()[0])


def test_load_dataset_cifar10_and_kmnist_end_to_end(mirror, monkeypatch):
    for name in ("cifar10", "kmnist"):
        expect(monkeypatch, name, mirror.serve(name))
    cifar = load_dataset("cifar10")
    assert cifar.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                 "truck"]
    assert cifar.x_train.shape[1:] == cifar.x_test.shape[1:] == (32, 32, 3) and cifar.x_train.dtype == np.float32
    assert len(cifar.x_train) + len(cifar.x_val) == N_TRAIN and len(cifar.x_test) == N_TEST
    np.testing.assert_allclose(cifar.x_test, cifar_images()[1] / 255, atol=1e-6)  # the test split is kept as it is
    kmnist = load_dataset("kmnist")
    assert kmnist.class_names == ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
    assert kmnist.x_train.shape[1:] == (28, 28, 1) and kmnist.x_train.dtype == np.float32


def test_cli_data_kmnist_download(mirror, monkeypatch, tmp_path, capsys):
    from cnnlab.cli import main

    expect(monkeypatch, "kmnist", mirror.serve("kmnist"))
    assert main(["data", "kmnist", "--download"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"kmnist: downloaded to {tmp_path / 'cache' / 'kmnist'} (train 48, validation 12, test 20)"
    assert out[1] == "  images 28x28x1, 10 classes: o, ki, su, tsu, na, ha, ma, ya, re, wo"
    assert len(mirror.requests) == 4


# ---------------------------------------------------------------- failures: one line, nothing left in the cache


def test_wrong_bytes_fail_the_checksum_and_leave_nothing(mirror, monkeypatch, tmp_path):
    content = mirror.serve("kmnist")
    expect(monkeypatch, "kmnist", content)
    last = "/kmnist/t10k-labels-idx1-ubyte.gz"  # the three files before it are good
    mirror.files[last] = gzip.compress(idx_bytes(labels(N_TEST)[::-1].copy()), mtime=0)
    with pytest.raises(DataError) as caught:
        load_arrays("kmnist")
    message = str(caught.value)
    assert "\n" not in message
    assert f"download failed: {mirror.url.rstrip('/')}{last} failed its checksum (SHA-256 " in message
    assert "so it was not kept; try again, or set CNNLAB_MIRROR to another mirror" in message
    assert cache_files(tmp_path) == []  # neither the bad file, nor a temporary, nor the three good ones
    mirror.files[last] = content["t10k-labels-idx1-ubyte.gz"]
    assert load_arrays("kmnist")[1] == f"downloaded to {tmp_path / 'cache' / 'kmnist'}"  # a retry starts clean


@pytest.mark.parametrize("sent", ["headers", "half the file"])
def test_a_stalled_download_times_out(mirror, monkeypatch, tmp_path, sent):
    content = mirror.serve("mnist")
    expect(monkeypatch, "mnist", content)
    mirror.stalls["/mnist.npz"] = 0 if sent == "headers" else len(content["mnist.npz"]) // 2
    monkeypatch.setattr(catalogue, "DOWNLOAD_TIMEOUT_S", 1)
    started = time.monotonic()
    with pytest.raises(DataError) as caught:
        load_arrays("mnist")
    assert time.monotonic() - started < STALL_S / 2  # the timeout ended it, not the server
    assert (f"download failed: cannot download {mirror.url}mnist.npz (nothing received for 1 s); check that the "
            f"mirror CNNLAB_MIRROR names holds it, laid out as cnnlab's cache); pass data_dir=DIR with its files"
            in str(caught.value))
    assert cache_files(tmp_path) == []


def test_a_missing_file_is_a_one_line_error_that_says_what_to_do(mirror, monkeypatch, tmp_path):
    content = mirror.serve("kmnist")
    expect(monkeypatch, "kmnist", content)
    del mirror.files["/kmnist/train-labels-idx1-ubyte.gz"]
    with pytest.raises(DataError) as caught:
        load_arrays("kmnist")
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith(f"download failed: cannot download {mirror.url}kmnist/train-labels-idx1-ubyte.gz (HTTP "
                            f"404 Not Found); check that the mirror CNNLAB_MIRROR names holds it, laid out as cnnlab's "
                            f"cache); pass data_dir=DIR with its files")
    assert cache_files(tmp_path) == []  # train-images came first, and was not kept alone


def test_without_a_mirror_the_advice_is_to_connect(homes, monkeypatch):
    """No CNNLAB_MIRROR: the catalogue's own address, here a port of 127.0.0.1 that nothing listens on."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setitem(catalogue.NAMED, "mnist", dataclasses.replace(catalogue.NAMED["mnist"],
                                                                      url=f"http://127.0.0.1:{port}/datasets/"))
    with pytest.raises(DataError, match=f"cannot download http://127.0.0.1:{port}/datasets/mnist.npz \\(.*refused\\); "
                                        f"connect to the internet and try again, or set CNNLAB_MIRROR to a mirror\\)"):
        load_arrays("mnist")


def test_a_cifar_pickle_that_asks_for_another_global_is_refused(mirror, monkeypatch, tmp_path):
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    archive = cifar_archive(cifar_batches(test_batch=pickle.dumps({b"data": Exploit()}, protocol=2)))
    expect(monkeypatch, "cifar10", mirror.serve("cifar10", {"cifar-10-python.tar.gz": archive}))
    with pytest.raises(DataError, match=r"cifar-10-batches-py/test_batch: not a CIFAR-10 batch \(refusing to load "
                                        r"(os|posix)\.system\); delete it to download it again"):
        load_arrays("cifar10")
    assert not marker.exists()


def test_cifar_batches_that_are_not_cifar_say_so(homes, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for member, content in cifar_batches(protocol=4).items():
        (folder / member).write_bytes(content)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="the CIFAR-10 files lack data_batch_3; delete them to download again"):
        load_arrays("cifar10", data_dir=tmp_path, allow_download=False)
    pixels, not_a_batch = np.zeros((2, 3072), np.uint8), "not a dict of b'data' and b'labels'"
    for batch, problem in [({b"data": pixels, b"labels": [1, 300]}, "data uint8 (2, 3072) and labels int64 (2,)"),
                           ({b"data": pixels, b"labels": 5}, "data uint8 (2, 3072) and labels int64 ()"),
                           ({b"data": pixels[:, :1024], b"labels": [1, 2]}, "data uint8 (2, 1024) and labels"),
                           ({b"labels": [1]}, f"a dict, {not_a_batch}"), ([pixels], f"a list, {not_a_batch}")]:
        (folder / "data_batch_3").write_bytes(pickle.dumps(batch))
        with pytest.raises(DataError) as caught:
            load_arrays("cifar10", data_dir=tmp_path, allow_download=False)
        assert str(caught.value).startswith(f"{folder / 'data_batch_3'}: not a CIFAR-10 batch ({problem}")


# ---------------------------------------------------------------- Keras's own caches: read, nothing downloaded


@pytest.mark.parametrize("layout", ["mnist.npz", "cifar archive", "cifar extracted"])
def test_keras_caches_are_read_without_a_download(mirror, tmp_path, layout):
    """keras.datasets.mnist.load_data() keeps datasets/mnist.npz; cifar10.load_data() (Keras 3) keeps the archive as
    datasets/cifar-10-batches-py-target_archive and extracts it into cifar-10-batches-py-target/."""
    keras = tmp_path / "keras_home" / "datasets"
    keras.mkdir(parents=True)
    if layout == "mnist.npz":
        (keras / "mnist.npz").write_bytes(mnist_npz(7)["mnist.npz"])
    elif layout == "cifar archive":
        (keras / "cifar-10-batches-py-target_archive").write_bytes(cifar_archive(cifar_batches()))
    else:
        with tarfile.open(fileobj=io.BytesIO(cifar_archive(cifar_batches())), mode="r:gz") as tar:
            tar.extractall(keras / "cifar-10-batches-py-target", filter="data")
    name = "mnist" if layout == "mnist.npz" else "cifar10"
    arrays, source = load_arrays(name)
    assert source == f"Keras cache {keras}" and mirror.requests == []
    if name == "mnist":
        assert arrays["x_train"][0, 0, 0] == 7
    else:
        np.testing.assert_array_equal(arrays["x_test"], cifar_images()[1])
