"""Datasets: any image-classification data, read into one `Dataset` of train, validation and test images.

    data = load_dataset("fashion_mnist")                   # a named dataset (catalogue.py)
    data = load_dataset("photos/", image_size="64")        # a folder of class folders (folder.py)
    data = load_dataset("train.csv")                       # label and pixel columns (table.py)
    data = load_dataset("mine.npz")                        # x_train, y_train, x_test, y_test (npz.py)
    data = load_dataset("emnist-letters/", class_names=[...])   # a folder of IDX files (idx.py)

One module per source; `dataset.py` holds what they share. A source without a test split gets one cut off,
stratified, with the seed (`test_split`); the validation split is always cut from the training images
(`validation_split`), so that the same settings give the same images in every split, run after run.
"""

import difflib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .catalogue import (CLASS_NAMES, NAMED, WrongDataset, candidate_places, cnnlab_cache_dir, download, identify,
                        keras_cache_dir, load_arrays)
from .dataset import (DIGIT_STYLE, PHOTO_STYLE, Dataset, ScaledImages, as_float_images, changes, check_labels,
                      conform, file_entries, fingerprint, in_memory_bytes, parse_image_size, scale, split_rows, take)
from .idx import find_idx_files, read_idx, read_idx_folder

__all__ = ["CLASS_NAMES", "NAMED", "DIGIT_STYLE", "PHOTO_STYLE", "Dataset", "DataError", "ScaledImages",
           "WrongDataset", "candidate_places", "changes", "cnnlab_cache_dir", "download", "keras_cache_dir",
           "load_arrays", "load_dataset", "read_idx", "scale", "source_kind", "short_name"]
SOURCES = "a folder of class folders, a .csv or .npz file, or a folder of IDX files"
CHANNELS = {"grayscale": 1, "rgb": 3}  # of each --color-mode


