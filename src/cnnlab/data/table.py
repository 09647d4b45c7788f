"""A CSV file with one row per image: a label column and pixel columns, as Kaggle's digit-recognizer train.csv
(`label,pixel0,...,pixel783`).

The label column is the one named label, labels, class, target or y (else the first column); labels may be
numbers (classes 0..n-1) or names (classes sorted by name). Pixels are 0..255, or in [0, 1]; the image shape is
inferred when the pixel count is a square (or three squares: colour, row by row, RGB per pixel), else given with
--image-size.
"""

import csv
import math
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import file_entries, fingerprint

LABEL_COLUMNS = ("label", "labels", "class", "target", "y")


def _header(path):
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV file; is it the right file?") from None
    if not header or len(header) < 2:
        raise DataError(f"{path}: needs a header row and a label column beside pixel columns "
                        f"(label,pixel0,pixel1,...)")
    return header


def _shape(path, pixels, size):
    """(H, W, C) of rows of `pixels` values."""
    if size:
        height, width = size
        if pixels == height * width or pixels == 3 * height * width:
            return height, width, pixels // (height * width)
        raise DataError(f"{path}: rows have {pixels} pixel values, which is not {height}x{width} (grey: "
                        f"{height * width}) or {height}x{width}x3 (colour: {3 * height * width}); check image_size=")
    for channels in (1, 3):
        side = math.isqrt(pixels // channels)
        if side * side * channels == pixels:
            return side, side, channels
    raise DataError(f"{path}: rows have {pixels} pixel values, not a square image; give its size with image_size='HxW'")


def read_csv(path, size=None, class_names=None):
    """{"all": (images uint8 or float (N, H, W, C), labels)}, the class names and the fingerprint."""
    path = Path(path)
    header = _header(path)
    lowered = [name.strip().lower() for name in header]
    label_column = next((lowered.index(name) for name in LABEL_COLUMNS if name in lowered), 0)
    pixel_columns = [i for i in range(len(header)) if i != label_column]
    try:
        values = np.loadtxt(path, delimiter=",", skiprows=1, usecols=pixel_columns, dtype=np.float32, ndmin=2,
                            encoding="utf-8-sig")
        raw_labels = np.loadtxt(path, delimiter=",", skiprows=1, usecols=[label_column], dtype=str, ndmin=1,
                                encoding="utf-8-sig")
    except ValueError as e:  # numpy names the row and column: ragged rows, text among the pixels
        reason = " ".join(str(e).split()).rstrip(".")
        raise DataError(f"{path}: {reason}; every row needs a label and {len(pixel_columns)} numeric pixel "
                        f"values") from None
    if not len(values):
        raise DataError(f"{path}: has a header but no rows")
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 255:
        raise DataError(f"{path}: pixel values must be 0..255 (or 0..1), found {values.min():g}..{values.max():g}")
    integral = bool(np.all(values == np.round(values)))
    if integral and values.max() > 1:
        images = values.astype(np.uint8)
    elif values.max() <= 1:
        images = values
    else:
        raise DataError(f"{path}: pixel values must be whole numbers 0..255 or fractions in [0, 1], found "
                        f"{values.max():g}")
    images = images.reshape(len(images), *_shape(path, len(pixel_columns), size))
    labels, names = _labels(path, raw_labels, class_names)
    return {"all": (images, labels)}, names, fingerprint(file_entries([path]), [labels])


def _labels(path, raw, class_names):
    """Integer labels and class names: numbers as they are (names 0..n-1 or `class_names`), text as sorted names."""
    raw = np.char.strip(raw.astype(str))
    try:
        numbers = raw.astype(np.float64)
    except ValueError:
        names = sorted(set(raw.tolist()))
        if class_names and sorted(class_names) != names:
            raise DataError(f"{path}: the label column names the classes {', '.join(names[:12])}, not the "
                            f"class_names= given; leave class_names= out") from None
        names = list(class_names) if class_names else names
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[label] for label in raw], np.int64), names
    if not np.all(numbers == np.round(numbers)):
        raise DataError(f"{path}: labels must be whole numbers or class names, not {numbers[numbers != np.round(numbers)][0]:g}")
    labels = numbers.astype(np.int64)
    count = len(class_names) if class_names else int(labels.max()) + 1
    return labels, list(class_names) if class_names else [str(i) for i in range(count)]
