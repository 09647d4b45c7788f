"""`cnnlab predict` on files and folders: table, JSON, CSV, figures, a score for class folders, bad files."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.evaluation import predict
from cnnlab.inspection import load_model

N = 60


def save_png(path, image01):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.asarray(image01).squeeze() * 255).astype(np.uint8)).save(path)


def photo(image01, seed):
    """An MNIST-style digit as a user would photograph it: dark on light paper, 5x larger, off-centre."""
    rng = np.random.default_rng(seed)
    ink = Image.fromarray(np.round(image01.squeeze() * 255).astype(np.uint8)).resize((140, 140), Image.BILINEAR)
    page = np.full((300, 400), 235, np.uint8)
    top, left = rng.integers(0, 160), rng.integers(0, 260)
    page[top:top + 140, left:left + 140] = 235 - (np.asarray(ink, np.float32) * 0.85).astype(np.uint8)
    return Image.fromarray(page)


@pytest.fixture(scope="module")
def digits_test():
    data = load_dataset("digits")
    return data.x_test[:N], data.y_test[:N]


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory, digits_test):
    """The digits test images as 28x28 PNGs in class sub-folders, with one broken file and one non-image."""
    root = tmp_path_factory.mktemp("labelled") / "digits"
    x, y = digits_test
    for i, (image, label) in enumerate(zip(x, y)):
        save_png(root / str(label) / f"{i:03d}.png", image)
    (root / "3" / "broken.png").write_bytes(next((root / "3").glob("*.png")).read_bytes()[:60])
    (root / "README.txt").write_text("not an image: not looked at\n")
    return root


def run(capsys, *args):
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_class_folders_are_scored_exactly_as_the_model_scores_the_arrays(digits_run, labelled_folder, digits_test,
                                                                          capsys):
    code, out, err = run(capsys, digits_run / "best.keras", labelled_folder, "--no-preprocess", "--json")
    assert code == 1 and "1 of 61 files could not be predicted" in err
    report = json.loads(out)
    x, y = digits_test
    expected = predict(load_model(digits_run / "best.keras"), x).argmax(axis=1)
    results = {r["file"]: r for r in report["results"]}
    assert len(results) == N + 1
    broken = results[str(labelled_folder / "3" / "broken.png")]
    assert broken["label"] == "3" and broken["prediction"] is None and "truncated or corrupt" in broken["error"]
    for i, label in enumerate(y):
        row = results[str(labelled_folder / str(label) / f"{i:03d}.png")]
        assert row["label"] == str(label) and row["prediction"] == str(expected[i]) and row["error"] is None
        assert row["top"][0]["class"] == row["prediction"] and len(row["top"]) == 3
        assert row["top"][0]["probability"] >= row["top"][1]["probability"] >= row["top"][2]["probability"]
    score = report["score"]
    assert score["images"] == N and score["accuracy"] == pytest.approx(np.mean(expected == y))
    confusion = np.array(score["confusion_matrix"])
    assert confusion.shape == (10, 10) and (confusion.sum(axis=1) == np.bincount(y, minlength=10)).all()
    assert (confusion.sum(axis=0) == np.bincount(expected, minlength=10)).all()
    assert report["class_names"] == [str(d) for d in range(10)]  # from the run's config.json (dataset digits)


def test_table_and_csv(digits_run, labelled_folder, capsys):
    code, out, _ = run(capsys, digits_run / "best.keras", labelled_folder, "--no-preprocess")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["file", "true", "prediction", "probability", "top-3"]
    broken_line = next(line for line in lines if "broken.png" in line)
    assert "error: cannot be decoded" in broken_line
    accuracy_line = next(line for line in lines if line.startswith("Accuracy:"))
    assert f"of {N} images in class folders" in accuracy_line
    assert any(line.startswith("true \\ predicted") for line in lines)

    code, out, _ = run(capsys, digits_run / "best.keras", labelled_folder, "--no-preprocess", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 1 and len(rows) == N + 1
    assert [r["error"] != "" for r in rows].count(True) == 1
    good = [r for r in rows if not r["error"]]
    assert all(r["top"].split()[0].startswith(r["prediction"] + ":") for r in good)


def test_photos_are_readable_only_with_preprocessing(digits_run, digits_test, tmp_path, capsys):
    x, y = digits_test
    for i, (image, label) in enumerate(zip(x, y)):
        folder = tmp_path / "photos" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        photo(image, i).save(folder / f"{i:03d}.jpg", quality=90)
    accuracy = {}
    for flag in ([], ["--no-preprocess"]):
        code, out, _ = run(capsys, digits_run / "best.keras", tmp_path / "photos", "--json", *flag)
        assert code == 0
        accuracy[bool(flag)] = json.loads(out)["score"]["accuracy"]
    assert accuracy[False] > 0.5 and accuracy[False] > accuracy[True] + 0.3, accuracy


def test_show_writes_a_figure_per_image(digits_run, digits_test, tmp_path, capsys):
    x, _ = digits_test
    files = []
    for i in range(3):
        files.append(tmp_path / f"photo{i}.png")
        photo(x[i], i).save(files[-1])
    code, out, err = run(capsys, digits_run / "best.keras", *files, "--show", tmp_path / "figures")
    assert code == 0 and "Figures:" in err
    figures = sorted((tmp_path / "figures").glob("*.png"))
    assert [f.name for f in figures] == ["000_photo0.png", "001_photo1.png", "002_photo2.png"]
    with Image.open(figures[0]) as fig:
        assert fig.width > 400 and fig.height > 150


def test_missing_and_bad_files_fail_alone(digits_run, digits_test, tmp_path, capsys):
    good = tmp_path / "good.png"
    save_png(good, digits_test[0][0])
    (tmp_path / "empty.png").write_bytes(b"")
    code, out, err = run(capsys, digits_run / "best.keras", good, tmp_path / "missing.png", tmp_path / "empty.png",
                         "--no-preprocess", "--json")
    results = json.loads(out)["results"]
    assert code == 1 and "2 of 3 files" in err
    assert results[0]["error"] is None and results[0]["prediction"] is not None
    assert "file not found" in results[1]["error"] and "not an image" in results[2]["error"]


@pytest.mark.parametrize("setup,args,message", [
    (lambda d: (d / "cats").mkdir(), [], "must be named after a class"),
    (lambda d: None, [], "no image files"),
    (lambda d: None, ["--top", "0"], "--top must be at least 1"),
])
def test_usage_errors_exit_2(digits_run, tmp_path, capsys, setup, args, message):
    folder = tmp_path / "in"
    folder.mkdir()
    setup(folder)
    code, _, err = run(capsys, digits_run / "best.keras", folder, *args)
    assert code == 2 and message in err


def test_inspect_an_image_file(digits_run, digits_test, tmp_path):
    photo(digits_test[0][0], 0).save(tmp_path / "mine.jpg")
    assert main(["inspect", str(digits_run / "best.keras"), "--image", str(tmp_path / "mine.jpg"),
                 "--out", str(tmp_path / "figures")]) == 0
    names = sorted(p.stem for p in (tmp_path / "figures").glob("*.png"))
    assert {"feature_maps_input", "feature_maps_conv_1", "feature_maps_conv_2"} <= set(names)
    assert main(["inspect", str(digits_run / "best.keras"), "--image", str(tmp_path / "nope.png")]) == 2
