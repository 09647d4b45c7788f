"""IDX files, the format of MNIST and of the datasets made like it (Fashion-MNIST, KMNIST, EMNIST, QMNIST).

    arrays = read_idx_folder("path/to/emnist-letters")    # {"x_train", "y_train", "x_test", "y_test"}, paths

A folder is read when it holds one training and one test pair of images and labels, named as in MNIST's
distribution (train-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte...) or as the others name them
(emnist-letters-train-images-idx3-ubyte, kmnist-test-labels...). Every file is checked (magic number,
dimensions, length) before use, and a header that lies about its size cannot make it read a gzip bomb.
"""

import gzip
import math
import re
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

MAX_IDX_BYTES = 2**31
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_NAMES = {  # role -> file name stem, as in MNIST's (and Fashion-MNIST's, KMNIST's) distribution
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
ROLES = tuple(MNIST_NAMES)


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw), checking magic number, dimensions and length."""
    path = Path(path)
    compressed = False
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
        with (gzip.open if compressed else open)(path, "rb") as f:
            return _parse_idx(f, path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an IDX file") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable {'gzip ' if compressed else ''}IDX file ({e})") from None


def _parse_idx(f, path):
    header = f.read(4)
    if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] not in IDX_TYPES or not 1 <= header[3] <= 4:
        raise DataError(f"{path}: wrong magic number {header.hex() or '(empty file)'}; not an IDX file")
    ndim = header[3]
    dims_bytes = f.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(dims_bytes, dtype=">u4"))
    dtype = np.dtype(IDX_TYPES[header[2]])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: a NumPy product can overflow to a small number
    # With a 0 among them the file holds no data, yet NumPy cannot shape an empty array whose other dims overflow
    if max(expected, math.prod(d for d in dims if d) * dtype.itemsize) > MAX_IDX_BYTES:
        raise DataError(f"{path}: IDX header claims {dims}, too large to be an image dataset")
    data = _read_at_most(f, expected + 1)  # one byte more tells a too-long file, without reading a gzip bomb
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(f"{path}: {problem}: header says {dims} ({expected} bytes of data), file has "
                        f"{'more' if len(data) > expected else len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _read_at_most(f, size, chunk=1 << 24):
    """Read up to `size` bytes, holding no more memory than the file really has (a header can lie)."""
    data = bytearray()
    while len(data) < size:
        block = f.read(min(chunk, size - len(data)))
        if not block:
            break
        data += block
    return bytes(data)


def _role(name):
    """Which of the four files a name is (images or labels of train or test), or None."""
    name = name.lower()
    if "idx" not in name:
        return None
    split = "train" if "train" in name else "test" if re.search(r"test|t10k", name) else None
    kind = "x" if re.search(r"image|imgs|idx3", name) else "y" if re.search(r"label|idx1", name) else None
    return f"{kind}_{split}" if split and kind else None


def find_idx_files(folder) -> dict | None:
    """{role: path} of the folder's four IDX files, or None when it holds no IDX file at all.

    MNIST's own names are taken first (with or without .gz); else any names that say their role.
    Two candidates for one role, or a missing role, is an error that names them."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    exact = {role: next((folder / (stem + suffix) for suffix in (".gz", "") if (folder / (stem + suffix)).is_file()),
                        None) for role, stem in MNIST_NAMES.items()}
    if all(exact.values()):
        return exact
    found = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        role = _role(path.name)
        if role:
            found.setdefault(role, []).append(path)
    if not found:
        return None
    missing = [role for role in ROLES if role not in found]
    if missing:
        raise DataError(f"{folder}: IDX files for {', '.join(missing)} are missing (found "
                        f"{', '.join(p.name for paths in found.values() for p in paths)}); a folder needs train and "
                        f"test images and labels")
    for role, paths in found.items():
        if len(paths) > 1:
            raise DataError(f"{folder}: {len(paths)} files could be the {role} IDX file "
                            f"({', '.join(p.name for p in paths)}); keep one per folder")
    return {role: found[role][0] for role in ROLES}


def read_idx_folder(folder):
    """The four arrays of an IDX folder and their paths, checked to form an image dataset; None when the folder
    holds no IDX file."""
    paths = find_idx_files(folder)
    if paths is None:
        return None
    arrays = {role: read_idx(path) for role, path in paths.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)) or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{paths[f'x_{split}']}: {split} images {x.shape} and labels {y.shape} do not form an "
                            f"image dataset (N images of H x W pixels, N labels)")
        for role in (f"x_{split}", f"y_{split}"):
            if arrays[role].dtype != np.uint8:
                raise DataError(f"{paths[role]}: holds {arrays[role].dtype} values; image dataset IDX files hold "
                                f"unsigned bytes (pixels 0..255, labels 0..255)")
    return arrays, paths
