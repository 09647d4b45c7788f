"""What every source turns into: a `Dataset` of train, validation and test images with integer labels.

Images are (N, H, W, C) float32 in [0, 1], C = 1 (grey) or 3 (colour), the shape the source's data has (or
the --image-size and --color-mode asked for). A dataset that fits in memory (`IN_MEMORY_BYTES`) holds NumPy
arrays; a larger one holds `ScaledImages`: rows of a decoded uint8 cache on disk, scaled batch by batch, so
that 100,000 photos are never one float array.
"""

import hashlib
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

# Decoded float32 images above this size are streamed from the uint8 cache: 2 GiB keeps the in-memory path for
# every named dataset (CIFAR-10: 0.7 GB) and leaves room on an 8 GB laptop for the model and a second copy that
# fancy indexing makes of a batch. CNNLAB_IN_MEMORY_MB changes it (the tests stream small folders with it).
IN_MEMORY_BYTES = 2 * 1024**3
DIGIT_STYLE = "digits"  # white ink on black, centred: predict makes photos MNIST-like for such models
PHOTO_STYLE = "photos"  # anything else: predict feeds the image as it is, resized


def in_memory_bytes() -> int:
    limit = os.environ.get("CNNLAB_IN_MEMORY_MB")
    try:
        return int(float(limit) * 1024**2) if limit else IN_MEMORY_BYTES
    except ValueError:
        raise DataError(f"CNNLAB_IN_MEMORY_MB must be a number of megabytes, not {limit!r}") from None


@dataclass
class Dataset:
    """Train/validation/test images of one dataset, ready for `model.fit`, and what they are."""

    name: str
    class_names: list
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    style: str = DIGIT_STYLE  # DIGIT_STYLE or PHOTO_STYLE
    fingerprint: dict = field(default_factory=dict)  # see `fingerprint`: tells when the data changed
    skipped: list = field(default_factory=list)  # [{"file", "reason"}] of files that could not be used
    notes: list = field(default_factory=list)  # what was decided for the user (a size chosen, files ignored)

    def sizes(self):
        return {"train": len(self.x_train), "validation": len(self.x_val), "test": len(self.x_test)}

    @property
    def image_shape(self) -> tuple:
        """(H, W, C) of every image."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def describe(self) -> dict:
        """What a run records of its data (data.json): enough to feed its model and to notice a change."""
        return {"name": self.name, "source": self.source, "class_names": list(self.class_names),
                "image_shape": list(self.image_shape), "style": self.style, "sizes": self.sizes(),
                "fingerprint": self.fingerprint, "skipped": self.skipped}


class ScaledImages:
    """uint8 (N, H, W, C) pixels (a memory-mapped decoded cache), optionally a subset of its rows, seen as float32
    images in [0, 1]: indexing returns a scaled NumPy array of just the rows asked for."""

    def __init__(self, pixels, rows=None):
        self.pixels = pixels
        self.rows = np.arange(len(pixels)) if rows is None else np.asarray(rows, np.int64)

    @property
    def shape(self):
        return (len(self.rows), *self.pixels.shape[1:])

    ndim = property(lambda self: self.pixels.ndim)
    dtype = np.dtype(np.float32)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key):
        rows = self.rows[key]
        if np.ndim(rows) == 0:
            return scale(self.pixels[int(rows)])
        order = np.argsort(rows, kind="stable")  # read the file front to back, then put rows back in order
        out = np.empty((len(rows), *self.pixels.shape[1:]), np.float32)
        out[order] = self.pixels[rows[order]]
        return np.divide(out, 255.0, out=out)  # as `scale`, without a second float copy

    def subset(self, rows):
        return ScaledImages(self.pixels, self.rows[np.asarray(rows, np.int64)])


def scale(pixels) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]."""
    return np.asarray(pixels, np.float32) / 255.0


