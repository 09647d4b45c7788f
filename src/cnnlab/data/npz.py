"""An .npz file of arrays, as `np.savez("mine.npz", x_train=..., y_train=..., x_test=..., y_test=...)` saves what
`keras.datasets.*.load_data()` returns; `class_names` (strings) is optional, `x_test`/`y_test` too (the test split
is then cut off). Images are (N, H, W) or (N, H, W, 1|3), uint8 0..255 or float in [0, 1]. Read without pickle.
A test set alone (`x_test`, `y_test`) is what cnnlab.RunRecorder keeps of a fit it recorded: it can be scored and
reported on, not trained on.
"""

from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import file_entries, fingerprint

KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path, class_names=None):
    """{split: (images, labels)}, the class names and the fingerprint."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except ValueError as e:
        raise DataError(f"{path}: holds Python objects, which are not read (no pickle); save plain arrays: {e}") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    needed = KEYS[:2] if "x_test" not in arrays and "y_test" not in arrays else KEYS[2:] if "x_train" not in arrays \
        else KEYS
    missing = [key for key in needed if key not in arrays]
    if missing:
        raise DataError(f"{path}: lacks {', '.join(missing)} (it has {', '.join(arrays) or 'nothing'}); save it with "
                        f"np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    splits = {}
    for split, (x_key, y_key) in {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}.items():
        if x_key not in arrays:
            continue
        x, y = arrays[x_key], np.asarray(arrays[y_key]).reshape(-1) if np.ndim(arrays[y_key]) == 2 else arrays[y_key]
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
            raise DataError(f"{path}: {x_key} has shape {x.shape}; images must be (N, H, W) or (N, H, W, 1 or 3), "
                            f"channels last")
        if len(x) != len(y):
            raise DataError(f"{path}: {x_key} holds {len(x)} images but {y_key} {len(y)} labels")
        if x.dtype != np.uint8:
            if not np.issubdtype(x.dtype, np.floating) or x.size and (x.min() < 0 or x.max() > 1):
                raise DataError(f"{path}: {x_key} holds {x.dtype} values "
                                f"{'' if not x.size else f'{x.min():g}..{x.max():g}'}; images must be uint8 0..255 or "
                                f"floats in [0, 1]")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: {y_key} holds {y.dtype} values; labels must be whole numbers 0..n-1")
        splits[split] = (x, y.astype(np.int64))
    names = class_names
    if names is None and "class_names" in arrays:
        names = [str(n) for n in np.asarray(arrays["class_names"]).reshape(-1)]
    if names is None:
        names = [str(i) for i in range(int(max(y.max() for _, y in splits.values() if len(y))) + 1)]
    return splits, list(names), fingerprint(file_entries([path]), [y for _, y in splits.values()])
