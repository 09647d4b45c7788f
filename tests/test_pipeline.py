"""The whole seed pipeline through the CLI, on real data: build, train, score and show, look inside."""

import csv
import gzip
import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw
from robustness_helpers import write_idx_dataset

from cnnlab.cli import main
from cnnlab.config import make_config
from cnnlab.data import load_dataset
from cnnlab.inspection import untrained_kernel
from cnnlab.pipeline import train_run
from cnnlab.plots import learning_curves

FIGURES = ["learning_curves", "predictions", "filters_conv_1", "filters_conv_2", "feature_maps_input",
           "feature_maps_conv_1", "feature_maps_conv_2"]


def test_run_writes_every_promised_file(digits_run):
    for name in ["config.json", "summary.txt", "history.csv", "best.keras", "metrics.json"]:
        assert (digits_run / name).stat().st_size > 0, name
    for name in FIGURES:
        with Image.open(digits_run / "figures" / f"{name}.png") as img:
            img.load()
            assert img.width > 100 and img.height > 100, name
    config = json.loads((digits_run / "config.json").read_text())
    assert config["seed"] == 42 and config["dataset"] == "digits" and config["epochs"] == 2
    metrics = json.loads((digits_run / "metrics.json").read_text())
    rows = list(csv.DictReader((digits_run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2] == list(range(1, metrics["epochs_run"] + 1))
    assert 0.5 < metrics["val_accuracy"] <= 1 and 0.5 < metrics["test_accuracy"] <= 1
    assert metrics["sizes"] == {"train": 1149, "validation": 288, "test": 360}
    assert "333,526" in (digits_run / "summary.txt").read_text()


def test_best_model_reloads_in_plain_keras_with_identical_predictions(digits_run):
    data = load_dataset("digits")
    plain = keras.models.load_model(digits_run / "best.keras")
    probabilities = plain.predict(data.x_test, verbose=0)
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert np.mean(probabilities.argmax(1) == data.y_test) == pytest.approx(metrics["test_accuracy"])
    again = keras.models.load_model(digits_run / "best.keras").predict(data.x_test[:16], verbose=0)
    np.testing.assert_array_equal(again, probabilities[:16])


def test_best_model_is_the_best_validation_epoch(digits_run):
    rows = list(csv.DictReader((digits_run / "history.csv").open()))
    best = min(rows, key=lambda r: float(r["val_loss"]))
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert metrics["best_epoch"] == int(best["epoch"])
    assert metrics["val_loss"] == pytest.approx(float(best["val_loss"]), rel=1e-3)


def test_early_stopping_really_stops(tmp_path):
    # patience 0 and a min_delta no epoch can beat: training ends after the second epoch of ten
    code = main(["train", "--dataset", "digits", "--epochs", "10", "--patience", "0", "--min-delta", "5",
                 "--out", str(tmp_path), "--name", "es"])
    assert code == 0
    metrics = json.loads((tmp_path / "es" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["stopped_early"] and metrics["best_epoch"] == 1
    assert "early stopping" in metrics["stop_reason"]


def test_run_predicts_the_test_set_once(tmp_path, monkeypatch):
    """The report reuses the scores' predictions (with test-time augmentation, an ensemble's would cost seconds)."""
    from cnnlab import make_config, pipeline, report

    calls = []
    views = pipeline.view_probabilities
    monkeypatch.setattr(pipeline, "view_probabilities", lambda *args, **kwargs: calls.append(1) or views(*args, **kwargs))
    monkeypatch.setattr(report, "view_probabilities",
                        lambda *args, **kwargs: pytest.fail("the report predicted the test set again"))
    run = pipeline.run(make_config(dataset="digits", epochs=1, limit_train=200), out=tmp_path, name="run", verbose=0)
    assert len(calls) == 1 and run.report.is_file()


def test_build_prints_the_model_without_training(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["build"]) == 0
    seed = capsys.readouterr().out
    for shape in ("(None, 28, 28, 32)", "(None, 7, 7, 64)", "(None, 3136)", "(None, 100)", "(None, 10)"):
        assert shape in seed, shape
    assert "Total params: 333,526" in seed and "Ensemble" not in seed
    assert main(["build", "--recipe", "best", "--conv-filters", "8,16"]) == 0
    best = capsys.readouterr().out
    assert "(None, 7, 7, 16)" in best and "Ensemble: the mean of 2 such networks' probabilities (seeds 42..43)" in best
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_run_records_its_data_folder_absolute_and_resumes_from_any_folder(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "data", n_train=200)
    monkeypatch.chdir(tmp_path)
    train_run(make_config(dataset="mnist", data_dir="data", epochs=1), out="runs", name="run", verbose=0)
    run = tmp_path / "runs" / "run"
    assert json.loads((run / "config.json").read_text())["data_dir"] == str((tmp_path / "data").resolve())
    monkeypatch.chdir(tmp_path / "runs")
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert main(["evaluate", str(run / "best.keras")]) == 0


def test_learning_curves_draw_a_plain_keras_history():
    """A notebook passes fit's History, or its .history (lists, no epoch column), or arrays; loss alone draws one
    panel."""
    data = load_dataset("digits", limit_train=200)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    fitted = model.fit(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val), epochs=2, verbose=0)
    history = fitted.history
    for given in (history, {column: np.asarray(values) for column, values in history.items()}, fitted):
        loss_ax, accuracy_ax = learning_curves(given, best_epoch=2).axes
        assert list(loss_ax.lines[0].get_xdata()) == [1, 2]
        np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), history["loss"])
        np.testing.assert_allclose(accuracy_ax.lines[1].get_ydata(), history["val_accuracy"])
    assert len(learning_curves({"loss": history["loss"]}).axes) == 1


def test_learning_curves_of_an_ensemble_say_whose_best_epoch_each_line_is():
    history = {"member": [1, 1, 2, 2], "epoch": [1, 2, 1, 2], "loss": [0.9, 0.5, 0.8, 0.6]}
    legend = [text.get_text() for text in learning_curves(history, [2, 2]).axes[0].get_legend().get_texts()]
    assert legend[-1] == "best epoch (2, networks 1 and 2, by val_loss)"
    legend = [text.get_text() for text in learning_curves(history, [1, 2]).axes[0].get_legend().get_texts()]
    assert legend[-2:] == ["best epoch (1, network 1, by val_loss)", "best epoch (2, network 2, by val_loss)"]


def test_evaluate_and_inspect_commands(digits_run, tmp_path):
    assert main(["evaluate", str(digits_run / "best.keras"), "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "evaluation.json").read_text())
    metrics = json.loads((digits_run / "metrics.json").read_text())
    assert result["dataset"] == "digits" and result["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert main(["inspect", str(digits_run / "best.keras"), "--index", "5", "--pooling", "--out", str(tmp_path)]) == 0
    for name in ["filters_conv_1", "feature_maps_conv_2", "feature_maps_pool_2"]:
        assert (tmp_path / f"{name}.png").exists()


def plain_keras_model():
    """A model as a plain Keras script (like the seed notebook) would write it, no cnnlab involved."""
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", padding="same"),
        keras.layers.MaxPool2D(2),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    data = load_dataset("digits")
    model.fit(data.x_train[:256], data.y_train[:256], epochs=1, verbose=0)
    return model


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_inspect_a_model_written_by_plain_keras(tmp_path, suffix):
    path = tmp_path / f"plain{suffix}"
    plain_keras_model().save(path)
    out = tmp_path / "figures"
    assert main(["inspect", str(path), "--dataset", "digits", "--out", str(out)]) == 0
    names = sorted(p.stem for p in out.glob("*.png"))
    conv_names = [n for n in names if n.startswith("filters_")]
    assert len(conv_names) == 2 and len([n for n in names if n.startswith("feature_maps_conv")]) == 2
    assert main(["evaluate", str(path), "--dataset", "digits", "--out", str(out)]) == 0


def test_a_model_without_conv_layers_is_scored_and_predicted_but_not_looked_inside(tmp_path, capsys):
    data = load_dataset("digits", limit_train=200)
    mlp = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    mlp.compile("adam", "sparse_categorical_crossentropy")
    mlp.fit(data.x_train, data.y_train, epochs=1, verbose=0)
    mlp.save(tmp_path / "mlp.keras")
    Image.fromarray(np.uint8(255 * data.x_test[0, :, :, 0])).save(tmp_path / "digit.png")
    assert main(["evaluate", str(tmp_path / "mlp.keras"), "--dataset", "digits"]) == 0
    assert main(["predict", str(tmp_path / "mlp.keras"), str(tmp_path / "digit.png"), "--no-preprocess"]) == 0
    assert "Test (" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "mlp.keras"), "--dataset", "digits"]) == 2
    assert "model has no conv layer (Conv2D, SeparableConv2D, DepthwiseConv2D), so it has no filters or feature maps to show" in capsys.readouterr().err


def test_untrained_filters_come_from_each_layer_own_initializer():
    zeros, random = keras.layers.Conv2D(4, 3, kernel_initializer="zeros"), keras.layers.Conv2D(4, 3)
    for layer in (zeros, random):
        layer.build((None, 28, 28, 1))
    assert untrained_kernel(zeros).shape == (3, 3, 1, 4) and not untrained_kernel(zeros).any()  # Zeros takes no seed
    np.testing.assert_array_equal(untrained_kernel(random), untrained_kernel(random))  # seeded: the same each time
    assert untrained_kernel(random).std() > 0


@pytest.mark.parametrize("command,flag", [
    (["evaluate", "{model}", "--out", "{blocked}"], "--out"),
    (["inspect", "{model}", "--out", "{blocked}"], "--out"),
    (["report", "{model}", "--out", "{blocked}/page.html"], "--out"),
    (["report", "{run}", "--out", "{blocked}/page.html"], "--out"),
    (["predict", "{model}", "{image}", "--show", "{blocked}"], "--show"),
    (["compare", "{run}", "--html", "{blocked}/page.html"], "--html"),
])
def test_an_unwritable_output_is_refused_before_the_work(digits_run, tmp_path, capsys, command, flag):
    blocker = tmp_path / "a-file"  # tests run as root, where chmod does not stop writes: nothing can be under a file
    blocker.write_text("not a folder")
    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    names = {"model": digits_run / "best.keras", "run": digits_run, "image": tmp_path / "digit.png",
             "blocked": blocker / "out"}
    assert main([part.format(**names) for part in command]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"cnnlab: error: cannot write to {blocker / 'out'}: Not a directory; choose " \
        f"another {flag} folder"
    assert "Test (" not in captured.out and "[1/" not in captured.out  # nothing scored or drawn first


def test_two_models_in_one_folder_keep_their_own_figures(tmp_path, digits_run):
    """Without --out, a plain model's figures go beside it under its own name; a run's best model, into the run's."""
    for name in ("first.keras", "second.h5"):
        plain_keras_model().save(tmp_path / name)
        assert main(["evaluate", str(tmp_path / name), "--dataset", "digits"]) == 0
    plain_keras_model().save(tmp_path / "first.h5")  # the same name, the other format
    assert main(["evaluate", str(tmp_path / "first.h5"), "--dataset", "digits"]) == 0
    for folder, name in (("first", "first.keras"), ("second-h5", "second.h5"), ("first-h5", "first.h5")):
        evaluation = json.loads((tmp_path / f"{folder}-figures" / "evaluation.json").read_text())
        assert evaluation["model"] == str(tmp_path / name)
    assert not (tmp_path / "figures").exists()
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "best.keras"):
        shutil.copy(digits_run / name, run / name)
    assert main(["evaluate", str(run / "best.keras")]) == 0  # the run's dataset, into the run's figures folder
    assert json.loads((run / "figures" / "evaluation.json").read_text())["dataset"] == "digits"
    seven = Image.new("L", (56, 56), 255)
    ImageDraw.Draw(seven).line([(12, 10), (44, 10), (24, 48)], fill=0, width=5)
    seven.save(tmp_path / "my7.png")
    assert main(["inspect", str(run / "best.keras"), "--image", str(tmp_path / "my7.png")]) == 0
    assert (run / "figures" / "my7" / "feature_maps_conv_1.png").is_file()  # the run's own maps stay the test image's
    assert not (run / "figures" / "feature_maps_conv_1.png").exists()


def test_real_mnist_as_the_seed_splits_it(mnist_dir):
    data = load_dataset("mnist", data_dir=mnist_dir)
    assert data.sizes() == {"train": 48000, "validation": 12000, "test": 10000}
    assert data.x_train.shape == (48000, 28, 28, 1) and data.x_train.dtype == np.float32
    assert 0.0 == data.x_test.min() and data.x_test.max() == 1.0
    assert abs(data.x_test.mean() - 0.1325) < 0.001  # MNIST's known test-set mean after /255
    # stratified: every class keeps its share of the training set in the validation set
    train_share = np.bincount(data.y_train) / len(data.y_train)
    val_share = np.bincount(data.y_val) / len(data.y_val)
    assert np.abs(train_share - val_share).max() < 0.001


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, timeout=300, **kwargs)