def as_float_images(images) -> np.ndarray:
    """A source's (N, H, W) or (N, H, W, C) images, uint8 0..255 or float in [0, 1], as float32 (N, H, W, C)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    return scale(images) if images.dtype == np.uint8 else images.astype(np.float32, copy=False)


def conform(images, size, channels) -> np.ndarray:
    """(N, H, W, C) float images -> `size` (H, W) and `channels` (1: luminance as ITU-R 601, as Pillow converts; 3:
    grey repeated)."""
    from ..preprocess import resize

    if images.shape[-1] != channels:
        images = np.repeat(images, 3, axis=-1) if channels == 3 else \
            (images @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    if images.shape[1:3] != tuple(size):
        images = scale(np.stack([resize(image, size) for image in images]))
    return images


def parse_image_size(text):
    """'32' or '32x48' (height x width) -> (32, 32) or (32, 48); None stays None."""
    if text is None:
        return None
    parts = str(text).lower().replace(" ", "").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size *= 2
    if len(size) != 2 or not all(1 <= d <= 4096 for d in size):
        raise DataError(f"image_size must be H or HxW with sides in 1..4096 pixels (28, 32x48), not {text!r}")
    return size


def check_labels(labels, class_names, where):
    """Integer labels, each naming one of `class_names`."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:  # CIFAR-style (N, 1)
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be whole numbers, one per image, not {labels.dtype} of shape "
                        f"{labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise DataError(f"{where}: has label {bad}, but there are {len(class_names)} classes (0..{len(class_names) - 1}); "
                        f"give class_names= for every label, or fix the labels")
    return labels.astype(np.int64)


def split_rows(labels, share, seed, what, pool, rest, fix, class_names=None):
    """(kept rows, split-off rows): `share` of the `pool` cut off for `what`, stratified by class, with `seed`."""
    from sklearn.model_selection import train_test_split

    n, classes = len(labels), len(np.unique(labels))
    cut = math.ceil(n * share)  # as train_test_split counts
    if min(cut, n - cut) < classes:
        raise DataError(f"a {what} split of {share} leaves {cut:,} of {n:,} {pool} for {what} and {n - cut:,} for "
                        f"{rest}; each side needs at least one image per class ({classes}): {fix}")
    counts = np.bincount(labels)
    lonely = [int(c) for c in np.flatnonzero(counts == 1)]
    if lonely:
        names = ", ".join(class_names[c] if class_names else str(c) for c in lonely[:5])
        raise DataError(f"class(es) {names} have a single image among the {pool}, so the stratified {what} split "
                        f"cannot put one on each side; add images of them, or remove them")
    return train_test_split(np.arange(n), test_size=share, random_state=seed, stratify=labels)


def take(images, rows):
    """The `rows` of in-memory arrays or of ScaledImages."""
    return images.subset(rows) if isinstance(images, ScaledImages) else images[rows]


def fingerprint(files=(), labels=()) -> dict:
    """What identifies a dataset's content cheaply: the files (name, size, modification time) and a hash of all
    labels. Two fingerprints differ when a file was added, removed, replaced or relabelled."""
    files_hash = hashlib.sha256(json.dumps(sorted(files)).encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    for part in labels:
        digest.update(np.ascontiguousarray(np.asarray(part, np.int64)).tobytes())
    return {"files": len(files), "files_sha256": files_hash, "labels_sha256": digest.hexdigest()[:16]}


def file_entries(paths, root=None) -> list:
    """[(name, bytes, modification time in ns)] of files, named relative to `root` when given."""
    entries = []
    for path in paths:
        stat = os.stat(path)
        entries.append((str(path.relative_to(root)) if root else path.name, stat.st_size, stat.st_mtime_ns))
    return entries


def changes(recorded: dict, current: dict) -> str | None:
    """How the data differs from what a run recorded, in words, or None when it does not (or nothing was
    recorded)."""
    if not recorded or not current:
        return None
    said = []
    if recorded.get("files") != current.get("files"):
        said.append(f"{recorded.get('files')} files then, {current.get('files')} now")
    elif recorded.get("files_sha256") != current.get("files_sha256"):
        said.append("files were replaced or changed")
    if recorded.get("labels_sha256") != current.get("labels_sha256"):
        said.append("the labels differ")
    return "; ".join(said) or None
