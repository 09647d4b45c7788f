"""Every data source a user brings, read from real files: class folders (PNG, JPEG, 16-bit, palette), CSV, NPZ and
IDX, the bad inputs each can have, the decoded cache, the streamed path, and the fingerprint that tells a run
its data changed."""

import json

import numpy as np
import pytest
from image_data import DIGIT_NAMES, coloured, digit_arrays, write_class_folders, write_csv, write_split_folders
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import ScaledImages, load_dataset


@pytest.fixture(scope="module")
def digits():
    return digit_arrays()


@pytest.fixture(scope="module")
def digit_folder(digits, tmp_path_factory):
    """The digits as one folder of class folders (no train/ or test/): cnnlab cuts the test split itself."""
    x = np.concatenate([digits["x_train"], digits["x_test"]])
    y = np.concatenate([digits["y_train"], digits["y_test"]])
    return write_class_folders(tmp_path_factory.mktemp("flat") / "digits", x, y, DIGIT_NAMES)


def error_of(capsys, *argv):
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0].removeprefix("cnnlab: error: ")


# ---------------------------------------------------------------- class folders


def test_a_png_tree_is_read_pixel_for_pixel(digits, tmp_path):
    root = write_split_folders(tmp_path / "pngs", digits, DIGIT_NAMES)
    data = load_dataset(str(root), seed=3)
    arrays = load_dataset("digits", seed=3)
    assert data.class_names == DIGIT_NAMES and data.image_shape == (28, 28, 1) and data.style == "photos"
    assert data.sizes() == arrays.sizes()
    # the same split of the same images: files are listed class by class, so compare sorted by content
    for ours, theirs in ((data.x_test, arrays.x_test), (data.x_train, arrays.x_train)):
        assert np.allclose(np.sort(ours.reshape(len(ours), -1), axis=0), np.sort(theirs.reshape(len(theirs), -1), axis=0))


def test_a_flat_folder_gets_a_stratified_test_split_that_is_the_same_every_time(digit_folder):
    first = load_dataset(str(digit_folder), test_split=0.25, seed=7)
    again = load_dataset(str(digit_folder), test_split=0.25, seed=7)
    other = load_dataset(str(digit_folder), test_split=0.25, seed=8)
    assert len(first.y_test) == int(np.ceil(0.25 * 1797))
    assert np.array_equal(first.x_test, again.x_test) and not np.array_equal(first.x_test, other.x_test)
    shares = np.bincount(first.y_test, minlength=10) / len(first.y_test)
    assert np.abs(shares - 0.1).max() < 0.02  # stratified


def test_colour_is_kept_and_grey_is_told_apart(digits, tmp_path):
    colour = write_split_folders(tmp_path / "colour", {**digits, "x_train": coloured(digits["x_train"]),
                                                       "x_test": coloured(digits["x_test"], seed=1)}, DIGIT_NAMES)
    data = load_dataset(str(colour))
    assert data.image_shape == (32, 32, 3)
    assert np.abs(data.x_train[..., 0] - data.x_train[..., 1]).mean() > 0.05  # real colour, not grey x3
    assert load_dataset(str(colour), color_mode="grayscale", image_size="20x24").image_shape == (20, 24, 1)


def test_jpeg_sixteen_bit_and_palette_images_decode_to_their_pixels(digits, tmp_path):
    x, y = digits["x_train"][:60], digits["y_train"][:60]
    root = tmp_path / "kinds"
    for i, (image, label) in enumerate(zip(x, y)):
        folder = root / DIGIT_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        kind = i % 3
        if kind == 0:
            Image.fromarray(image.astype(np.uint16) * 257).save(folder / f"{i}.png")  # 16-bit grey
        elif kind == 1:
            Image.fromarray(image).convert("P").save(folder / f"{i}.png")  # palette, grey entries
        else:
            Image.fromarray(image).save(folder / f"{i}.jpg", quality=95)
    data = load_dataset(str(root), validation_split=0.3, test_split=0.3)
    assert data.image_shape == (28, 28, 1)  # palette of grey entries and 16-bit count as grey
    images = np.concatenate([data.x_train, data.x_val, data.x_test])[..., 0]
    reference = x.astype(np.float32) / 255
    # every decoded image matches one of the originals (JPEG within its loss)
    nearest = np.abs(images[:, None] - reference[None]).mean(axis=(2, 3)).min(axis=1)
    assert nearest.max() < 0.02


