"""An ensemble: networks trained one after another on the same split, saved as one plain Keras model that averages
their probabilities; looked inside, explained, interrupted and resumed like a single network."""

import hashlib

import keras
import numpy as np
import pytest

from cnnlab import RunDir, make_config, resume_config, train_run
from cnnlab.errors import TrainingInterrupted
from cnnlab.explain import grad_cam
from cnnlab.inspection import conv_layers, ensemble_members, feature_maps, load_model, network
from cnnlab.pipeline import inspect_model
from cnnlab.rundir import run_config_of
from cnnlab.prediction import Classifier
from cnnlab.report import report_from_run

SETTINGS = {"dataset": "digits", "ensemble": 2, "epochs": 2, "limit_train": 400}
TOLERANCE = 1e-6  # as tests/test_interrupt.py: a resumed run repeats the uninterrupted one up to float noise


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    return train_run(make_config(**SETTINGS), out=tmp_path_factory.mktemp("ensemble"), name="run", verbose=0)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_saved_model_is_the_mean_of_its_networks(ensemble_run):
    run, _, data, _ = ensemble_run
    saved = keras.models.load_model(run.best_model, safe_mode=True)  # Keras alone: built-in layers only
    each = [load_model(run.member(k).best_model).predict(data.x_test, verbose=0) for k in (1, 2)]
    assert np.abs(each[0] - each[1]).max() > 0.05  # seeds 42 and 43: two different networks
    np.testing.assert_allclose(saved.predict(data.x_test, verbose=0), np.mean(each, axis=0), atol=1e-6)
    assert [member.name for member in ensemble_members(saved)] == ["member_1", "member_2"]
    assert saved.output_shape == (None, 10)


def test_history_and_metrics_record_each_network(ensemble_run):
    run, _, _, metrics = ensemble_run
    history = run.read_history()
    assert history["member"] == [1, 1, 2, 2] and history["epoch"] == [1, 2, 1, 2]
    for k in (1, 2):
        own = run.member(k).read_history()
        assert [loss for loss, member in zip(history["loss"], history["member"]) if member == k] == own["loss"]
    assert len(metrics["best_epoch"]) == 2 and metrics["epochs_run"] == [2, 2]
    assert metrics["stop_reason"].startswith("network 1: ") and "; network 2: " in metrics["stop_reason"]
    assert run.read_config().ensemble == 2 and (run.path / "figures" / "learning_curves.png").stat().st_size > 0
    assert not run.member(2).config.exists()  # a network is part of the run, not a run of its own
    assert run_config_of(run.member(2).best_model) == run.config  # evaluate, predict and serve find its dataset there


def test_inspection_and_explanations_use_the_first_network(ensemble_run, tmp_path):
    run, best, data, _ = ensemble_run
    first = load_model(run.member(1).best_model)
    assert network(best).name == "member_1" and network(first) is first
    assert [layer.name for layer in conv_layers(best)] == ["conv_1", "conv_2"]
    image = data.x_test[0]
    expected = feature_maps(first, image)
    for name, maps in feature_maps(best, image).items():
        np.testing.assert_allclose(maps, expected[name], atol=1e-5)
    ensemble_class = int(np.argmax(best.predict(image[None], verbose=0)))
    np.testing.assert_allclose(grad_cam(best, image), grad_cam(first, image, class_index=ensemble_class), atol=1e-5)
    classifier = Classifier(best)
    found = classifier.explain(image)
    assert found["class_index"] == ensemble_class and found["grad_cam_layer"] == "conv_2"
    summary = classifier.summary()
    assert summary["conv_layers"] == ["conv_1", "conv_2"]
    assert [layer["name"] for layer in summary["layers"]] == ["image", "member_1", "member_2", "probabilities"]
    written = inspect_model(best, image, tmp_path)
    assert {path.name for path in written} >= {"filters_conv_1.png", "feature_maps_conv_2.png"}
    page = report_from_run(run.path, out=tmp_path / "report.html", model=best, data=data).read_text()
    assert "averages the probabilities of 2 networks; the filters, feature maps and Grad-CAM below are the first" in page


class StopDuringNetwork(keras.callbacks.Callback):
    """Ctrl-C (KeyboardInterrupt) after the first epoch of the given network has been committed."""

    def __init__(self, network):
        super().__init__()
        self.network, self.started = network, 0

    def on_train_begin(self, logs=None):
        self.started += 1

    def on_epoch_end(self, epoch, logs=None):
        if self.started == self.network:
            raise KeyboardInterrupt


def test_an_interrupted_ensemble_resumes_in_its_unfinished_network(ensemble_run, tmp_path, capsys):
    reference = ensemble_run[0]
    run = RunDir(tmp_path / "run")
    with pytest.raises(TrainingInterrupted) as stopped:
        train_run(make_config(**SETTINGS), out=tmp_path, name="run", verbose=0, callbacks=[StopDuringNetwork(2)])
    assert str(stopped.value) == (f"training interrupted; epoch 1 of network 2 of 2 and the best model are kept in "
                                  f"{run.path}; resume with: cnnlab.train_run(cnnlab.resume_config('{run.path}'), "
                                  f"resume='{run.path}')")
    assert not run.best_model.exists() and run.member(2).read_state()["epochs_completed"] == 1
    finished = digest(run.member(1).best_model)
    capsys.readouterr()

    _, best, data, _ = train_run(resume_config(run.path), resume=run.path, verbose=0)
    assert f"Resuming {run.path} network 2 of 2 after epoch 1" in capsys.readouterr().out
    assert digest(run.member(1).best_model) == finished  # the finished network is not trained again
    history, expected = run.read_history(), reference.read_history()
    assert history["member"] == expected["member"] and history["epoch"] == expected["epoch"]
    for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(history[column], expected[column], atol=TOLERANCE, err_msg=column)
    np.testing.assert_allclose(best.predict(data.x_test, verbose=0),
                               load_model(reference.best_model).predict(data.x_test, verbose=0), atol=TOLERANCE)