def error_lines(result):
    """stderr without TensorFlow's start-up chatter."""
    return [line for line in result.stderr.splitlines()
            if line.startswith("cnnlab") or "Traceback" in line or "Error" in line]


def idx_file(path, magic=b"\x00\x00\x08\x03", dims=(2, 28, 28), data_len=None):
    header = magic + b"".join(int(d).to_bytes(4, "big") for d in dims)
    data = bytes((data_len if data_len is not None else int(np.prod(dims))))
    with gzip.open(path, "wb") as f:
        f.write(header + data)


@pytest.fixture
def bad_idx_dirs(tmp_path):
    dirs = {}
    for case in ("wrong_magic", "truncated"):
        folder = tmp_path / case
        folder.mkdir()
        for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
            idx_file(folder / f"{stem}.gz")
        for stem in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
            idx_file(folder / f"{stem}.gz", magic=b"\x00\x00\x08\x01", dims=(2,))
        if case == "wrong_magic":
            idx_file(folder / "train-images-idx3-ubyte.gz", magic=b"\x08\x03\x00\x00")
        else:
            idx_file(folder / "train-images-idx3-ubyte.gz", data_len=1000)
        dirs[case] = folder
    return dirs


@pytest.mark.parametrize("case,args,message", [
    ("missing model", ["inspect", "{tmp}/nope.keras"], "model file not found"),
    ("text as model", ["evaluate", "{tmp}/notes.keras"], "not a Keras model file"),
    ("unknown dataset", ["run", "--dataset", "cifra"], "unknown dataset 'cifra' (did you mean cifar10?)"),
    ("missing data dir", ["train", "--dataset", "mnist", "--data-dir", "{tmp}/nowhere"], "no mnist IDX files"),
    ("wrong magic", ["train", "--dataset", "mnist", "--data-dir", "{wrong_magic}"], "wrong magic number"),
    ("truncated idx", ["train", "--dataset", "mnist", "--data-dir", "{truncated}"], "truncated"),
])
def test_bad_input_ends_with_one_line_and_exit_2(tmp_path, bad_idx_dirs, case, args, message):
    (tmp_path / "notes.keras").write_text("these are my notes, not a model\n")
    args = [a.format(tmp=tmp_path, **bad_idx_dirs) for a in args]
    result = cli(*args, "--out", str(tmp_path / "runs")) if args[0] in ("run", "train") else cli(*args)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # not even an empty run directory, which `compare runs/*` would trip on
