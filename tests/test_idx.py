"""The IDX reader and where datasets are found: good files load, bad ones raise DataError (never anything
else, for any bytes at all), the search order is as documented, and downloads are checksum-verified."""

import dataclasses
import gzip
import os
import re
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from robustness_helpers import FASHION_DIR, MNIST_DIR, idx_bytes, write_idx_dataset

from cnnlab.data import DataError, WrongDataset, load_arrays, load_dataset, read_idx
from cnnlab.data.catalogue import NAMED

# ---------------------------------------------------------------- any bytes: an array or DataError


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("idx") / "file"


def loads_or_data_error(path, content):
    path.write_bytes(content)
    try:
        array = read_idx(path)
    except DataError:
        return None
    assert isinstance(array, np.ndarray)
    return array


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(content=st.binary(max_size=4096))
def test_any_bytes_load_or_raise_data_error(scratch, content):
    loads_or_data_error(scratch, content)


@FUZZ
@given(content=st.binary(max_size=4096))
def test_any_gzipped_bytes_load_or_raise_data_error(scratch, content):
    loads_or_data_error(scratch, gzip.compress(content))


@st.composite
def idx_like(draw):
    """Bytes that get past the magic number: a plausible header with arbitrary dims, then arbitrary data."""
    ndim = draw(st.integers(0, 5))
    type_code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A, 0xFF]))
    dim = st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1), st.sampled_from([2**8, 2**16, 2**31, 2**32 - 1]))
    dims = draw(st.lists(dim, min_size=ndim, max_size=ndim))  # powers of two: products that overflow 64 bits
    header = bytes([0, 0, type_code, ndim]) + np.asarray(dims, ">u4").tobytes()
    if draw(st.booleans()):
        return header[: draw(st.integers(0, len(header)))]
    return header + draw(st.binary(max_size=2048))


@FUZZ
@given(content=idx_like(), compress=st.booleans())
def test_idx_like_bytes_load_or_raise_data_error(scratch, content, compress):
    array = loads_or_data_error(scratch, gzip.compress(content) if compress else content)
    if array is not None:  # what loads is exactly what the header says
        assert array.shape == tuple(int(d) for d in np.frombuffer(content[4:4 + 4 * content[3]], ">u4"))


# ---------------------------------------------------------------- good and bad files, by name


@pytest.mark.parametrize("array", [
    np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28),
    np.arange(10, dtype=np.uint8),
    np.array([-128, 0, 127], np.int8),
    np.array([[-300, 2], [3, 30000]], np.int16),
    np.array([-(2**31), 2**31 - 1], np.int32),
    np.array([0.5, -1e30, np.inf], np.float32),
    np.array([[1e-300], [2.5]], np.float64),
    np.zeros((0, 28, 28), np.uint8),
])
@pytest.mark.parametrize("compress", [False, True])
def test_good_idx_files_round_trip(tmp_path, array, compress):
    content = idx_bytes(array)
    path = tmp_path / "x-idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    loaded = read_idx(path)
    assert loaded.shape == array.shape and loaded.dtype.kind == array.dtype.kind
    np.testing.assert_array_equal(loaded, array)


GOOD = idx_bytes(np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28))


@pytest.mark.parametrize("content, message", [
    (b"", "wrong magic number (empty file); not an IDX file"),
    (b"\x01\x00" + GOOD[2:], "wrong magic number 01000803; not an IDX file"),
    (b"\x00\x00\x0a\x03" + GOOD[4:], "wrong magic number 00000a03; not an IDX file"),
    (b"\x00\x00\x08\x00" + GOOD[4:], "wrong magic number 00000800; not an IDX file"),
    (b"\x89PNG\r\n\x1a\n", "wrong magic number 89504e47; not an IDX file"),
    (GOOD[:10], "truncated IDX header"),
    (GOOD[:-1], "truncated: header says (4, 28, 28) (3136 bytes of data), file has 3135"),
    (GOOD + b"\x00", "longer than its header says: header says (4, 28, 28) (3136 bytes of data), file has more"),
    (b"\x00\x00\x08\x04" + np.asarray([65536] * 4, ">u4").tobytes(),  # 2**64 bytes: NumPy's int64 product wraps to 0
     "IDX header claims (65536, 65536, 65536, 65536), too large to be an image dataset"),
    (b"\x00\x00\x0e\x01" + np.asarray([2**30], ">u4").tobytes(),
     "IDX header claims (1073741824,), too large to be an image dataset"),
    (b"\x00\x00\x08\x03" + np.asarray([0, 2**32 - 1, 2**32 - 1], ">u4").tobytes(),  # no data, yet NumPy can't shape it
     "IDX header claims (0, 4294967295, 4294967295), too large to be an image dataset"),
])
@pytest.mark.parametrize("compress", [False, True])
def test_bad_idx_files_say_what_is_wrong(tmp_path, content, message, compress):
    path = tmp_path / "bad-idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(DataError) as caught:
        read_idx(path)
    assert str(caught.value) == f"{path}: {message}"


