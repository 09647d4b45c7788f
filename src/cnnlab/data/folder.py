"""A folder of images with one sub-folder per class, the layout Keras's image_dataset_from_directory reads.

    photos/cats/001.jpg, photos/dogs/002.png, ...        class names are the folder names, sorted
    photos/train/cats/..., photos/test/cats/...          train/ and test/ (and val/ or validation/) are the splits

Files are found as image_dataset_from_directory finds them (every level below a class folder), decoded with
Pillow (PNG, JPEG, BMP, GIF, TIFF; 16-bit and palette images, EXIF orientation, transparency), made grey or
colour and resized to one size, once: into a uint8 cache on disk (`decoded_cache_dir`), which later epochs,
runs, `evaluate` and `report` read instead of decoding again. A file that is not an image (notes.txt, .DS_Store)
is ignored and counted; an image that cannot be decoded (truncated, corrupt) is skipped and named, so that one
bad photo in 100,000 does not stop a run; a folder where most images fail is refused.
benchmarks/input_pipeline.py measures this against image_dataset_from_directory with tf.data's cache.
"""

import collections
import concurrent.futures
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import files
from ..errors import DataError, ImageError
from ..preprocess import FORMATS, MAX_PIXELS, is_grey_mode, is_image_file, read_pixels
from .catalogue import cnnlab_cache_dir
from .dataset import file_entries, fingerprint

SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "validation", "valid"), "test": ("test", "testing")}
MAX_SKIPPED_SHARE = 0.5  # more undecodable images than this is a wrong folder, not a few bad files
DECODE_THREADS = max(2, min(8, os.cpu_count() or 2))  # Pillow's decoders release the GIL
CACHE_VERSION = 1  # bump when the decoding changes: older caches are then not reused


def _subfolders(folder):
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _split_folders(root):
    """{split: folder} when `root` holds train/ and test/ (or val/), else None."""
    by_name = {p.name.lower(): p for p in _subfolders(root)}
    found = {split: next((by_name[n] for n in names if n in by_name), None) for split, names in SPLIT_FOLDERS.items()}
    if not found["train"] or not (found["test"] or found["val"]):
        return None
    return {split: folder for split, folder in found.items() if folder}


def _class_files(folder, where):
    """{class name: [image files]} of a folder of class folders, and the files ignored (not images)."""
    classes, ignored = {}, []
    for entry in sorted(folder.iterdir()):
        if entry.is_file():
            ignored.append(entry)  # not in a class folder: it has no label
    for class_folder in _subfolders(folder):
        images = []
        for path in sorted(p for p in class_folder.rglob("*") if p.is_file()):
            (images if is_image_file(path) else ignored).append(path)
        classes[class_folder.name] = images
    if not classes:
        raise DataError(f"{where}: no class folders in it; put each class's images in a folder named after the class "
                        f"({where}/cats/*.jpg, {where}/dogs/*.jpg)")
    return classes, ignored


