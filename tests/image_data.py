"""Datasets written as files, the ways users bring them: class folders of PNG or JPEG, CSV, NPZ, in grey or colour.

Made from data every machine has (scikit-learn's digits, or MNIST/Fashion-MNIST arrays a test passes in), so the
tests that use them run everywhere.
"""

import csv
from pathlib import Path

import numpy as np
from PIL import Image

DIGIT_NAMES = [f"d{i}" for i in range(10)]  # class folder names that sort as the labels do


def digit_arrays():
    """scikit-learn's digits drawn into 28x28 (uint8 (N, 28, 28)) with their labels, train and test."""
    from cnnlab.data import load_arrays

    arrays, _ = load_arrays("digits")
    return arrays


def coloured(images, seed=0, size=32, contrast=0.35):
    """Grey (N, h, w) uint8 images as colour (N, size, size, 3): each image's ink and background in random colours,
    so that colour says nothing about the class, apart in brightness by at least `contrast` (as a photo's subject
    stands out of its background); padded (or cropped) to `size`."""
    rng = np.random.default_rng(seed)
    h, w = images.shape[1:3]
    pad = ((0, 0), ((size - h) // 2, size - h - (size - h) // 2), ((size - w) // 2, size - w - (size - w) // 2))
    ink = np.pad(images, pad).astype(np.float32)[..., None] / 255
    luminance = np.array([0.299, 0.587, 0.114])
    fg, bg = rng.integers(0, 256, (len(images), 3)), rng.integers(0, 256, (len(images), 3))
    for i in range(len(images)):
        while abs((fg[i] - bg[i]) @ luminance) < 255 * contrast:
            fg[i], bg[i] = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return (ink * fg[:, None, None] + (1 - ink) * bg[:, None, None]).round().astype(np.uint8)


def write_class_folders(root, images, labels, class_names, fmt="PNG", **save_options) -> Path:
    """root/<class name>/<index>.<fmt>, one file per image."""
    root = Path(root)
    suffix = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif"}[fmt]
    for name in class_names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(np.squeeze(image)).save(root / class_names[label] / f"{i:05d}{suffix}", fmt, **save_options)
    return root


def write_split_folders(root, arrays, class_names, fmt="PNG", **save_options) -> Path:
    """root/train/<class>/... and root/test/<class>/... from {"x_train", "y_train", "x_test", "y_test"}."""
    for split in ("train", "test"):
        write_class_folders(Path(root) / split, arrays[f"x_{split}"], arrays[f"y_{split}"], class_names, fmt,
                            **save_options)
    return Path(root)


def write_csv(path, images, labels, label_names=None) -> Path:
    """Kaggle's digit-recognizer layout: label,pixel0,...,pixelN-1; labels as names when `label_names` is given."""
    flat = np.asarray(images).reshape(len(images), -1)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", *(f"pixel{i}" for i in range(flat.shape[1]))])
        for label, row in zip(labels, flat):
            writer.writerow([label_names[label] if label_names else int(label), *row.tolist()])
    return Path(path)