def source_kind(source) -> str:
    """named, folder, idx, csv or npz; an unknown name or a missing path is an error that says what is taken."""
    if source in NAMED:
        return "named"
    path = Path(source).expanduser()
    if path.is_dir():
        return "idx" if find_idx_files(path) is not None else "folder"
    if path.is_file():
        kind = path.suffix.lower().lstrip(".")
        if kind in ("csv", "npz"):
            return kind
        raise DataError(f"{source}: cnnlab reads {SOURCES}, not a {path.suffix or 'suffix-less'} file")
    if "/" in str(source) or path.suffix or str(source).startswith("~"):
        raise DataError(f"{source}: no such file or folder; give the path of {SOURCES}, or one of {', '.join(NAMED)}")
    close = difflib.get_close_matches(str(source), NAMED, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise DataError(f"unknown dataset {str(source)!r}{hint}: give one of {', '.join(NAMED)}, or the path of {SOURCES}")


def short_name(source) -> str:
    """A dataset's name for run directories and titles: the named dataset's, else the folder's or file's."""
    return source if source in NAMED else (Path(source).expanduser().resolve().stem or "data")


def load_dataset(source="mnist", data_dir=None, validation_split=0.2, seed=42, limit_train=None, allow_download=True,
                 test_split=0.2, image_size=None, color_mode=None, class_names=None) -> Dataset:
    """Load a dataset (a name or a path, see the module docstring), conform its images to `image_size` ('H' or
    'HxW') and `color_mode` (grayscale or rgb) when given, and split it, stratified, with `seed`."""
    size = parse_image_size(image_size)
    if color_mode is not None and color_mode not in CHANNELS:
        raise DataError(f"color_mode must be grayscale or rgb, not {color_mode!r}")
    channels = CHANNELS.get(color_mode)
    kind = source_kind(source)
    name, style, notes, skipped = short_name(source), PHOTO_STYLE, [], []
    if kind == "named":
        arrays, where = load_arrays(source, data_dir, allow_download)
        names = list(class_names or CLASS_NAMES[source])
        splits = {split: (arrays[f"x_{split}"], arrays[f"y_{split}"]) for split in ("train", "test")}
        style, prints = NAMED[source].style, fingerprint([], [arrays["y_train"], arrays["y_test"]])
    elif kind == "idx":
        arrays, paths = read_idx_folder(source)
        names = list(class_names or CLASS_NAMES.get(identify(arrays["y_test"]), []) or
                     [str(i) for i in range(int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1)])
        splits = {split: (arrays[f"x_{split}"], arrays[f"y_{split}"]) for split in ("train", "test")}
        where, style = f"IDX files in {Path(source).resolve()}", DIGIT_STYLE
        prints = fingerprint(file_entries(list(paths.values())), [arrays["y_train"], arrays["y_test"]])
    elif kind == "csv":
        from .table import read_csv

        splits, names, prints = read_csv(source, size, class_names)
        where = f"CSV file {Path(source).resolve()}"
    elif kind == "npz":
        from .npz import read_npz

        splits, names, prints = read_npz(source, class_names)
        where = f"NPZ file {Path(source).resolve()}"
    else:
        from .folder import read_folder

        found, names, prints, skipped, notes = read_folder(source, size, channels)
        if class_names:
            if len(class_names) != len(names):
                raise DataError(f"{source}: has {len(names)} class folders ({', '.join(names)}), but "
                                f"{len(class_names)} class names were given; leave class_names= out")
            names = list(class_names)
        where = f"image folder {Path(source).resolve()}"
        splits = _streamed_or_loaded(found)
    if kind != "folder":
        splits = {split: (_conformed(x, size, channels), y) for split, (x, y) in splits.items()}
    splits = {split: (x, check_labels(y, names, f"{where} ({split} labels)")) for split, (x, y) in splits.items()}
    if len(names) < 2:
        raise DataError(f"{where}: has {len(names)} class ({', '.join(map(str, names))}); a classifier needs at "
                        f"least 2 classes")
    splits = _three_splits(splits, validation_split, test_split, seed, limit_train, names)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (splits[s] for s in ("train", "val", "test"))
    return Dataset(name=name, class_names=names, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
                   x_test=x_test, y_test=y_test, source=where, style=style, fingerprint=prints, skipped=skipped,
                   notes=notes)


def _conformed(images, size, channels):
    images = as_float_images(images)
    return conform(images, size or images.shape[1:3], channels or images.shape[-1])


def _streamed_or_loaded(found):
    """The decoded folder as ScaledImages over its cache, or as float arrays when they fit in memory."""
    total = sum(len(rows) * int(np.prod(pixels.shape[1:])) * 4 for pixels, rows, _ in found.values())
    streamed = total > in_memory_bytes()
    splits = {}
    for split, (pixels, rows, labels) in found.items():
        images = ScaledImages(pixels, rows)
        splits[split] = (images if streamed else images[np.arange(len(rows))], labels)
    return splits


def _three_splits(splits, validation_split, test_split, seed, limit_train, class_names):
    """{train, val, test}: the source's own splits, the test split cut off when it has none (also beside a val
    folder), the validation split cut from the training images when it has none; `limit_train` first."""
    if "all" in splits:
        splits["train"] = splits.pop("all")
    if "train" not in splits:  # a test set alone (npz.py): no images to train or validate on
        x, y = splits["test"]
        return {"train": (x[:0], y[:0]), "val": (x[:0], y[:0]), "test": (x, y)}
    if "test" not in splits:
        x, y = splits["train"]
        kept, cut = split_rows(y, test_split, seed, "test", "images", "training and validation",
                               "change test_split=, or add images", class_names)
        splits["train"], splits["test"] = (take(x, kept), y[kept]), (take(x, cut), y[cut])
    x, y = splits["train"]
    if limit_train and limit_train < len(x):
        from sklearn.model_selection import train_test_split

        kept, _ = train_test_split(np.arange(len(y)), train_size=limit_train, random_state=seed, stratify=y)
        x, y = take(x, kept), y[kept]
    if "val" not in splits:
        kept, cut = split_rows(y, validation_split, seed, "validation", "training images", "training",
                               "change validation_split= or limit_train=", class_names)
        splits["val"], x, y = (take(x, cut), y[cut]), take(x, kept), y[kept]
    splits["train"] = (x, y)
    return splits
