"""The HTML report (cnnlab.report, `cnnlab report`, `cnnlab compare`) and the computations behind it."""

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser

import keras
import numpy as np
import pytest
from PIL import Image

from cnnlab import report
from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.evaluation import (confident_mistakes, confusion_matrix, normalise_rows, per_class_scores, predict, scores,
                               top_k)
from cnnlab.explain import grad_cam, saliency

RUN_FILES = ("config.json", "metrics.json", "history.csv", "best.keras")  # what a report is rebuilt from


class Page(HTMLParser):
    """What the tests look at in a report: headings, sections, images, links and the numbers marked data-metric."""

    def __init__(self, html):
        super().__init__()
        self.headings, self.sections, self.images, self.links, self.tags = [], [], [], [], []
        self.metrics = {}  # data-metric -> (data-value, text shown)
        self._open = []  # [tag, metric, value, text, in_h2] of the elements being read
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(attrs.get("data-section"))
        if tag == "img":
            self.images.append(attrs["src"])
        self.links += [attrs[a] for a in ("href", "src") if a in attrs and tag != "img"]
        if tag not in ("img", "meta", "br"):
            self._open.append([tag, attrs.get("data-metric"), attrs.get("data-value"), ""])

    def handle_endtag(self, tag):
        while self._open:
            open_tag, metric, value, text = self._open.pop()
            if open_tag == "h2":
                self.headings.append(text.strip())
            if metric:
                self.metrics[metric] = (value, text.strip())
            if self._open:
                self._open[-1][3] += text
            if open_tag == tag:
                break

    def handle_data(self, data):
        if self._open:
            self._open[-1][3] += data


