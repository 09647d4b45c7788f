"""`cnnlab predict` and the Classifier on models other than 28x28 grey digit models: a colour run's model (32x32 RGB,
style "photos"), the same model outside its run, and a plain Keras model that rescales 0..255 pixels itself."""

import csv
import io
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from image_data import DIGIT_NAMES, digit_arrays, write_class_folders
from PIL import Image, ImageDraw, ImageOps
from test_predict_cli import run

from cnnlab.prediction import Classifier


def pixels(path) -> np.ndarray:
    """A colour image file read by PIL alone, as (H, W, 3) floats in [0, 1]: what "as it is" means."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), np.float32) / 255


def files_of(folder):
    """[(path, class index)] of a folder of d0/ ... d9/ class folders."""
    return [(path, label) for label, name in enumerate(DIGIT_NAMES) for path in sorted((folder / name).glob("*.png"))]


@pytest.fixture(scope="module")
def colour_model(colour_run):
    return keras.saving.load_model(colour_run / "best.keras", compile=False)


def test_a_colour_run_predicts_a_labelled_folder_as_it_is(colour_run, colour_folder, colour_model, capsys):
    code, out, err = run(capsys, colour_run / "best.keras", colour_folder / "test", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["class_names"] == DIGIT_NAMES and report["style"] == "photos"
    assert report["image_shape"] == [32, 32, 3] and report["preprocess"] is False
    found = files_of(colour_folder / "test")
    expected = colour_model.predict(np.stack([pixels(path) for path, _ in found]), verbose=0).argmax(axis=1)
    rows = {row["file"]: row for row in report["results"]}
    assert len(rows) == len(found) == report["score"]["images"]
    for (path, label), predicted in zip(found, expected):
        assert rows[str(path)]["label"] == DIGIT_NAMES[label]
        assert rows[str(path)]["prediction"] == DIGIT_NAMES[predicted], path
    accuracy = report["score"]["accuracy"]
    assert accuracy == pytest.approx(np.mean(expected == [label for _, label in found]))
    assert accuracy == pytest.approx(json.loads((colour_run / "metrics.json").read_text())["test_accuracy"])
    assert accuracy > 0.3, f"chance is 0.1; the colour run's model scores {accuracy:.1%}"


def test_table_csv_and_figures_of_a_colour_model(colour_run, colour_folder, tmp_path, capsys):
    folder = colour_folder / "test"
    code, out, _ = run(capsys, colour_run / "best.keras", folder, "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == len(files_of(folder))
    assert {r["label"] for r in rows} == set(DIGIT_NAMES) and {r["prediction"] for r in rows} <= set(DIGIT_NAMES)
    code, out, _ = run(capsys, colour_run / "best.keras", folder)
    lines = out.splitlines()
    assert code == 0 and any(line.startswith("Accuracy:") for line in lines)
    assert next(line for line in lines if line.startswith("true \\ predicted")).split()[-10:] == DIGIT_NAMES

    vivid = max((path for path, _ in files_of(folder)[:40]), key=lambda p: np.ptp(pixels(p), axis=-1).mean())
    code, _, err = run(capsys, colour_run / "best.keras", vivid, "--show", tmp_path / "figures")
    assert code == 0, err
    [figure] = (tmp_path / "figures").glob("*.png")
    with Image.open(figure) as img:
        shown = np.asarray(img.convert("RGB"), np.float32)
    images = shown[:, : shown.shape[1] // 2]  # "as read" and the model input; the bars of the top 3 are right
    assert np.ptp(images, axis=-1).max() > 80, "the colour image is drawn in grey"


def test_colour_images_are_resized_not_made_mnist_like(colour_run, tmp_path):
    """A dark stroke on light paper, 96x80: MNIST-like preprocessing would invert, crop and centre it."""
    classifier = Classifier.load(colour_run / "best.keras")
    assert classifier.style == "photos" and not classifier.mnist_like
    img = Image.new("RGB", (96, 80), (230, 220, 150))
    ImageDraw.Draw(img).line([(10, 10), (40, 70)], fill=(20, 40, 160), width=6)
    img.save(tmp_path / "photo.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored lying on its side: to be turned 90 degrees clockwise to be upright
    img.save(tmp_path / "phone.jpg", quality=95, exif=exif)

    def resized(image):
        return np.asarray(image.resize((32, 32), Image.Resampling.BILINEAR), np.float32) / 255

    prepared = classifier.prepare(tmp_path / "photo.png")
    assert prepared.input.shape == (32, 32, 3) and prepared.original.shape == (80, 96, 3)
    np.testing.assert_allclose(prepared.input, resized(img), atol=2 / 255)
    # the same with preprocess=False: for a photo model there is nothing else to turn off
    np.testing.assert_array_equal(classifier.prepare(tmp_path / "photo.png", preprocess=False).input, prepared.input)
    phone = classifier.prepare(tmp_path / "phone.jpg")
    assert phone.original.shape == (96, 80, 3)  # upright: 80 wide, 96 high
    with Image.open(tmp_path / "phone.jpg") as stored:
        upright = ImageOps.exif_transpose(stored)
    np.testing.assert_allclose(phone.input, resized(upright), atol=2 / 255)


def test_a_model_outside_its_run_takes_its_shape_from_itself(colour_run, colour_folder, tmp_path, capsys):
    shutil.copy(colour_run / "best.keras", tmp_path / "model.keras")
    alone = Classifier.load(tmp_path / "model.keras")
    assert alone.input.shape == (32, 32, 3) and alone.style == "photos"
    assert alone.class_names == [str(i) for i in range(10)]  # no run: no names
    images = [path for path, _ in files_of(colour_folder / "test")[::40]]
    _, out, _ = run(capsys, colour_run / "best.keras", *images, "--json")
    in_run = [row["prediction"] for row in json.loads(out)["results"]]
    code, out, err = run(capsys, tmp_path / "model.keras", *images, "--json")
    assert code == 0, err
    assert [DIGIT_NAMES[int(row["prediction"])] for row in json.loads(out)["results"]] == in_run


@pytest.fixture(scope="module")
def rescaling_model(tmp_path_factory):
    """A plain Keras model that takes 0..255 pixels, as Keras's image tutorials write them, trained briefly on the
    digits at 0..255; saved outside any run."""
    arrays = digit_arrays()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(arrays["x_train"][..., None].astype(np.float32), arrays["y_train"], epochs=3, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("rescaling") / "rescaling.keras"
    model.save(path)
    return path, model, arrays


def test_a_model_that_rescales_0_to_255_itself_gets_0_to_255(rescaling_model, tmp_path, capsys):
    path, model, arrays = rescaling_model
    x, y = arrays["x_test"][:60], arrays["y_test"][:60]
    raw = model.predict(x[..., None].astype(np.float32), verbose=0)
    classifier = Classifier.load(path)
    assert classifier.input.pixel_scale == 255.0 and classifier.mnist_like
    np.testing.assert_allclose(classifier.probabilities(x[..., None] / 255), raw, atol=1e-5)
    assert np.mean(raw.argmax(axis=1) == y) > 0.5  # trained: the comparison means something

    folder = write_class_folders(tmp_path / "labelled", x, y, [str(i) for i in range(10)])
    code, out, err = run(capsys, path, folder, "--no-preprocess", "--json")
    assert code == 0, err
    report = json.loads(out)
    for row in report["results"]:
        index = int(Path(row["file"]).stem)  # write_class_folders names the files by their index
        assert row["prediction"] == str(raw[index].argmax())
        assert row["probability"] == pytest.approx(raw[index].max(), abs=1e-5)
    assert report["score"]["accuracy"] == pytest.approx(np.mean(raw.argmax(axis=1) == y))
