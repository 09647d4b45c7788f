"""cnnlab export: each format made by Keras's model.export, run in its own runtime (onnxruntime, TensorFlow's
SavedModel loader, the LiteRT interpreter) without Keras, and compared with Keras on the digits test images."""

import importlib.util
import json

import keras
import numpy as np
import pytest

import cnnlab
from cnnlab import export
from cnnlab.cli import main
from cnnlab.errors import ModelFileError
from conftest import missing

FORMATS = ["onnx", "saved_model", "litert"]
NAMES = {"onnx": "digits.onnx", "saved_model": "digits_saved_model", "litert": "digits.tflite"}


@pytest.fixture(scope="module", autouse=True)
def export_tools():
    """The converter and the runtimes of cnnlab[export] (make test installs them with the dev extra)."""
    absent = [name for name in ("tf2onnx", "onnxruntime", "ai_edge_litert") if importlib.util.find_spec(name) is None]
    if absent:
        missing(f"{', '.join(absent)} not installed: pip install 'cnnlab[export]'")


@pytest.fixture(scope="module")
def digits():
    return cnnlab.load_dataset("digits")


@pytest.fixture(scope="module")
def rescaling_model(digits, tmp_path_factory):
    """A small classifier that takes 0..255 pixels (Rescaling first, as Keras's tutorials write it), trained a
    little so that its classes differ from image to image, saved and loaded back as a user's file would be."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(8, 3, strides=2, activation="relu"), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits.x_train * 255, digits.y_train, epochs=2, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("export") / "digits.keras"
    model.save(path)
    return path


@pytest.mark.parametrize("format", FORMATS)
def test_export_runs_in_its_runtime_as_keras_does(rescaling_model, digits, tmp_path, format):
    model = cnnlab.load_model(rescaling_model, compile=False)
    images, labels = digits.x_test[:200], digits.y_test[:200]
    check = cnnlab.export_model(model, format, tmp_path / NAMES[format], verify_with=(images, labels))

    assert check["images"] == 200 and check["max_abs_difference"] < 1e-4 and check["top1_agreement"] == 1.0
    assert check["exported_accuracy"] == check["keras_accuracy"] > 0.5  # trained: far from chance (0.1)
    assert check["input"] == {"shape": [None, 28, 28, 1], "dtype": "float32", "pixels": "0..255",
                              "why": check["input"]["why"]} and "Rescaling" in check["input"]["why"]
    assert json.loads((tmp_path / (NAMES[format] + ".json")).read_text()) == {k: v for k, v in check.items()
                                                                               if k != "path"}
    # Independently of the verification: the file, in its runtime, takes 0..255 pixels as the Keras model does
    run = export.runtime(format, tmp_path / NAMES[format])
    pixels = np.ascontiguousarray(images[:32] * 255, np.float32)
    np.testing.assert_allclose(run(pixels), model.predict(pixels, verbose=0), atol=1e-5)
    assert np.abs(run(pixels / 255) - run(pixels)).max() > 0.05  # the preprocessing is inside the file


def test_mixed_precision_model_exports_a_float32_copy(digits, tmp_path):
    """ONNX Runtime cannot run bfloat16 convolutions: exported as it is, the file would not load."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, dtype="mixed_bfloat16"),
                              keras.layers.Flatten(dtype="mixed_bfloat16"),
                              keras.layers.Dense(10, activation="softmax")])
    check = cnnlab.export_model(model, "onnx", tmp_path / "mixed.onnx", verify_with=(digits.x_test[:50], None))
    assert check["precision"] == "float32 (a copy of the mixed_bfloat16 model)"
    assert check["max_abs_difference"] < 1e-4 and "exported_accuracy" not in check
    assert model.layers[0].dtype_policy.name == "mixed_bfloat16"  # the caller's model is left as it was


@pytest.mark.parametrize("format", ["onnx", "saved_model"])
def test_failed_export_keeps_the_old_file_and_leaves_no_temporaries(rescaling_model, digits, tmp_path,
                                                                    monkeypatch, format):
    model = cnnlab.load_model(rescaling_model, compile=False)
    target = tmp_path / NAMES[format]
    cnnlab.export_model(model, format, target)
    before = export.size_of(target)

    def wrong_runtime(format, path):  # a runtime that disagrees with Keras, as a broken conversion would
        return lambda batch: np.eye(10, dtype=np.float32)[np.zeros(len(batch), int)]

    monkeypatch.setattr(export, "runtime", wrong_runtime)
    with pytest.raises(ModelFileError, match="disagrees with Keras.*nothing was written"):
        cnnlab.export_model(model, format, target, verify_with=(digits.x_test[:20], None))
    assert export.size_of(target) == before
    assert "images" not in json.loads(export.record_path(target).read_text())  # the first export's record
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, target.name + ".json"])


def test_converter_failing_midway_leaves_nothing_under_the_name(rescaling_model, tmp_path, monkeypatch):
    model = cnnlab.load_model(rescaling_model, compile=False)

    def half_written(self, filepath, **kwargs):  # a converter that dies after writing part of its file
        with open(filepath, "wb") as f:
            f.write(b"TFL3 half")
        raise RuntimeError("converter crashed\nwith a long traceback")

    monkeypatch.setattr(keras.Model, "export", half_written)
    with pytest.raises(ModelFileError, match=r"could not export the model to LiteRT \(TensorFlow Lite\) "
                                             r"\(converter crashed\)$"):
        cnnlab.export_model(model, "litert", tmp_path / "digits.tflite")
    assert not list(tmp_path.iterdir())


def test_cli_exports_and_verifies_on_the_test_set(rescaling_model, tmp_path, capsys):
    out = tmp_path / "model.tflite"
    assert main(["export", str(rescaling_model), "--format", "litert", "--dataset", "digits", "--images", "100",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Exported: {out}" in printed and "in 0..255" in printed and "on 100 test images of digits" in printed
    assert "top-1 agreement 100.00%" in printed
    assert json.loads(export.record_path(out).read_text())["runtime"].startswith("ai_edge_litert ")


@pytest.mark.parametrize("argv, says", [
    (["--format", "litert", "--out", "{tmp}/x.onnx"], "must end in .tflite"),
    (["--format", "onnx", "--images", "0", "--out", "{tmp}/x.onnx"], "--images must be at least 1"),
    (["--format", "saved_model", "--out", "{tmp}"], "a folder that is not a SavedModel is there"),
])
def test_cli_refuses_bad_requests_in_one_line(rescaling_model, tmp_path, capsys, argv, says):
    (tmp_path / "notes.txt").write_text("mine")  # a folder of the user's own, never replaced
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    assert main(["export", str(rescaling_model), "--dataset", "digits", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_missing_extra_is_named(rescaling_model, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert main(["export", str(rescaling_model), "--format", "onnx", "--dataset", "digits",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.strip() == ("cnnlab: error: exporting to ONNX needs onnxruntime: "
                                               "pip install 'cnnlab[export]'")
    assert not list(tmp_path.iterdir())
