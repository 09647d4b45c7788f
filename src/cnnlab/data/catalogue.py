"""Named datasets: found on this computer when they are here, else downloaded once, checksum-verified.

| name | images | from |
| --- | --- | --- |
| mnist | 70,000 28x28 grey digits | Keras's mirror (mnist.npz) |
| fashion_mnist | 70,000 28x28 grey clothes | Keras's mirror (IDX), Debian's dataset-fashion-mnist |
| kmnist | 70,000 28x28 grey cursive Japanese (Kuzushiji) characters | ROIS-CODH (IDX) |
| cifar10 | 60,000 32x32 colour photos | the Toronto archive Keras's cifar10.load_data() reads |
| digits | 1,797 8x8 grey digits drawn into 28x28 | scikit-learn, bundled: always offline |

Each is looked for in: --data-dir, $CNNLAB_DATA_DIR, Keras's cache (~/.keras/datasets, so that what
keras.datasets downloaded is reused), Debian's folder, cnnlab's cache ($CNNLAB_CACHE_DIR, default Keras's).
A dataset's files are all verified (SHA-256) before any takes its place: a failed, corrupt or killed download
leaves nothing that a later search could mistake for data, or for a broken copy. A download that receives nothing
for DOWNLOAD_TIMEOUT_S (30) seconds fails. $CNNLAB_MIRROR serves every file from another address, laid out as
cnnlab's cache is (MIRROR/mnist.npz, MIRROR/kmnist/t10k-labels-idx1-ubyte.gz...: Fashion-MNIST and KMNIST name
their files alike), so that a copy of a cache can be served; the tests serve real-format files from 127.0.0.1.

EMNIST is not in the list: its only distribution is one 536 MB archive of all six splits. Download it once and
pass its letters IDX files as a folder: `--dataset path/to/emnist-letters --class-names a,b,...`.
"""

import contextlib
import hashlib
import http.client
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import files
from ..errors import DataError
from .dataset import DIGIT_STYLE, PHOTO_STYLE
from .idx import read_idx_folder

KERAS_MIRROR = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class Named:
    """One named dataset: its classes, the files it is downloaded as (name -> SHA-256) and how they are read."""

    class_names: tuple
    reader: str  # "idx", "mnist_npz", "cifar" or "digits"
    style: str = DIGIT_STYLE
    url: str = KERAS_MIRROR
    downloads: dict = field(default_factory=dict)
    keras_subdir: str = ""  # where keras.datasets.*.load_data() caches it, inside Keras's cache
    debian_dir: str | None = None
    image_shape: tuple = (28, 28, 1)