def test_broken_gzip_and_missing_files(tmp_path):
    whole = gzip.compress(GOOD)
    for name, content in [("truncated.gz", whole[: len(whole) // 2]), ("crc.gz", whole[:-8] + bytes(8)),
                          ("garbage.gz", b"\x1f\x8b" + bytes(30))]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=f"^{tmp_path / name}: not a readable gzip IDX file "):
            read_idx(tmp_path / name)
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "missing")
    with pytest.raises(DataError, match="is a folder, not an IDX file"):
        read_idx(tmp_path)


def test_real_mnist_test_labels(mnist_dir):
    labels = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and labels.dtype == np.uint8 and set(np.unique(labels)) == set(range(10))


# ---------------------------------------------------------------- where datasets are found


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty Keras home, cnnlab cache and data folder, no Debian package, no network."""
    places = {name: tmp_path / name for name in ("keras_home", "cnnlab_cache", "data_env", "data_flag", "debian")}
    monkeypatch.setenv("KERAS_HOME", str(places["keras_home"]))
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(places["cnnlab_cache"]))
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(places["data_env"]))
    monkeypatch.setenv("CNNLAB_MIRROR", (tmp_path / "no-mirror").as_uri())
    debian = dataclasses.replace(NAMED["fashion_mnist"], debian_dir=str(places["debian"]))
    monkeypatch.setitem(NAMED, "fashion_mnist", debian)
    return places


PLACES = {  # where each place keeps fashion_mnist, and the mark its pixel [0, 0, 0] carries
    "data_flag": ("data_flag/fashion_mnist", 1),
    "data_env": ("data_env/fashion-mnist", 2),
    "keras_home": ("keras_home/datasets/fashion-mnist", 3),
    "debian": ("debian", 4),
    "cnnlab_cache": ("cnnlab_cache/fashion-mnist", 5),
}


@pytest.mark.parametrize("first", list(PLACES))
def test_search_order(homes, tmp_path, first):
    """--data-dir, then $CNNLAB_DATA_DIR, then Keras's cache, then Debian's package, then cnnlab's cache."""
    order = list(PLACES)
    for place in order[order.index(first):]:
        write_idx_dataset(tmp_path / PLACES[place][0], mark=PLACES[place][1])
    data_dir = homes["data_flag"] if first == "data_flag" else None  # a --data-dir must hold the data
    arrays, source = load_arrays("fashion_mnist", data_dir=data_dir, allow_download=False)
    assert arrays["x_train"][0, 0, 0] == PLACES[first][1]
    assert str(tmp_path / PLACES[first][0]) in source


def test_data_dir_may_hold_the_files_directly_or_in_a_keras_style_subfolder(homes, tmp_path):
    write_idx_dataset(tmp_path / "plain", mark=7, compress=False)
    assert load_arrays("mnist", data_dir=tmp_path / "plain", allow_download=False)[0]["x_test"][0, 0, 0] == 7
    write_idx_dataset(tmp_path / "keras_style" / "fashion-mnist", mark=8)
    arrays, _ = load_arrays("fashion_mnist", data_dir=tmp_path / "keras_style", allow_download=False)
    assert arrays["x_test"][0, 0, 0] == 8