def list_images(root):
    """{split: [(path, label)]}, the class names, the ignored files: every image of the folder, labelled by its
    class folder. Splits are those the folder has (train, and test and/or val), else one 'all' split."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    splits = _split_folders(root) or {"all": root}
    listed, ignored = {}, []
    train_classes = None
    for split, folder in splits.items():
        classes, skipped = _class_files(folder, folder)
        ignored += skipped
        if train_classes is None:  # train (or the whole folder) comes first and names the classes
            train_classes = list(classes)
            if len(train_classes) < 2:
                raise DataError(f"{folder}: found {len(train_classes)} class folder ({', '.join(train_classes)}); a "
                                f"classifier needs at least 2 classes, one folder each")
            empty = [name for name, images in classes.items() if not images]
            if empty:
                raise DataError(f"{folder}: class folder(s) {', '.join(empty)} hold no images ({', '.join(FORMATS)}); "
                                f"add images or remove the folder")
        else:
            unknown = [name for name in classes if name not in train_classes]
            if unknown:
                raise DataError(f"{folder}: class folder(s) {', '.join(unknown)} are not in "
                                f"{splits.get('train', root)} (classes: {', '.join(train_classes)}); rename or remove "
                                f"them")
        index = {name: i for i, name in enumerate(train_classes)}
        listed[split] = [(path, index[name]) for name, images in classes.items() for path in images]
    return listed, train_classes, ignored


def survey(paths, limit=None):
    """Counter of (height, width) and whether every image is grey, from the headers (no pixel is decoded).
    Files whose header cannot be read are left to the decoding, which names them."""
    from PIL import Image

    sizes, grey = collections.Counter(), True
    for path in paths[:limit]:
        try:
            with Image.open(path, formats=FORMATS) as img:
                sizes[(img.height, img.width)] += 1
                grey = grey and is_grey_mode(img)
        except Exception:  # noqa: BLE001  (a bad file is reported by the decoding, with its reason)
            continue
    return sizes, grey


def _surveyed(paths, entries):
    """`survey` of these files, kept beside the decoded cache: a folder read again is not opened again."""
    path = decoded_cache_dir() / "surveys" / f"{_cache_key(entries, None, None)}.json"
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        return collections.Counter({tuple(size): n for size, n in found["sizes"]}), found["grey"]
    sizes, grey = survey(paths)
    files.write_json(path, {"sizes": [[list(size), n] for size, n in sizes.items()], "grey": grey})
    return sizes, grey


def decoded_cache_dir() -> Path:
    return cnnlab_cache_dir() / "cnnlab-decoded"


def _cache_key(entries, size, channels):
    text = json.dumps({"version": CACHE_VERSION, "files": entries, "size": size, "channels": channels})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def decode_all(paths, entries, size, channels, root):
    """uint8 (N, H, W, C) pixels of `paths` (a memory map of the cache), the rows that decoded, and the failures
    [{"file", "reason"}]: read from the cache when these very files (their `entries`) were decoded before at this
    size."""
    folder = decoded_cache_dir() / _cache_key(entries, list(size), channels)
    shape = (len(paths), *size, channels)
    if not (folder / "index.json").is_file():
        _decode_into(folder, paths, size, channels, root)
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    pixels = np.memmap(folder / "pixels.u8", np.uint8, "r", shape=shape) if len(paths) else np.zeros(shape, np.uint8)
    return pixels, np.asarray(index["decoded"], np.int64), index["failed"]


def _decode_into(folder, paths, size, channels, root):
    """Decode every image once into `folder` (pixels.u8 and index.json), built under a temporary name and
    renamed into place: a killed decoding leaves no cache that looks complete."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=files.TEMP_PREFIX, dir=folder.parent))
    try:
        shape = (len(paths), *size, channels)
        pixels = np.memmap(building / "pixels.u8", np.uint8, "w+", shape=shape) if len(paths) else None
        failed, decoded = [], []

        def decode(i):
            try:
                pixels[i] = read_pixels(paths[i], size, channels, MAX_PIXELS)
                return i, None
            except ImageError as e:
                return i, str(e).removeprefix(f"{paths[i]}: ")

        print(f"Decoding {len(paths):,} images into {size[0]}x{size[1]}x{channels} (once: kept in {folder.parent})",
              flush=True)
        with concurrent.futures.ThreadPoolExecutor(DECODE_THREADS) as pool:
            for i, reason in pool.map(decode, range(len(paths)), chunksize=64):
                if reason is None:
                    decoded.append(i)
                else:
                    failed.append({"file": str(Path(paths[i]).relative_to(root)), "reason": reason})
        if pixels is not None:
            pixels.flush()
            del pixels
        (building / "index.json").write_text(json.dumps({"decoded": decoded, "failed": failed}), encoding="utf-8")
        if folder.exists():  # another process finished the same cache first
            shutil.rmtree(building)
        else:
            os.replace(building, folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def read_folder(root, size=None, channels=None):
    """The folder's splits as {split: (uint8 pixels (memory map) or rows of it, labels)}, its class names, the
    fingerprint, the files skipped and what was decided (`notes`). `size` (H, W) and `channels` default to the most
    common size of the images and to grey when every image is grey."""
    root = Path(root).resolve()
    listed, class_names, ignored = list_images(root)
    everything = [path for items in listed.values() for path, _ in items]
    notes = []
    if ignored:
        shown = ", ".join(str(p.relative_to(root)) for p in ignored[:3]) + (", ..." if len(ignored) > 3 else "")
        notes.append(f"ignored {len(ignored)} file(s) that are not images in class folders ({shown})")
    listed_entries = {split: file_entries([path for path, _ in items], root) for split, items in listed.items()}
    if size is None or channels is None:
        sizes, grey = _surveyed(everything, [e for entries in listed_entries.values() for e in entries])
        if not sizes:
            raise DataError(f"{root}: none of its {len(everything):,} image files could be read; are they images?")
        if size is None:
            size = sizes.most_common(1)[0][0]
            if len(sizes) > 1:
                common = sizes[size]
                notes.append(f"images have {len(sizes)} sizes; all are resized to the most common, {size[0]}x{size[1]} "
                             f"({common:,} of {sum(sizes.values()):,}); choose another with image_size=")
        if channels is None:
            channels = 1 if grey else 3
    splits, skipped = {}, []
    for split, items in listed.items():
        paths = [path for path, _ in items]
        pixels, decoded, failed = decode_all(paths, listed_entries[split], size, channels, root)
        labels = np.array([label for _, label in items], np.int64)
        splits[split] = (pixels, decoded, labels[decoded])
        skipped += failed
    if len(skipped) > MAX_SKIPPED_SHARE * len(everything):
        raise DataError(f"{root}: {len(skipped):,} of {len(everything):,} images could not be decoded (first: "
                        f"{skipped[0]['file']}: {skipped[0]['reason']}); is it the right folder?")
    if skipped:
        shown = "; ".join(f"{s['file']} ({s['reason']})" for s in skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        notes.append(f"skipped {len(skipped)} image(s) that cannot be decoded: {shown}")
    labels = [split[2] for split in splits.values()]
    entries = [entry for split in listed_entries.values() for entry in split]
    return splits, class_names, fingerprint(entries, labels), skipped, notes
