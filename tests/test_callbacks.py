"""cnnlab.callbacks: a user's own model.fit recorded as a run (RunRecorder), TensorBoard event files and MLflow runs,
read back with TensorBoard's and MLflow's own readers."""

import csv
import io
import json
import sys

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import cnnlab
from cnnlab.callbacks.recorder import arrays_of
from cnnlab.cli import main
from cnnlab.errors import CnnlabError, DataError
from conftest import missing

BATCH = 40


def require(package):
    try:
        __import__(package)
    except ImportError:
        missing(f"{package} is not installed (pip install 'cnnlab[{package}]')")


def digit_pixels():
    """scikit-learn's digits as a user's own script has them: uint8 0..255 pixels, (N, 8, 8, 1), labels 0..9."""
    digits = load_digits()
    return np.uint8(np.round(digits.images * 255 / 16))[..., None], digits.target


def users_model(rescale=True, metrics=("accuracy",)):
    """A user's tiny model, written without cnnlab; with `rescale` it takes 0..255 pixels (Rescaling first)."""
    layers = [keras.layers.Rescaling(1 / 255)] if rescale else []
    # named as Keras names them in a fresh process (a test worker has made other Conv2D layers before)
    convs = [keras.layers.Conv2D(8, 3, activation="relu", name=name) for name in ("conv2d", "conv2d_1")]
    model = keras.Sequential([keras.Input((8, 8, 1)), *layers, *convs, keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")], name="own_cnn")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=list(metrics))
    return model


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One fit of the user's own model, its test set a tf.data.Dataset, recorded with TensorBoard and MLflow."""
    require("tensorboard")
    require("mlflow")
    import tensorflow as tf

    x, y = digit_pixels()
    keras.utils.set_random_seed(1)
    model = users_model()
    runs = tmp_path_factory.mktemp("runs")
    test = tf.data.Dataset.from_tensor_slices((x[1500:], y[1500:])).batch(64)
    recorder = cnnlab.RunRecorder(runs / "own", test_data=test, tensorboard=True, mlflow=True)
    keras_history = model.fit(x[:1200], y[:1200], validation_data=(x[1200:1500], y[1200:1500]), epochs=2,
                              batch_size=BATCH, callbacks=[recorder], verbose=0).history
    return {"run": runs / "own", "runs": runs, "keras_history": keras_history, "x": x, "y": y, "model": model,
            "recorder": recorder}


def test_a_recorded_fit_is_a_run_directory_with_what_the_fit_was(recorded):
    run = cnnlab.RunDir(recorded["run"])
    config = run.read_config()
    assert (config.recorded_model, config.loss, config.optimizer, config.batch_size, config.epochs) == \
        ("own_cnn", "sparse_categorical_crossentropy", "adam", BATCH, 2)
    assert (config.learning_rate, config.image_size, config.color_mode, config.monitor) == \
        (0.003, "8x8", "grayscale", "val_accuracy")
    assert config.class_names == [str(k) for k in range(10)]
    data = json.loads(run.data.read_text())
    assert data["sizes"] == {"train": 1200, "validation": 300, "test": 297} and data["image_shape"] == [8, 8, 1]
    history = run.read_history()
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert history[key] == pytest.approx(recorded["keras_history"][key], rel=1e-5), key
    assert history["epoch"] == [1, 2] and history["learning_rate"] == pytest.approx([0.003, 0.003])
    for name in ("summary.txt", "best.keras", "report.html", "figures/learning_curves.png",
                 "figures/predictions.png", "figures/filters_conv2d.png"):
        assert (run.path / name).stat().st_size > 0, name


def test_the_best_model_is_kept_and_fed_as_the_user_fed_it(recorded):
    """The model takes 0..255 pixels: cnnlab's scores of best.keras (fed through feeding) equal Keras's own on the
    user's uint8 arrays, and its validation score is the best epoch's."""
    run, x, y = cnnlab.RunDir(recorded["run"]), recorded["x"], recorded["y"]
    metrics, history = run.read_metrics(), run.read_history()
    best = int(np.argmax(history["val_accuracy"])) + 1
    assert metrics["best_epoch"] == best and metrics["val_accuracy"] == pytest.approx(history["val_accuracy"][best - 1])
    model = cnnlab.load_model(run.best_model)
    _, keras_accuracy = model.evaluate(x[1500:], y[1500:], verbose=0)
    assert metrics["test_accuracy"] == pytest.approx(keras_accuracy, abs=1e-6) and metrics["test_accuracy"] > 0.3
    assert cnnlab.evaluate(model, x[1200:1500] / 255.0, y[1200:1500])["accuracy"] == \
        pytest.approx(metrics["val_accuracy"], abs=1e-6)


def test_compare_report_inspect_and_serve_take_a_recorded_run(recorded, digits_run, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from cnnlab.prediction import Classifier
    from cnnlab.serve import create_app

    run = recorded["run"]
    assert main(["compare", str(run), str(digits_run)]) == 0
    table = capsys.readouterr().out
    assert "recorded_model" in table and "own_cnn" in table and "test accuracy" in table
    page = (run / "report.html").read_text()  # report_from_run's, from the run's files, as `cnnlab report` makes it
    accuracy = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    assert "own_cnn" in page and f'data-metric="test_accuracy" data-value="{accuracy}"' in page
    assert main(["inspect", str(run / "best.keras"), "--index", "3", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "feature_maps_conv2d_1.png").exists()
    classifier = Classifier.load(run / "best.keras")
    image = Image.fromarray(recorded["x"][1500 + 3][..., 0])
    png = io.BytesIO()
    image.save(png, "PNG")
    with TestClient(create_app(classifier), raise_server_exceptions=True) as client:
        answer = client.post("/api/predict", files={"file": ("digit.png", png.getvalue(), "image/png")}).json()
    expected = classifier.model.predict(recorded["x"][1500 + 3][None], verbose=0)[0]  # the user's own feeding
    assert [p["probability"] for p in answer["probabilities"]] == pytest.approx(expected, abs=1e-5)


def event_tags(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0, "images": 0, "histograms": 0})
    events.Reload()
    return events


def test_tensorboard_has_scalars_per_epoch_histograms_and_images(recorded):
    board = recorded["run"] / "tensorboard"
    train, validation, images = (event_tags(board / part) for part in ("train", "validation", "images"))
    for events, tag in ((train, "epoch_loss"), (train, "epoch_accuracy"), (train, "epoch_learning_rate"),
                        (validation, "epoch_loss"), (validation, "epoch_accuracy")):
        assert [event.step for event in events.Tensors(tag)] == [0, 1], tag
    histograms = [tag for tag in train.Tags()["tensors"] if "kernel" in tag and "histogram" in tag]
    assert len(histograms) >= 3 and len(train.Tensors(histograms[0])) == 2
    assert set(images.Tags()["tensors"]) >= {"confusion_matrix", "filters/conv2d", "feature_maps/conv2d",
                                            "feature_maps/conv2d_1"}
    confusion = images.Tensors("confusion_matrix")
    assert [event.step for event in confusion] == [0, 1]
    png = keras.ops.convert_to_numpy(confusion[1].tensor_proto.string_val[2])  # [width, height, png]
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.width > 300 and picture.height > 150


def test_mlflow_has_params_metrics_per_epoch_scores_and_files(recorded):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{recorded['runs'] / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("cnnlab").experiment_id], "attributes.run_name = 'own'")
    metrics = json.loads((recorded["run"] / "metrics.json").read_text())
    assert run.info.run_name == "own" and run.info.status == "FINISHED"
    assert run.data.params["recorded_model"] == "own_cnn" and run.data.params["batch_size"] == str(BATCH)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    files = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "best.keras", "metrics.json", "figures"} <= files
    assert "figures/confusion_matrix.png" not in files  # figures are listed inside their folder
    assert len(client.list_artifacts(run.info.run_id, "figures")) >= 4


def test_cnnlab_train_logs_to_tensorboard_and_mlflow(recorded):
    """Into the recorded run's runs folder: its MLflow store is made once (about 10 s of MLflow's migrations)."""
    from mlflow import MlflowClient

    runs = recorded["runs"]
    assert main(["train", "--dataset", "digits", "--limit-train", "300", "--epochs", "2", "--conv-filters", "4,8",
                 "--dense-units", "16", "--out", str(runs), "--name", "tracked", "--tensorboard", "--mlflow"]) == 0
    run = runs / "tracked"
    events = event_tags(run / "tensorboard" / "validation")
    assert [event.step for event in events.Tensors("epoch_accuracy")] == [0, 1]
    assert "confusion_matrix" in event_tags(run / "tensorboard" / "images").Tags()["tensors"]
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    [found] = client.search_runs([client.get_experiment_by_name("cnnlab").experiment_id],
                                 "attributes.run_name = 'tracked'")
    history = [row["val_loss"] for row in csv.DictReader((run / "history.csv").open())]
    assert [m.value for m in client.get_metric_history(found.info.run_id, "val_loss")] == \
        pytest.approx([float(v) for v in history], rel=1e-5)
    assert found.data.params["conv_filters"] == "4,8" and found.info.status == "FINISHED"
    assert "best.keras" in {artifact.path for artifact in client.list_artifacts(found.info.run_id)}


def test_a_model_that_takes_raw_pixels_without_rescaling_is_refused_at_the_start(tmp_path):
    """cnnlab would feed it [0, 1] images afterwards and score it as chance: refused, with what to change."""
    x, y = digit_pixels()
    recorder = cnnlab.RunRecorder(tmp_path / "raw", test_data=(x[:50], y[:50]))
    with pytest.raises(DataError, match=r"0\.\.255 pixels but the model takes \[0, 1\].*Rescaling\(1/255\)"):
        users_model(rescale=False).fit(x[:80], y[:80], validation_data=(x[80:100], y[80:100]), epochs=1,
                                     callbacks=[recorder], verbose=0)
    assert not (tmp_path / "raw" / "best.keras").exists()


def test_a_model_without_accuracy_or_validation_is_refused_in_its_first_epoch(tmp_path):
    x, y = digit_pixels()
    with pytest.raises(CnnlabError, match=r"metrics=\['accuracy'\]"):
        users_model(metrics=()).fit(x[:80], y[:80], validation_data=(x[80:100], y[80:100]), epochs=1, verbose=0,
                  callbacks=[cnnlab.RunRecorder(tmp_path / "a", test_data=(x[:50], y[:50]))])
    with pytest.raises(CnnlabError, match="validation_data="):
        users_model().fit(x[:80], y[:80], epochs=1, verbose=0,
                        callbacks=[cnnlab.RunRecorder(tmp_path / "b", test_data=(x[:50], y[:50]))])


def test_test_data_comes_as_arrays_one_hot_or_a_py_dataset():
    x, y = digit_pixels()

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return x[i * 10:(i + 1) * 10], keras.utils.to_categorical(y[i * 10:(i + 1) * 10], 10)

    images, labels = arrays_of(Batches())
    np.testing.assert_array_equal(images, x[:30])
    np.testing.assert_array_equal(labels, y[:30])
    with pytest.raises(DataError, match="test_data must be"):
        arrays_of(x[:30])


def test_a_recorded_run_is_not_overwritten_nor_trained_on(recorded, capsys):
    x, y = recorded["x"], recorded["y"]
    with pytest.raises(CnnlabError, match="already holds a trained model"):
        cnnlab.RunRecorder(recorded["run"], test_data=(x[:10], y[:10]))
    best = (recorded["run"] / "best.keras").read_bytes()
    with pytest.raises(CnnlabError, match="recorded a fit into .* already"):  # a second fit with the same recorder
        recorded["model"].fit(x[:80], y[:80], validation_data=(x[80:100], y[80:100]), epochs=1, verbose=0,
                              callbacks=[recorded["recorder"]])
    assert (recorded["run"] / "best.keras").read_bytes() == best
    assert main(["train", "--dataset", str(recorded["run"] / "test_data.npz"), "--out", str(recorded["runs"])]) == 2
    assert "holds a test set only" in capsys.readouterr().err


def test_a_missing_extra_is_named_in_one_line(monkeypatch, tmp_path):
    from cnnlab.callbacks.mlflow import client_class
    from cnnlab.callbacks.tensorboard import require_tensorboard

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow then raises ImportError
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(CnnlabError, match=r"^MLflow logging needs the mlflow package: pip install 'cnnlab\[mlflow\]'$"):
        client_class()
    with pytest.raises(CnnlabError, match=r"pip install 'cnnlab\[tensorboard\]'$"):
        require_tensorboard()