@pytest.mark.parametrize("stem,array,message", [
    ("train-labels-idx1-ubyte", np.arange(40, dtype=np.uint8) % 13,
     "data_dir {folder} (train labels): has label 12, but there are 10 classes (0..9)"),
    ("t10k-images-idx3-ubyte", np.zeros((20, 28, 28), np.float32),
     "{folder}/t10k-images-idx3-ubyte.gz: holds float32 values; image dataset IDX files hold unsigned bytes"),
])
def test_labels_and_pixels_of_another_kind_are_refused(homes, tmp_path, stem, array, message):
    folder = write_idx_dataset(tmp_path / "data")
    (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(array)))
    with pytest.raises(DataError, match=re.escape(message.format(folder=folder))):
        load_dataset("mnist", data_dir=folder, allow_download=False)


def test_nothing_found_lists_every_place_looked(homes):
    with pytest.raises(DataError) as caught:
        load_arrays("fashion_mnist", allow_download=False)
    message = str(caught.value)
    for place in ("data_env", "keras_home", "debian", "cnnlab_cache"):
        assert str(homes[place]) in message
    assert message.endswith("downloads disabled); pass data_dir=DIR with its files, or add allow_download=True, "
                            "or install Debian's dataset-fashion-mnist")


def test_explicit_data_dir_without_the_files_is_an_error(homes, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no mnist IDX files .* in data_dir="):
        load_arrays("mnist", data_dir=tmp_path / "empty")


def test_the_other_dataset_is_told_apart_by_its_test_labels(homes, tmp_path, mnist_dir, fashion_dir):
    """Same file names, different datasets: a named folder with the wrong one is an error, a cache is skipped."""
    wrong = tmp_path / "keras_home" / "datasets" / "fashion-mnist"
    wrong.mkdir(parents=True)
    for f in MNIST_DIR.glob("*.gz"):
        os.symlink(f, wrong / f.name)
    with pytest.raises(WrongDataset, match="holds mnist, not fashion_mnist"):
        load_arrays("fashion_mnist", data_dir=wrong, allow_download=False)
    unzipped = tmp_path / "unzipped"
    unzipped.mkdir()
    for f in FASHION_DIR.glob("*.gz"):
        (unzipped / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
    with pytest.raises(WrongDataset, match="holds fashion_mnist, not mnist"):
        load_arrays("mnist", data_dir=unzipped, allow_download=False)
    write_idx_dataset(tmp_path / "cnnlab_cache" / "fashion-mnist", mark=9)
    arrays, source = load_arrays("fashion_mnist", allow_download=False)
    assert arrays["x_train"][0, 0, 0] == 9 and "cnnlab cache" in source


# ---------------------------------------------------------------- checksum-verified download, from a file:// mirror


@pytest.fixture
def mirror(tmp_path, monkeypatch, fashion_dir):
    folder = tmp_path / "mirror" / "fashion-mnist"  # a mirror is laid out as the cache
    folder.mkdir(parents=True)
    for name in NAMED["fashion_mnist"].downloads:
        os.symlink(fashion_dir / name, folder / name)
    monkeypatch.setenv("CNNLAB_MIRROR", folder.parent.as_uri())
    return folder


def test_download_verifies_and_caches(homes, mirror):
    arrays, source = load_arrays("fashion_mnist")
    cache = homes["cnnlab_cache"] / "fashion-mnist"
    assert source == f"downloaded to {cache}"
    assert arrays["x_train"].shape == (60000, 28, 28) and arrays["y_test"].shape == (10000,)
    assert sorted(p.name for p in cache.iterdir()) == sorted(NAMED["fashion_mnist"].downloads)
    shutil.rmtree(mirror)  # found in the cache from now on: no download
    assert load_arrays("fashion_mnist")[1] == f"cnnlab cache {cache}"


def test_corrupt_download_fails_its_checksum_and_leaves_nothing(homes, mirror):
    labels = mirror / "t10k-labels-idx1-ubyte.gz"
    corrupt = bytearray(labels.read_bytes())
    corrupt[100] ^= 0xFF
    labels.unlink()
    labels.write_bytes(bytes(corrupt))
    with pytest.raises(DataError) as caught:
        load_arrays("fashion_mnist")
    assert (f"download failed: {labels.as_uri()} failed its checksum (SHA-256 "
            in str(caught.value))
    assert "so it was not kept; try again, or set CNNLAB_MIRROR to another mirror" in str(caught.value)
    cache = homes["cnnlab_cache"] / "fashion-mnist"
    assert not (cache / labels.name).exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary left behind
    assert not list(cache.iterdir())  # nor the three good files: a half dataset would stop the next search