@pytest.fixture(scope="module")
def page(digits_run):
    return Page((digits_run / "report.html").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def metrics(digits_run):
    return json.loads((digits_run / "metrics.json").read_text())


def metric_value(metrics, key):
    value = metrics
    for part in key.split("."):
        value = value[part]
    return value


def test_run_writes_a_report_with_every_section_in_order(page):
    assert page.sections == [key for key, _ in report.SECTIONS]
    assert page.headings == [f"{n}. {text}" for n, (_, text) in enumerate(report.SECTIONS, start=1)]


def test_every_image_is_embedded_and_decodes(page):
    # learning curves, confusion matrix, per-class bars, sample grid, 2 filter and 2 feature map figures,
    # 2 Grad-CAM figures: 10 figures, plus one thumbnail per mistake
    assert len(page.images) >= 10
    for src in page.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        picture = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        picture.load()
        assert picture.width > 0 and picture.height > 0


def test_page_loads_nothing_from_outside(digits_run, page):
    html = (digits_run / "report.html").read_text(encoding="utf-8")
    assert not {"script", "link", "iframe", "object"} & set(page.tags)
    assert all(link.startswith("#") for link in page.links), page.links
    assert "url(" not in html and "@import" not in html and "http://" not in html and "https://" not in html


def test_numbers_in_the_page_equal_metrics_json(page, metrics):
    expected = {"val_loss", "val_accuracy", "test_loss", "test_accuracy", "best_epoch", "epochs_run", "parameters",
                "seed", "sizes.train", "sizes.validation", "sizes.test"}
    assert set(page.metrics) == expected
    for key, (value, shown) in page.metrics.items():
        recorded = metric_value(metrics, key)
        assert float(value) == recorded, key
        if key.endswith("loss"):
            assert shown == f"{recorded:.4f}"
        elif key.endswith("accuracy"):
            assert shown == f"{recorded:.2%}"
        else:
            assert shown.replace(",", "") == str(recorded), key


def test_breakdowns_agree_with_the_test_score(digits_run, metrics):
    html = (digits_run / "report.html").read_text(encoding="utf-8")
    supports = re.findall(r'<td class="num">(\d+)</td></tr>', html.split('id="per-class"')[1].split("</table>")[0])
    assert sum(map(int, supports)) == metrics["sizes"]["test"]
    mistakes = int(re.search(r"test images \(([\d,]+) mistakes\)", html).group(1).replace(",", ""))
    assert mistakes == round((1 - metrics["test_accuracy"]) * metrics["sizes"]["test"])


def test_report_rebuilds_from_the_run_directory(digits_run, page, tmp_path, capsys):
    out = tmp_path / "again.html"
    assert main(["report", str(digits_run), "--out", str(out)]) == 0
    steps = len(report.SECTIONS) + 2
    assert f"report [{steps}/{steps}] writing the page" in capsys.readouterr().out  # progress is shown
    again = Page(out.read_text(encoding="utf-8"))
    assert again.sections == page.sections
    assert again.metrics == page.metrics
    assert len(again.images) == len(page.images)


def test_report_of_a_model_file_says_there_is_no_history(digits_run, metrics, tmp_path):
    out = tmp_path / "model.html"
    assert main(["report", str(digits_run / "best.keras"), "--dataset", "digits", "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    model_page = Page(html)
    assert model_page.sections == [key for key, _ in report.SECTIONS]
    assert "No training history" in html
    assert set(model_page.metrics) == {"parameters", "sizes.train", "sizes.validation", "sizes.test"} | {
        "test_loss", "test_accuracy"}
    # the same model on the same test images: the score computed here is the run's
    assert float(model_page.metrics["test_accuracy"][0]) == pytest.approx(metrics["test_accuracy"], abs=1e-12)
    shifted = tmp_path / "shifted.html"
    assert main(["report", str(digits_run / "best.keras"), "--dataset", "digits", "--test-time-augmentation", "shift",
                 "--out", str(shifted)]) == 0
    shifted_page = Page(shifted.read_text(encoding="utf-8"))
    data = load_dataset("digits")
    expected = scores(data.y_test, predict(keras.saving.load_model(digits_run / "best.keras"), data.x_test,
                                           test_time_augmentation="shift"))
    assert float(shifted_page.metrics["test_accuracy"][0]) == pytest.approx(expected["accuracy"], abs=1e-12)
    assert shifted_page.metrics["test_single_view_accuracy"][0] == model_page.metrics["test_accuracy"][0]


def copy_run(digits_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in RUN_FILES:
        shutil.copy(digits_run / name, run / name)
    return run


@pytest.mark.parametrize("name", RUN_FILES)
@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_missing_or_corrupt_run_file_is_named(digits_run, tmp_path, capsys, name, damage):
    run = copy_run(digits_run, tmp_path)
    target = run / name
    if damage == "missing":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2] + b"\0garbage")
    assert main(["report", str(run)]) == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "Traceback" not in message
    assert str(target) in message
    assert not (run / "report.html").exists()


def test_a_report_of_nothing_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'}: no such run directory or model file" in capsys.readouterr().err


def test_compare_shows_the_settings_that_differ_and_the_scores(digits_run, tmp_path, capsys):
    other = copy_run(digits_run, tmp_path)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "learning_rate": 0.01}))
    metrics = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**metrics, "test_accuracy": metrics["test_accuracy"] / 2}))
    html = tmp_path / "compare.html"
    assert main(["compare", str(digits_run), str(other), "--html", str(html)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["digits", "run"]
    row = {cells[0]: cells[1:] for cells in (re.split(r" {2,}", line) for line in lines[2:])}
    assert row["learning_rate"] == ["0.001", "0.01"]
    assert "batch_size" not in row  # the same in both runs
    assert row["test accuracy"] == [f"{metrics['test_accuracy']:.2%}*", f"{metrics['test_accuracy'] / 2:.2%}"]
    assert row["validation loss"] == [f"{metrics['val_loss']:.4f}"] * 2  # a tie: no run is marked best
    compare_page = Page(html.read_text(encoding="utf-8"))
    assert not {"script", "link"} & set(compare_page.tags) and not compare_page.images
    assert "learning_rate" in html.read_text(encoding="utf-8")


def test_compare_shows_an_unfinished_run_with_its_settings_and_no_scores(digits_run, metrics, tmp_path, capsys):
    other = copy_run(digits_run, tmp_path)
    (other / "metrics.json").unlink()  # `compare runs/*` while one of them trains, or was interrupted
    assert main(["compare", str(digits_run), str(other)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["digits", "run", "(unfinished)"]
    row = {cells[0]: cells[1:] for cells in (re.split(r" {2,}", line) for line in lines[2:])}
    assert row["test accuracy"] == [f"{metrics['test_accuracy']:.2%}", "—"]
    assert main(["compare", str(digits_run), str(digits_run / "best.keras")]) == 2
    assert capsys.readouterr().err.strip() == f"cnnlab: error: {digits_run / 'best.keras'}: not a run directory"


# ---------------------------------------------------------------- the computations, by hand


def test_confusion_matrix_and_per_class_scores_by_hand():
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    predicted = [0, 0, 1, 1, 1, 2, 2, 0, 0]  # class "d" has no image and is never predicted
    counts = confusion_matrix(labels, predicted, 4)
    np.testing.assert_array_equal(counts, [[2, 1, 0, 0], [0, 2, 0, 0], [2, 0, 2, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(normalise_rows(counts),
                               [[2 / 3, 1 / 3, 0, 0], [0, 1, 0, 0], [0.5, 0, 0.5, 0], [0, 0, 0, 0]])
    rows = per_class_scores(labels, predicted, ["a", "b", "c", "d"])
    # precision: a 2 of 4 predicted, b 2 of 3, c 2 of 2; recall: a 2 of 3, b 2 of 2, c 2 of 4; F1 = 2PR/(P+R)
    assert [row["name"] for row in rows] == ["d", "a", "c", "b"]  # worst F1 first
    by_name = {row["name"]: row for row in rows}
    expected = {"a": (1 / 2, 2 / 3, 4 / 7, 3), "b": (2 / 3, 1, 4 / 5, 2), "c": (1, 1 / 2, 2 / 3, 4), "d": (0, 0, 0, 0)}
    for name, (precision, recall, f1, support) in expected.items():
        row = by_name[name]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (precision, recall, f1, support))


def test_loss_agrees_with_keras_on_a_confident_mistake():
    """Keras trains on the logits' cross-entropy; the loss of the probabilities must not clip a confident mistake."""
    logits = np.array([[0.0, 20.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)  # image 0: p(true) ~ 2e-9
    labels = np.array([0, 0, 2])
    probabilities = np.asarray(keras.ops.softmax(logits), np.float64)
    expected = float(np.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)))
    assert scores(labels, probabilities)["loss"] == pytest.approx(expected, rel=1e-5)
    assert scores(labels, probabilities)["accuracy"] == pytest.approx(2 / 3)


def test_confident_mistakes_and_top_k_by_hand():
    probabilities = np.array([
        [0.7, 0.2, 0.1],  # true 0, right
        [0.1, 0.6, 0.3],  # true 2, wrong at 0.6
        [0.05, 0.05, 0.9],  # true 0, wrong at 0.9
        [0.4, 0.35, 0.25],  # true 1, wrong at 0.4
    ])
    labels = [0, 2, 0, 1]
    assert confident_mistakes(labels, probabilities).tolist() == [2, 1, 3]
    assert confident_mistakes(labels, probabilities, limit=2).tolist() == [2, 1]
    classes, values = top_k(probabilities[[1, 3]], 2)
    assert classes.tolist() == [[1, 2], [0, 1]]
    np.testing.assert_allclose(values, [[0.6, 0.3], [0.4, 0.35]])


# ---------------------------------------------------------------- Grad-CAM finds the region that matters

QUADRANTS = {"top-left": (0, 0), "top-right": (0, 14), "bottom-left": (14, 0)}  # not mirror images of each other


def quadrant_model(corner):
    """A CNN that can only see one 14x14 quadrant: the rest is cropped away and padded back with zeros.

    Fixed weights: conv_1 averages 3x3 neighbourhoods, conv_2 passes that on, and the class-1 score is the
    total brightness the convs saw, against a threshold; so the prediction depends on the quadrant alone.
    """
    top, left = corner
    crop = ((top, 14 - top), (left, 14 - left))
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Cropping2D(crop), keras.layers.ZeroPadding2D(crop),
        keras.layers.Conv2D(1, 3, activation="relu", padding="same", name="conv_1"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(1, 1, activation="relu", name="conv_2"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    conv_1, conv_2, dense = model.layers[2], model.layers[4], model.layers[-1]
    conv_1.set_weights([np.full((3, 3, 1, 1), 1 / 9), np.zeros(1)])
    conv_2.set_weights([np.ones((1, 1, 1, 1)), np.zeros(1)])
    dense.set_weights([np.stack([np.zeros(49), np.ones(49)], axis=1), np.array([5.0, 0.0])])
    return model


@pytest.mark.parametrize("where", QUADRANTS)
def test_grad_cam_and_saliency_light_up_the_only_region_the_model_sees(where):
    top, left = QUADRANTS[where]
    region = (slice(top, top + 14), slice(left, left + 14))
    rng = np.random.default_rng(0)
    image = (rng.random((28, 28)) < 0.15).astype(np.float32)  # scattered ink everywhere
    image[top + 4:top + 10, left + 4:left + 10] = 1.0  # and a solid square inside the quadrant
    outside = np.ones((28, 28), bool)
    outside[region] = False
    assert image[outside].sum() > image[region].sum()  # most of the ink is where the model does not look
    model = quadrant_model(QUADRANTS[where])
    assert model.predict(image[None, :, :, None], verbose=0).argmax() == 1

    cam = grad_cam(model, image[:, :, None], 1)
    assert cam[region].sum() / cam.sum() > 0.9  # a quarter of the image holds nine tenths of the heat
    peak = np.unravel_index(cam.argmax(), cam.shape)
    assert region[0].start <= peak[0] < region[0].stop and region[1].start <= peak[1] < region[1].stop

    heat = saliency(model, image[:, :, None], 1)
    assert heat[region].max() == 1.0 and heat[outside].max() == 0.0

    functional = keras.Model(model.inputs, model.outputs)  # as a plain script's functional model: it lists its Input
    assert isinstance(functional.layers[0], keras.layers.InputLayer)
    np.testing.assert_allclose(saliency(functional, image[:, :, None], 1), heat, atol=1e-6)
    np.testing.assert_allclose(grad_cam(functional, image[:, :, None], 1), cam, atol=1e-6)