def test_files_that_are_not_images_are_ignored_and_broken_images_skipped_and_named(digits, tmp_path):
    root = write_class_folders(tmp_path / "messy", digits["x_train"][:200], digits["y_train"][:200], DIGIT_NAMES)
    (root / "d3" / "notes.txt").write_text("not an image")
    (root / "d3" / ".DS_Store").write_bytes(b"\0\1")
    (root / "README.md").write_text("labels are folder names")
    good = next((root / "d5").glob("*.png")).read_bytes()
    (root / "d5" / "truncated.png").write_bytes(good[:len(good) // 2])
    (root / "d6" / "fake.jpg").write_bytes(b"this is text, not a JPEG")
    data = load_dataset(str(root))
    assert sorted(s["file"] for s in data.skipped) == ["d5/truncated.png", "d6/fake.jpg"]
    assert all(s["reason"] for s in data.skipped)
    assert sum(data.sizes().values()) == 200
    assert any("ignored 3 file(s)" in note for note in data.notes)
    assert any("skipped 2 image(s)" in note and "d5/truncated.png" in note for note in data.notes)


def test_a_run_records_what_was_skipped(digits, tmp_path):
    root = write_class_folders(tmp_path / "data", digits["x_train"][:300], digits["y_train"][:300], DIGIT_NAMES)
    (root / "d1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert main(["train", "--dataset", str(root), "--epochs", "1", "--out", str(tmp_path / "runs"), "--name", "r"]) == 0
    run = tmp_path / "runs" / "r"
    record = json.loads((run / "data.json").read_text())
    assert [s["file"] for s in record["skipped"]] == ["d1/broken.jpg"]
    assert record["class_names"] == DIGIT_NAMES and record["image_shape"] == [28, 28, 1]
    assert json.loads((run / "metrics.json").read_text())["skipped_files"] == 1
    assert json.loads((run / "config.json").read_text())["dataset"] == str(root.resolve())


@pytest.mark.parametrize("make, message", [
    (lambda root: (root / "only").mkdir(parents=True), "found 1 class folder (only); a classifier needs at least 2"),
    (lambda root: [(root / name).mkdir(parents=True) for name in ("a", "b")], "class folder(s) a, b hold no images"),
    (lambda root: root.mkdir(), "no class folders in it"),
])
def test_folders_that_cannot_be_a_dataset_are_refused(capsys, tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    assert message in error_of(capsys, "data", str(root))


def test_an_empty_class_folder_beside_others_is_named(digits, tmp_path, capsys):
    root = write_class_folders(tmp_path / "data", digits["x_train"][:100], digits["y_train"][:100], DIGIT_NAMES)
    (root / "empty").mkdir()
    assert error_of(capsys, "data", str(root)).startswith(f"{root.resolve()}: class folder(s) empty hold no images")


def test_a_test_class_that_is_not_in_train_is_refused(digits, tmp_path, capsys):
    root = write_split_folders(tmp_path / "data", digits, DIGIT_NAMES)
    (root / "test" / "extra").mkdir()
    Image.fromarray(digits["x_test"][0]).save(root / "test" / "extra" / "x.png")
    message = error_of(capsys, "data", str(root))
    assert "class folder(s) extra are not in" in message and "rename or remove them" in message


def test_mixed_sizes_are_resized_to_the_most_common_with_a_note(digits, tmp_path):
    root = write_class_folders(tmp_path / "data", digits["x_train"][:200], digits["y_train"][:200], DIGIT_NAMES)
    for path in list((root / "d2").glob("*.png"))[:5]:
        Image.open(path).resize((40, 30)).save(path)
    data = load_dataset(str(root))
    assert data.image_shape == (28, 28, 1)
    assert any("2 sizes" in note and "28x28" in note and "image_size=" in note for note in data.notes)


def test_most_images_undecodable_is_a_wrong_folder(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "data" / name / f"{i}.png").write_bytes(b"not a png")
    assert "none of its 10 image files could be read" in error_of(capsys, "data", str(tmp_path / "data"))


def test_fewer_images_than_classes_in_a_split_is_refused(digits, tmp_path, capsys):
    rows = np.concatenate([np.flatnonzero(digits["y_train"] == c)[:3] for c in range(10)])  # 3 of each class
    root = write_class_folders(tmp_path / "data", digits["x_train"][rows], digits["y_train"][rows], DIGIT_NAMES)
    message = error_of(capsys, "data", str(root))
    assert message.startswith("a test split of 0.2 leaves 6 of 30 images for test") and "--test-split" in message


# ---------------------------------------------------------------- the decoded cache and the streamed path


def test_a_folder_is_decoded_once_then_read_from_the_cache(digit_folder, capsys):
    load_dataset(str(digit_folder), seed=1)
    capsys.readouterr()
    load_dataset(str(digit_folder), seed=2)
    assert "Decoding" not in capsys.readouterr().out


def test_a_folder_over_the_memory_line_is_streamed_and_trains_as_in_memory(digit_folder, tmp_path, monkeypatch):
    from cnnlab import make_config, train_run

    def trained(name):
        config = make_config(dataset=str(digit_folder), epochs=2, seed=5)
        return train_run(config, out=tmp_path, name=name)[3]

    in_memory = trained("memory")
    monkeypatch.setenv("CNNLAB_IN_MEMORY_MB", "0.1")
    streamed_data = load_dataset(str(digit_folder), seed=5)
    assert isinstance(streamed_data.x_train, ScaledImages) and isinstance(streamed_data.x_test, ScaledImages)
    assert streamed_data.x_train[[5, 1, 3]].shape == (3, 28, 28, 1)
    streamed = trained("streamed")
    assert streamed["val_loss"] == pytest.approx(in_memory["val_loss"], rel=1e-4)
    assert streamed["val_accuracy"] == pytest.approx(in_memory["val_accuracy"], abs=1e-6)


# ---------------------------------------------------------------- the fingerprint


def test_evaluate_says_when_the_data_changed_since_the_run(digits, tmp_path, capsys):
    root = write_class_folders(tmp_path / "data", digits["x_train"][:400], digits["y_train"][:400], DIGIT_NAMES)
    assert main(["run", "--dataset", str(root), "--epochs", "1", "--out", str(tmp_path / "runs"), "--name", "r"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "runs" / "r" / "best.keras")]) == 0
    assert "changed" not in capsys.readouterr().err
    Image.fromarray(digits["x_test"][0]).save(root / "d0" / "new.png")
    assert main(["evaluate", str(tmp_path / "runs" / "r" / "best.keras")]) == 0
    err = capsys.readouterr().err
    assert "warning: the data of" in err and "400 files then, 401 now" in err


# ---------------------------------------------------------------- CSV


def test_a_kaggle_style_csv_is_read(digits, tmp_path):
    path = write_csv(tmp_path / "train.csv", digits["x_train"], digits["y_train"])
    data = load_dataset(str(path))
    assert data.image_shape == (28, 28, 1) and data.class_names == [str(d) for d in range(10)]
    assert sum(data.sizes().values()) == len(digits["x_train"])
    assert data.x_train.max() == pytest.approx(1.0)


def test_csv_labels_may_be_names(digits, tmp_path):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    data = load_dataset(str(write_csv(tmp_path / "named.csv", digits["x_train"], digits["y_train"], names)))
    assert data.class_names == sorted(names)


def test_a_non_square_csv_needs_its_size(digits, tmp_path, capsys):
    wide = np.pad(digits["x_train"][:200], ((0, 0), (0, 0), (0, 12)))  # 28x40
    path = write_csv(tmp_path / "wide.csv", wide, digits["y_train"][:200])
    assert "not a square image; give its size with --image-size HxW" in error_of(capsys, "data", str(path))
    assert load_dataset(str(path), image_size="28x40").image_shape == (28, 40, 1)


@pytest.mark.parametrize("row, message", [
    ("3," + ",".join(["0"] * 10), "every row needs a label and 16 numeric pixel values"),
    ("3," + ",".join(["0"] * 15) + ",dark", "every row needs a label and 16 numeric pixel values"),
    ("3," + ",".join(["0"] * 15) + ",300", "pixel values must be 0..255"),
])
def test_bad_csv_rows_are_named(tmp_path, capsys, row, message):
    path = tmp_path / "bad.csv"
    good = "\n".join(f"{i % 2}," + ",".join(["0"] * 16) for i in range(20))
    path.write_text("label," + ",".join(f"p{i}" for i in range(16)) + "\n" + good + "\n" + row + "\n")
    assert message in error_of(capsys, "data", str(path))


# ---------------------------------------------------------------- NPZ


def test_an_npz_as_keras_datasets_gives_it(digits, tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=digits["x_train"], y_train=digits["y_train"], x_test=digits["x_test"],
             y_test=digits["y_test"][:, None], class_names=np.array([f"n{i}" for i in range(10)]))
    data = load_dataset(str(path))
    assert data.class_names == [f"n{i}" for i in range(10)] and len(data.y_test) == len(digits["y_test"])
    assert np.allclose(data.x_test[..., 0], digits["x_test"] / 255)


@pytest.mark.parametrize("arrays, message", [
    ({"x_train": np.zeros((10, 8, 8), np.uint8)}, "lacks y_train (it has x_train)"),
    ({"x_train": np.zeros((10, 8, 8), np.float32) + 3, "y_train": np.zeros(10, np.int64)}, "floats in [0, 1]"),
    ({"x_train": np.zeros((10, 3, 8, 8), np.uint8), "y_train": np.zeros(10, np.int64)}, "channels last"),
    ({"x_train": np.zeros((10, 8, 8), np.uint8), "y_train": np.zeros(9, np.int64)}, "10 images but y_train 9 labels"),
    ({"x_train": np.zeros((10, 8, 8), np.uint8), "y_train": np.zeros(10, np.int64)},
     "has 1 class (0); a classifier needs at least 2 classes"),
])
def test_bad_npz_files_are_named(tmp_path, capsys, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    assert message in error_of(capsys, "data", str(tmp_path / "bad.npz"))


def test_labels_out_of_range_of_the_class_names_are_refused(digits, tmp_path, capsys):
    np.savez(tmp_path / "x.npz", x_train=digits["x_train"], y_train=digits["y_train"])
    message = error_of(capsys, "data", str(tmp_path / "x.npz"), "--class-names", "a,b,c")
    assert "has label 9, but there are 3 classes (0..2)" in message


# ---------------------------------------------------------------- IDX folders of other datasets


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())


def test_an_emnist_style_idx_folder_with_class_names(digits, tmp_path):
    folder = tmp_path / "letters"
    folder.mkdir()
    for split in ("train", "test"):
        write_idx(folder / f"emnist-letters-{split}-images-idx3-ubyte", digits[f"x_{split}"])
        write_idx(folder / f"emnist-letters-{split}-labels-idx1-ubyte", digits[f"y_{split}"])
    names = list("abcdefghij")
    data = load_dataset(str(folder), class_names=names)
    assert data.class_names == names and data.style == "digits" and len(data.y_test) == len(digits["y_test"])
