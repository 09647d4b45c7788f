"""Images from files train as well as the same images from IDX: MNIST and Fashion-MNIST written out as a PNG tree
and as JPEG class folders, each trained with the same settings and seed as the IDX arrays they came from."""

from pathlib import Path

import numpy as np
import pytest
from image_data import write_split_folders

from cnnlab import evaluate, make_config, train_run
from cnnlab.data import CLASS_NAMES, load_arrays

TRAIN, TEST = 6000, 2000  # a stratified-enough slice: 2 epochs reach ~96% (MNIST), ~82% (Fashion-MNIST)


def written(arrays, root, fmt, **options):
    names = [f"{i}_{name.replace('/', '-')}" for i, name in enumerate(CLASS_NAMES["fashion_mnist"])]
    subset = {"x_train": arrays["x_train"][:TRAIN], "y_train": arrays["y_train"][:TRAIN],
              "x_test": arrays["x_test"][:TEST], "y_test": arrays["y_test"][:TEST]}
    return write_split_folders(root, subset, names, fmt, **options), subset


def trained_accuracy(tmp_path, dataset):
    """Test accuracy after training the seed network for 2 epochs on `dataset` (a path), seed 3."""
    config = make_config(dataset=str(dataset), epochs=2, seed=3)
    _, best, data, _ = train_run(config, out=tmp_path / "runs", name=Path(dataset).name)
    return evaluate(best, data.x_test, data.y_test)["accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_png_and_jpeg_folders_train_as_the_idx_files(request, tmp_path, dataset):
    folder = request.getfixturevalue("mnist_dir" if dataset == "mnist" else "fashion_dir")
    arrays, _ = load_arrays(dataset, data_dir=folder, allow_download=False)
    png, subset = written(arrays, tmp_path / "png", "PNG")
    jpeg, _ = written(arrays, tmp_path / "jpeg", "JPEG", quality=95)
    npz = tmp_path / "same.npz"
    np.savez(npz, **subset)
    from_arrays, from_png, from_jpeg = (trained_accuracy(tmp_path, path) for path in (npz, png, jpeg))
    print(f"{dataset}: IDX arrays {from_arrays:.2%}, PNG folders {from_png:.2%}, JPEG folders {from_jpeg:.2%}")
    # the folders list images class by class, so the validation split holds other images: equal within noise
    # (one standard error of a 2,000-image score is ~0.4-0.9 points)
    assert abs(from_png - from_arrays) < 0.02, (from_png, from_arrays)
    assert abs(from_jpeg - from_arrays) < 0.025, (from_jpeg, from_arrays)
    assert from_arrays > (0.93 if dataset == "mnist" else 0.78)
