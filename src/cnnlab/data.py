"""Datasets as the seed uses them: 28x28 grey images scaled to [0, 1], shape (N, 28, 28, 1), integer labels.

MNIST and Fashion-MNIST come from local files when they exist (a folder you name, Keras's cache,
Debian's `dataset-fashion-mnist`) and are downloaded, checksum-verified, into Keras's cache otherwise
(or the folder CNNLAB_CACHE_DIR names).
`digits` is scikit-learn's bundled 8x8 digits set, upscaled: always available offline, small and fast.
"""

import gzip
import hashlib
import math
import os
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import files
from .config import IMAGE_SIZE
from .errors import DataError

CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "digits": [str(d) for d in range(10)],
    "fashion_mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
}

IDX_FILES = {  # role -> file name stem, as in the original distributions (same for both datasets)
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# The 10,000 test labels are the same in every copy of each dataset, and differ between the two: they tell
# MNIST from Fashion-MNIST in a folder whose file names are the same for both, gzipped or not.
TEST_LABELS_SHA256 = {
    "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5": "mnist",
    "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9": "fashion_mnist",
}

KERAS_MIRROR = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
DOWNLOADS = {  # file name -> SHA-256, the files Keras's own load_data() fetches
    "mnist": {"mnist.npz": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"},
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
}
KERAS_SUBDIR = {"mnist": "", "fashion_mnist": "fashion-mnist"}  # where keras.datasets.*.load_data() caches
DEBIAN_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
DOWNLOAD_TIMEOUT_S = 30

class WrongDataset(DataError):
    """The folder holds the other dataset (same file names, different test labels)."""

    def __init__(self, folder, holds, wanted):
        self.holds = holds
        super().__init__(f"{folder} holds {holds}, not {wanted}; point --data-dir at the {wanted} files")


MAX_IDX_BYTES = 2**31
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Dataset:
    """Train/validation/test arrays of one dataset, ready for `model.fit`."""

    name: str
    class_names: list
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def sizes(self):
        return {"train": len(self.x_train), "validation": len(self.x_val), "test": len(self.x_test)}


# ---------------------------------------------------------------- IDX files


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
        raise DataError(f"{path}: {problem}: header says {dims} ({expected} bytes of data), file has {'more' if len(data) > expected else len(data)}")
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


def _find_idx(folder, role):
    for suffix in (".gz", ""):
        candidate = Path(folder) / (IDX_FILES[role] + suffix)
        if candidate.is_file():
            return candidate
    return None


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _load_idx_folder(folder, name):
    """Load the four IDX files from `folder`, or return None when they are not all there."""
    paths = {role: _find_idx(folder, role) for role in IDX_FILES}
    if not all(paths.values()):
        return None
    arrays = {role: read_idx(p) for role, p in paths.items()}
    identified = TEST_LABELS_SHA256.get(hashlib.sha256(arrays["y_test"].tobytes()).hexdigest())
    if identified and identified != name:
        raise WrongDataset(folder, identified, name)
    return _checked(arrays, paths, name)


def _checked(arrays, paths, name):
    """The arrays, once they are known to form a 28x28 uint8 dataset with labels of `name`'s classes: anything
    else would be silently mis-scaled, or fail deep inside training."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{paths[f'x_{split}']}: {split} images {x.shape} and labels {y.shape} do not form a 28x28 "
                            f"dataset")
        for role, values in ((f"x_{split}", x), (f"y_{split}", y)):
            if values.dtype != np.uint8:
                raise DataError(f"{paths[role]}: holds {values.dtype} values; MNIST-style files hold unsigned bytes "
                                f"(pixels 0..255, labels 0..9)")
        classes = len(CLASS_NAMES[name])
        if len(y) and y.max() >= classes:
            raise DataError(f"{paths[f'y_{split}']}: has label {y.max()}, but {name} has {classes} classes "
                            f"(0..{classes - 1})")
    return arrays


def _load_npz(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {role: f[role] for role in IDX_FILES}
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: not a usable mnist.npz ({e}); delete it to download it again") from None
    return _checked(arrays, dict.fromkeys(IDX_FILES, path), "mnist")


# ---------------------------------------------------------------- where the data is


def keras_cache_dir() -> Path:
    """Keras's dataset cache: $KERAS_HOME/datasets, else ~/.keras/datasets (as keras.utils.get_file)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


def cnnlab_cache_dir() -> Path:
    """Where cnnlab downloads to: $CNNLAB_CACHE_DIR, else Keras's own cache (shared with keras.datasets)."""
    return Path(os.environ["CNNLAB_CACHE_DIR"]) if os.environ.get("CNNLAB_CACHE_DIR") else keras_cache_dir()


def candidate_places(name, data_dir=None):
    """The places looked at, in order, as (label, loader) pairs; a loader returns arrays or None."""
    places = []
    env_dir = os.environ.get("CNNLAB_DATA_DIR")
    for label, folder in (("--data-dir", data_dir), ("CNNLAB_DATA_DIR", env_dir)):
        if folder:
            for sub in (Path(folder) / name, Path(folder) / KERAS_SUBDIR[name], Path(folder)):
                places.append((f"{label} {sub}", _folder_loader(sub, name)))
    for label, cache in (("Keras cache", keras_cache_dir()), ("cnnlab cache", cnnlab_cache_dir())):
        folder = cache / KERAS_SUBDIR[name]
        places.append((f"{label} {folder}", _folder_loader(folder, name)))
        if label == "Keras cache" and name in DEBIAN_DIRS:
            places.append((f"Debian {DEBIAN_DIRS[name]}", _folder_loader(Path(DEBIAN_DIRS[name]), name)))
    seen, unique = set(), []
    for label, loader in places:
        key = label.split(" ", 1)[1]
        if key not in seen:
            seen.add(key)
            unique.append((label, loader))
    return unique


def _folder_loader(folder, name):
    def load():
        if name == "mnist" and (folder / "mnist.npz").is_file():
            return _load_npz(folder / "mnist.npz")
        return _load_idx_folder(folder, name) if folder.is_dir() else None

    return load


def download(name):
    """Fetch `name` from the mirror Keras uses into the cache, each file SHA-256-verified before it takes its
    place: a failed, corrupt or killed download leaves nothing that a later search could mistake for data."""
    mirror = os.environ.get("CNNLAB_MIRROR") or KERAS_MIRROR
    target = cnnlab_cache_dir() / KERAS_SUBDIR[name]
    for fname, sha256 in DOWNLOADS[name].items():
        if (target / fname).is_file() and _sha256(target / fname) == sha256:
            continue
        url = mirror.rstrip("/") + "/" + fname
        digest = hashlib.sha256()
        with files.atomic_path(target / fname) as tmp:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != sha256:
                raise DataError(f"{url} failed its checksum (SHA-256 {digest.hexdigest()[:16]}..., expected "
                                f"{sha256[:16]}...), so it was not kept; try again, "
                                f"or set CNNLAB_MIRROR to another mirror")
    return target


def load_arrays(name, data_dir=None, allow_download=True):
    """Raw uint8 train and test arrays of `name` and where they came from."""
    looked = []
    for label, loader in candidate_places(name, data_dir):
        explicit = label.startswith("--data-dir")
        try:
            arrays = loader()
        except WrongDataset as e:
            if explicit:
                raise
            arrays, label = None, f"{label} (holds {e.holds})"
        if arrays is not None:
            return arrays, label
        looked.append(label)
        if explicit and label == f"--data-dir {Path(data_dir)}":  # a folder the user named must hold the data
            raise DataError(f"no {name} IDX files (train-images-idx3-ubyte[.gz] and the three others) in --data-dir {data_dir}")
    reason = "downloads disabled"
    if allow_download:
        try:
            folder = download(name)
            arrays = _folder_loader(folder, name)()
            if arrays is not None:
                return arrays, f"downloaded to {folder}"
        except Exception as e:  # network errors come in many types; all end in the same advice
            reason = f"download failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    fix = f"pass --data-dir DIR with the four IDX files, or {'connect to the internet' if allow_download else 'add --download'}"
    if name == "fashion_mnist":
        fix += ", or install Debian's dataset-fashion-mnist"
    raise DataError(f"dataset {name} not found (looked in {'; '.join(looked)}; {reason}); {fix}")


def _digits_arrays():
    """scikit-learn's 1,797 bundled 8x8 digits, drawn into 28x28 the way MNIST was: a 20x20 box, centred."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    small = (digits.images * (255 / 16)).astype(np.uint8)
    images = np.zeros((len(small), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for i, img in enumerate(small):
        images[i, 4:24, 4:24] = np.asarray(Image.fromarray(img).resize((20, 20), Image.BILINEAR))
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.uint8), test_size=0.2, random_state=0, stratify=digits.target)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


# ---------------------------------------------------------------- the Dataset


def scale(images) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1], as the seed's reshape(-1, 28, 28, 1) / 255."""
    return (np.asarray(images, np.float32) / 255.0).reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1)


def load_dataset(name="mnist", data_dir=None, validation_split=0.2, seed=42, limit_train=None, allow_download=True) -> Dataset:
    """Load a dataset and split its training set into train/validation, stratified, with `seed`."""
    from sklearn.model_selection import train_test_split

    if name not in CLASS_NAMES:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(CLASS_NAMES)}")
    if name == "digits":
        arrays, source = _digits_arrays(), "scikit-learn load_digits (8x8, upscaled to 28x28)"
    else:
        arrays, source = load_arrays(name, data_dir, allow_download)
    x, y = arrays["x_train"], arrays["y_train"].astype(np.int64)
    if limit_train and limit_train < len(x):
        x, _, y, _ = train_test_split(x, y, train_size=limit_train, random_state=seed, stratify=y)
    classes, validation = len(CLASS_NAMES[name]), math.ceil(len(x) * validation_split)  # as train_test_split counts
    if min(validation, len(x) - validation) < classes:
        raise DataError(f"a validation split of {validation_split} leaves {validation:,} of {len(x):,} training images "
                        f"for validation and {len(x) - validation:,} for training; each side needs at least one image "
                        f"per class ({classes}): change --validation-split or --limit-train")
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=validation_split, random_state=seed, stratify=y)
    return Dataset(
        name=name, class_names=CLASS_NAMES[name],
        x_train=scale(x_train), y_train=y_train, x_val=scale(x_val), y_val=y_val,
        x_test=scale(arrays["x_test"]), y_test=arrays["y_test"].astype(np.int64), source=source,
    )
