"""Test-time augmentation: the views whose predictions are averaged, what averaging them guarantees, and the scores
that `evaluate` and a report show with it."""

import json
import shutil

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.config import make_config
from cnnlab.errors import CnnlabError
from cnnlab.evaluation import augmented_views, evaluate, predict
from cnnlab.inspection import load_model
from cnnlab.pipeline import load_data
from cnnlab.report import score_rows


@pytest.fixture(scope="module")
def digits():
    return load_data(make_config(dataset="digits"))


def test_views_are_mirror_images_and_one_pixel_shifts_filled_with_background(digits):
    images = digits.x_test[:8]
    assert augmented_views(images, "none")[0] is images
    original, mirror = augmented_views(images, "flip")
    assert original is images
    np.testing.assert_array_equal(mirror[:, :, ::-1], images)
    views = augmented_views(images, "shift")
    assert len(views) == 5 and views[0] is images and all(view.shape == images.shape for view in views)
    down, up, right, left = views[1:]
    np.testing.assert_array_equal(down[:, 1:], images[:, :-1])
    np.testing.assert_array_equal(up[:, :-1], images[:, 1:])
    np.testing.assert_array_equal(right[:, :, 1:], images[:, :, :-1])
    np.testing.assert_array_equal(left[:, :, :-1], images[:, :, 1:])
    assert not (down[:, 0].any() or up[:, -1].any() or right[:, :, 0].any() or left[:, :, -1].any())


def test_keras_datasets_arrays_are_scored_as_the_scaled_images_they_are(digits_run, digits):
    model = load_model(digits_run / "best.keras")
    raw = np.uint8(np.round(digits.x_test[..., 0] * 255))  # as keras.datasets gives them: uint8, no channel axis
    assert evaluate(model, raw, digits.y_test) == pytest.approx(evaluate(model, digits.x_test, digits.y_test))
    with pytest.raises(CnnlabError, match=r"the model takes images of shape \(28, 28, 1\), not \(28, 28, 3\)"):
        evaluate(model, np.zeros((5, 28, 28, 3), np.float32), digits.y_test[:5])
    with pytest.raises(CnnlabError, match=r"must be an array \(N, H, W, 1 or 3\) or \(N, H, W\), not \(5, 28\)"):
        evaluate(model, np.zeros((5, 28), np.float32), digits.y_test[:5])


def test_flip_averaging_makes_a_models_predictions_mirror_invariant(digits_run, digits):
    model = load_model(digits_run / "best.keras")
    images = digits.x_test[:32]
    plain, of_mirrors = predict(model, images), predict(model, images[:, :, ::-1])
    assert not np.allclose(plain, of_mirrors, atol=1e-3)  # the model alone tells a digit from its mirror image
    averaged = predict(model, images, test_time_augmentation="flip")
    np.testing.assert_allclose(averaged, (plain + of_mirrors) / 2, atol=1e-7)
    np.testing.assert_allclose(predict(model, images[:, :, ::-1], test_time_augmentation="flip"), averaged, atol=1e-7)


def test_evaluate_scores_with_the_runs_setting_or_the_flag_and_keeps_the_model_alone_beside(digits_run, digits, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("figures", "report.html", "checkpoint"))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "test_time_augmentation": "shift"}))
    model = load_model(run / "best.keras")

    assert main(["evaluate", str(run / "best.keras"), "--out", str(tmp_path / "a")]) == 0
    result = json.loads((tmp_path / "a" / "evaluation.json").read_text())
    expected = evaluate(model, digits.x_test, digits.y_test, test_time_augmentation="shift")
    assert result["test_time_augmentation"] == "shift" and result["test_accuracy"] == pytest.approx(expected["accuracy"])
    assert result["test_accuracy_single_view"] == pytest.approx(evaluate(model, digits.x_test, digits.y_test)["accuracy"])
    assert result["test_loss"] != pytest.approx(evaluate(model, digits.x_test, digits.y_test)["loss"])

    assert main(["evaluate", str(run / "best.keras"), "--test-time-augmentation", "none", "--out", str(tmp_path / "b")]) == 0
    result = json.loads((tmp_path / "b" / "evaluation.json").read_text())
    assert result["test_time_augmentation"] == "none" and "test_accuracy_single_view" not in result


def test_a_reports_score_table_names_the_averaging_and_shows_the_model_alone(digits):
    metrics = {"val_loss": 0.1, "val_accuracy": 0.95, "test_loss": 0.2, "test_accuracy": 0.94,
               "test_accuracy_single_view": 0.93}
    rows = score_rows(digits, None, metrics, "shift")
    assert [row["split"] for row in rows] == ["validation", "test, the model alone (one view per image)",
                                              "test, test-time augmentation: shift"]
    assert [row["accuracy"] for row in rows] == [0.95, 0.93, 0.94]