NAMED = {
    "mnist": Named(tuple(str(d) for d in range(10)), "mnist_npz", downloads={
        "mnist.npz": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"}),
    "fashion_mnist": Named(
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        "idx", keras_subdir="fashion-mnist", debian_dir="/usr/share/datasets/fashion-mnist", downloads={
            "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        }),
    # Kuzushiji-MNIST's ten hiragana, romanised (matplotlib's default font has no kana): お き す つ な は ま や れ を
    "kmnist": Named(("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), "idx", keras_subdir="kmnist",
                    url="http://codh.rois.ac.jp/kmnist/dataset/kmnist/", downloads={
                        "train-images-idx3-ubyte.gz": "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
                        "train-labels-idx1-ubyte.gz": "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
                        "t10k-images-idx3-ubyte.gz": "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
                        "t10k-labels-idx1-ubyte.gz": "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
                    }),
    "cifar10": Named(("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
                     "cifar", PHOTO_STYLE, url="https://www.cs.toronto.edu/~kriz/", image_shape=(32, 32, 3),
                     downloads={"cifar-10-python.tar.gz":
                                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"}),
    "digits": Named(tuple(str(d) for d in range(10)), "digits"),
}
CLASS_NAMES = {name: list(entry.class_names) for name, entry in NAMED.items()}
CIFAR_ARCHIVES = ("cifar-10-python.tar.gz", "cifar-10-batches-py-target_archive")  # ours, keras.datasets'
CIFAR_BATCHES = {"x_train": [f"data_batch_{i}" for i in range(1, 6)], "x_test": ["test_batch"]}

# The 10,000 test labels are the same in every copy of each dataset, and differ between the two: they tell
# MNIST from Fashion-MNIST in a folder whose file names are the same for both, gzipped or not.
TEST_LABELS_SHA256 = {
    "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5": "mnist",
    "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9": "fashion_mnist",
}


class WrongDataset(DataError):
    """The folder holds the other dataset (same file names, different test labels)."""

    def __init__(self, folder, holds, wanted):
        self.holds = holds
        super().__init__(f"{folder} holds {holds}, not {wanted}; point data_dir= at the {wanted} files")


def identify(test_labels) -> str | None:
    """mnist or fashion_mnist, told by their test labels; None for any other dataset."""
    return TEST_LABELS_SHA256.get(hashlib.sha256(np.asarray(test_labels, np.uint8).tobytes()).hexdigest())


# ---------------------------------------------------------------- reading the files of one folder


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_idx(folder, name):
    found = read_idx_folder(folder)
    if found is None:
        return None
    arrays, _ = found
    holds = identify(arrays["y_test"])
    if holds and holds != name:
        raise WrongDataset(folder, holds, name)
    return arrays


def _read_mnist_npz(folder, name):
    path = folder / "mnist.npz"
    if not path.is_file():
        return _read_idx(folder, name)  # a folder of MNIST's own IDX files (as ../shared/datasets/mnist)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {role: f[role] for role in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: not a usable mnist.npz ({e}); delete it to download it again") from None


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickled dicts of NumPy arrays: only what rebuilds arrays and byte strings may run (a file
    that asks for anything else is refused, as Keras's own loader does). NumPy 1 and 2 name their modules apart;
    protocol 5 rebuilds arrays with _frombuffer, and Python 3's protocol 2 writes bytes through _codecs.encode."""

    ALLOWED = {(f"numpy.{core}.{module}", function) for core in ("core", "_core")
               for module, function in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                                        ("numeric", "_frombuffer"))} | {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar_batch(f, where):
    """(images, labels) of one batch: {b"data": uint8 (N, 3072), each row the 32x32 red, then green, then blue
    values, b"labels": N labels 0..9}, pickled by Python 2."""
    try:
        batch = _ArrayUnpickler(f, encoding="bytes").load()
        if not isinstance(batch, dict) or not {b"data", b"labels"} <= batch.keys():
            raise ValueError(f"a {type(batch).__name__}, not a dict of b'data' and b'labels'")
        pixels, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
        if pixels.dtype != np.uint8 or pixels.shape[1:] != (3072,) or labels.shape != (len(pixels),) or \
                labels.dtype.kind not in "iu" or not np.isin(labels, range(10)).all():
            raise ValueError(f"data {pixels.dtype} {pixels.shape} and labels {labels.dtype} {labels.shape} are not "
                             f"N rows of 3,072 bytes and N labels 0..9")
    except Exception as e:  # a corrupt pickle can raise nearly any exception (the pickle module's docs say so)
        raise DataError(f"{where}: not a CIFAR-10 batch ({e}); delete it to download it again") from None
    return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.uint8)  # stored channels-first


def _read_cifar(folder, name):
    """From the archive (ours or keras.datasets') or from its extracted cifar-10-batches-py folder."""
    members = {}
    for archive in (folder / a for a in CIFAR_ARCHIVES):
        if archive.is_file():
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    for member in tar.getmembers():
                        if member.isfile() and member.name.rsplit("/", 1)[-1] in sum(CIFAR_BATCHES.values(), []):
                            members[member.name.rsplit("/", 1)[-1]] = _cifar_batch(
                                io.BytesIO(tar.extractfile(member).read()), f"{archive}:{member.name}")
            except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                raise DataError(f"{archive}: not a readable CIFAR-10 archive ({e}); delete it to download it "
                                f"again") from None
            break
    else:
        for batches in (folder / "cifar-10-batches-py", folder / "cifar-10-batches-py-target" / "cifar-10-batches-py"):
            if (batches / "test_batch").is_file():
                for member in sum(CIFAR_BATCHES.values(), []):
                    if (batches / member).is_file():
                        with open(batches / member, "rb") as f:
                            members[member] = _cifar_batch(f, batches / member)
                break
    if not members:
        return None
    missing = [m for m in sum(CIFAR_BATCHES.values(), []) if m not in members]
    if missing:
        raise DataError(f"{folder}: the CIFAR-10 files lack {', '.join(missing)}; delete them to download again")
    arrays = {}
    for role, names in CIFAR_BATCHES.items():
        arrays[role] = np.concatenate([members[n][0] for n in names])
        arrays["y" + role[1:]] = np.concatenate([members[n][1] for n in names])
    return arrays


def _digits_arrays():
    """scikit-learn's 1,797 bundled 8x8 digits, drawn into 28x28 the way MNIST was: a 20x20 box, centred."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    small = (digits.images * (255 / 16)).astype(np.uint8)
    images = np.zeros((len(small), 28, 28), np.uint8)
    for i, img in enumerate(small):
        images[i, 4:24, 4:24] = np.asarray(Image.fromarray(img).resize((20, 20), Image.BILINEAR))
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.uint8), test_size=0.2, random_state=0, stratify=digits.target)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


READERS = {"idx": _read_idx, "mnist_npz": _read_mnist_npz, "cifar": _read_cifar}


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
    entry = NAMED[name]
    places = []
    for label, folder in (("data_dir", data_dir), ("CNNLAB_DATA_DIR", os.environ.get("CNNLAB_DATA_DIR"))):
        if folder:
            for sub in (Path(folder) / name, Path(folder) / entry.keras_subdir, Path(folder)):
                places.append((f"{label} {sub}", _folder_loader(sub, name)))
    for label, cache in (("Keras cache", keras_cache_dir()), ("cnnlab cache", cnnlab_cache_dir())):
        folder = cache / entry.keras_subdir
        places.append((f"{label} {folder}", _folder_loader(folder, name)))
        if label == "Keras cache" and entry.debian_dir:
            places.append((f"Debian {entry.debian_dir}", _folder_loader(Path(entry.debian_dir), name)))
    seen, unique = set(), []
    for label, loader in places:
        key = label.split(" ", 1)[1]
        if key not in seen:
            seen.add(key)
            unique.append((label, loader))
    return unique


def _folder_loader(folder, name):
    def load():
        return READERS[NAMED[name].reader](folder, name) if folder.is_dir() else None

    return load


def download(name):
    """Fetch `name`'s missing files into the cache. Each is SHA-256-verified, and none takes its place before all
    are: a half-downloaded dataset would stop every later search with its missing files."""
    entry = NAMED[name]
    mirror = os.environ.get("CNNLAB_MIRROR")
    base = (f"{mirror.rstrip('/')}/{entry.keras_subdir}" if mirror else entry.url).rstrip("/") + "/"
    fix = ("check that the mirror CNNLAB_MIRROR names holds it, laid out as cnnlab's cache" if mirror else
           "connect to the internet and try again, or set CNNLAB_MIRROR to a mirror")
    target = cnnlab_cache_dir() / entry.keras_subdir
    with contextlib.ExitStack() as verified:  # at its end every file is renamed into place; after an error, none
        for fname, sha256 in entry.downloads.items():
            if not ((target / fname).is_file() and _sha256(target / fname) == sha256):
                _fetch(base + fname, verified.enter_context(files.atomic_path(target / fname)), sha256, fix)
    return target


def _fetch(url, path, sha256, fix):
    """Stream `url` into `path`; a one-line DataError, ending in `fix`, when it fails or fails its checksum."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(path, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except (OSError, http.client.HTTPException, ValueError) as e:  # HTTP errors, timeouts, a cut body, a bad URL
        reason = getattr(e, "reason", e)  # URLError wraps the socket's error
        detail = (f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError) else
                  f"nothing received for {DOWNLOAD_TIMEOUT_S} s" if isinstance(reason, TimeoutError) else
                  str(reason) or type(reason).__name__)
        raise DataError(f"cannot download {url} ({detail}); {fix}") from None
    if digest.hexdigest() != sha256:
        raise DataError(f"{url} failed its checksum (SHA-256 {digest.hexdigest()[:16]}..., expected "
                        f"{sha256[:16]}...), so it was not kept; try again, or set CNNLAB_MIRROR to another mirror")


def load_arrays(name, data_dir=None, allow_download=True):
    """Raw train and test arrays of the named dataset `name` (uint8, (N, H, W) or (N, H, W, 3)) and where they
    came from."""
    if name == "digits":
        return _digits_arrays(), "scikit-learn load_digits (8x8, upscaled to 28x28)"
    looked = []
    for label, loader in candidate_places(name, data_dir):
        explicit = label.startswith("data_dir ")
        try:
            arrays = loader()
        except WrongDataset as e:
            if explicit:
                raise
            arrays, label = None, f"{label} (holds {e.holds})"
        if arrays is not None:
            return arrays, label
        looked.append(label)
        if explicit and label == f"data_dir {Path(data_dir)}":  # a folder the user named must hold the data
            what = "CIFAR-10 files (cifar-10-python.tar.gz or cifar-10-batches-py/)" if NAMED[name].reader == "cifar" \
                else "IDX files (train-images-idx3-ubyte[.gz] and the three others)"
            raise DataError(f"no {name} {what} in data_dir={str(data_dir)!r}")
    reason, fix = "downloads disabled", "pass data_dir=DIR with its files, or add allow_download=True"
    if allow_download:
        try:
            folder = download(name)
            arrays = _folder_loader(folder, name)()
            if arrays is None:
                raise DataError(f"{folder} holds no {name} files after the download")
            return arrays, f"downloaded to {folder}"
        except Exception as e:  # download's own errors say what to do; others (a full disk...) are told as they come
            reason = f"download failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            fix = "pass data_dir=DIR with its files"
    if NAMED[name].debian_dir:
        fix += f", or install Debian's dataset-{name.replace('_', '-')}"
    raise DataError(f"dataset {name} not found (looked in {'; '.join(looked)}; {reason}); {fix}")
