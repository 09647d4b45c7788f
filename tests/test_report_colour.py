"""Figures, inspection and the HTML report follow the data's shape and colour: colour (RGB) images, a non-square
grey dataset and 64x64 images, on real data (scikit-learn's digits in colour or padded)."""

import base64
import io
import re

import keras
import numpy as np
import pytest
from image_data import DIGIT_NAMES, coloured, digit_arrays, write_split_folders
from PIL import Image
from test_report import Page

from cnnlab import plots, report
from cnnlab.cli import main
from cnnlab.data import PHOTO_STYLE, Dataset, ScaledImages, load_dataset
from cnnlab.inspection import conv_layers, feature_maps, filter_images, load_model, trained_kernel
from cnnlab.pipeline import filter_figure

SECTION_IDS = [key for key, _ in report.SECTIONS]


def decode(uri) -> Image.Image:
    assert uri.startswith("data:image/png;base64,"), uri[:60]
    picture = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    picture.load()
    assert picture.format == "PNG" and picture.width > 0 and picture.height > 0
    return picture


def thumbnails(html) -> dict:
    """{test image index: its thumbnail} of the mistakes table."""
    return {int(index): decode(uri) for uri, index in
            re.findall(r'<img class="thumb" src="([^"]+)" alt="test image (\d+),', html)}


def share_near(picture, colour, tolerance=8) -> float:
    """The share of a picture's pixels within `tolerance` of an RGB colour (0..255) in every channel."""
    pixels = np.asarray(picture.convert("RGB"), np.int64)
    return float(np.mean(np.all(np.abs(pixels - np.asarray(colour)) <= tolerance, axis=-1)))


def colourful_share(picture) -> float:
    """The share of pixels whose channels differ by more than 40 of 255: none in a grey picture."""
    pixels = np.asarray(picture.convert("RGB"), np.int64)
    return float(np.mean(pixels.max(axis=-1) - pixels.min(axis=-1) > 40))


@pytest.fixture(scope="module")
def colour_html(colour_run):
    return (colour_run / "report.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def colour_data(colour_folder):
    return load_dataset(str(colour_folder))


# ---------------------------------------------------------------- drawing images as they are


def test_images_are_drawn_as_they_are():
    rng = np.random.default_rng(0)
    grey, colour = rng.random((24, 40, 1)), rng.random((24, 40, 3))
    np.testing.assert_allclose(plots.shown_image(grey), 1 - grey[..., 0])  # a digit: dark ink on white
    np.testing.assert_allclose(plots.shown_image(grey, PHOTO_STYLE), grey[..., 0])  # a photo: not a negative
    np.testing.assert_allclose(plots.shown_image(colour, PHOTO_STYLE), colour)
    np.testing.assert_allclose(plots.shown_image(colour), colour)  # colour is never inverted
    with pytest.raises(ValueError, match=r"not \(24, 40, 2\)"):
        plots.shown_image(rng.random((24, 40, 2)))
    with pytest.raises(ValueError, match="style must be"):
        plots.shown_image(grey, "negative")


def test_thumbnails_keep_colour_shape_and_style(colour_data):
    image = colour_data.x_test[0]
    picture = decode(report.thumbnail_uri(image, colour_data.style))
    assert picture.mode == "RGB" and picture.size == (64, 64)  # twice 32x32
    np.testing.assert_array_equal(np.asarray(picture)[::2, ::2], np.round(255 * image).astype(np.uint8))
    wide = np.zeros((24, 40, 1), np.float32)  # a black picture
    assert np.asarray(decode(report.thumbnail_uri(wide, PHOTO_STYLE))).max() == 0
    assert np.asarray(decode(report.thumbnail_uri(wide))).min() == 255  # a digit's black is paper
    assert decode(report.thumbnail_uri(wide)).size == (80, 48)
    large = decode(report.thumbnail_uri(np.zeros((256, 512, 3), np.float32)))
    assert large.size == (report.THUMBNAIL_PIXELS, report.THUMBNAIL_PIXELS // 2)  # shrunk, shape kept


def test_figures_of_colour_and_non_square_images_show_the_images(colour_data):
    images, labels = colour_data.x_test[:8], colour_data.y_test[:8]
    probabilities = np.eye(10)[labels]
    figure = plots.prediction_grid(images, labels, probabilities, colour_data.class_names, style=colour_data.style)
    shown = [ax.images[0].get_array() for ax in figure.axes if ax.images]
    assert len(shown) == 8
    np.testing.assert_allclose(shown[3], images[3])  # drawn as RGB, as it is
    background = np.round(255 * images[0][0, 0])
    assert share_near(decode(report.figure_uri(plots.input_figure(images[0], "t", colour_data.style))),
                      background) > 0.3
    assert share_near(decode(report.figure_uri(plots.input_figure(images[0].mean(axis=-1, keepdims=True), "t"))),
                      background) == 0  # a grey image is not drawn in the colour (the check can fail)
    wide = np.random.default_rng(0).random((4, 24, 40, 1))
    maps = np.random.default_rng(1).random((4, 12, 20, 8))
    figure = plots.feature_maps_by_class(wide, maps, list("abcd"), "conv", PHOTO_STYLE)
    inputs = figure.axes[0].images[0].get_array()
    assert inputs.shape == (4 * 25 - 1, 40)  # the four inputs stacked, one white pixel between them
    np.testing.assert_allclose(inputs[25:49], wide[1, ..., 0])
    cams = np.random.default_rng(2).random((4, 24, 40))
    figure = plots.explanation_grid(wide, cams, cams, list("abcd"), [False] * 4, style=PHOTO_STYLE)
    assert figure.get_figheight() < figure.get_figwidth()  # laid out for wide images


# ---------------------------------------------------------------- filters of a colour first layer


def test_a_colour_first_layer_draws_each_filter_in_colour_and_per_channel(colour_run):
    model = load_model(colour_run / "best.keras")
    first, second = conv_layers(model)[:2]
    kernel = trained_kernel(first)
    assert kernel.shape[2] == 3
    images, caption = filter_images(kernel, rgb=True)
    np.testing.assert_array_equal(images, np.moveaxis(kernel, -1, 0))
    assert "colour" in caption
    with pytest.raises(ValueError, match="3 input channels"):
        filter_images(trained_kernel(second), rgb=True)

    figure = filter_figure(first, first=True)
    trained_axes, untrained_axes = ([ax for ax in sub.axes if ax.images] for sub in figure.subfigs)
    rows = {}
    for ax in trained_axes:
        rows.setdefault(ax.get_subplotspec().rowspan.start % 4, []).append(ax.images[0])
    assert [len(rows[r]) for r in range(4)] == [kernel.shape[3]] * 4  # RGB, R, G, B for every filter
    limit = rows[1][0].norm.vmax  # one symmetric scale for every channel, trained and untrained
    assert limit >= np.abs(kernel).max()
    channel_axes = [ax for ax in trained_axes + untrained_axes if ax.get_subplotspec().rowspan.start % 4]
    assert {(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in channel_axes} == {(-limit, limit)}
    np.testing.assert_allclose(np.asarray([image.get_array() for image in rows[0]]),
                               np.clip(0.5 + np.moveaxis(kernel, -1, 0) / (2 * limit), 0, 1))  # zero is grey
    for channel in range(3):
        np.testing.assert_allclose(np.asarray([image.get_array() for image in rows[channel + 1]]),
                                   np.moveaxis(kernel[:, :, channel], -1, 0))
    # a deeper layer stays one image per filter: the mean over its input channels
    deeper = [ax for ax in filter_figure(second).subfigs[0].axes if ax.images]
    assert len(deeper) == second.kernel.shape[3]


# ---------------------------------------------------------------- the report of a colour run


def test_the_colour_runs_report_has_every_section_and_draws_in_colour(colour_run, colour_html, colour_data):
    page = Page(colour_html)
    assert page.sections == SECTION_IDS
    assert page.headings == [f"{n}. {text}" for n, (_, text) in enumerate(report.SECTIONS, start=1)]
    assert "32x32 pixels (height x width), colour (RGB)" in colour_html
    assert f"<td>{', '.join(DIGIT_NAMES)}</td>" in colour_html  # the data's class names
    pictures = [decode(uri) for uri in page.images]
    assert len(pictures) >= 10
    mistakes = int(re.search(r"test images \(([\d,]+) mistakes\)", colour_html).group(1).replace(",", ""))
    assert mistakes > 0  # three epochs on digits in random colours leave some
    thumbs = thumbnails(colour_html)
    assert len(thumbs) == min(mistakes, report.MISTAKES)
    for index, thumb in thumbs.items():
        pixels = np.asarray(thumb, np.int64)
        assert thumb.mode == "RGB" and thumb.size == (64, 64)
        assert (pixels.max(axis=-1) - pixels.min(axis=-1)).max() > 40  # its channels differ: a colour image
        np.testing.assert_array_equal(pixels[::2, ::2], np.round(255 * colour_data.x_test[index]))  # that image
    sample = decode(re.search(r'<h3>The first \d+ test images</h3>\s*<figure><img src="([^"]+)"', colour_html)[1])
    assert colourful_share(sample) > 0.3  # the predictions are shown in their colours


def test_the_colour_run_inspects_in_colour(colour_run, colour_data, tmp_path, capsys):
    assert main(["inspect", str(colour_run / "best.keras"), "--out", str(tmp_path)]) == 0
    written = {line.rsplit("/", 1)[-1] for line in capsys.readouterr().out.split() if line.endswith(".png")}
    assert {"filters_conv_1.png", "filters_conv_2.png", "feature_maps_input.png", "feature_maps_conv_1.png",
            "feature_maps_conv_2.png"} <= written
    shown = Image.open(tmp_path / "feature_maps_input.png")
    assert share_near(shown, np.round(255 * colour_data.x_test[0][0, 0])) > 0.3  # test image 0 in its colours
    # conv_1 drawn in colour: four rows per filter (RGB, R, G, B), not one of their mean over the channels
    first = conv_layers(load_model(colour_run / "best.keras"))[0]
    mean_filters = decode(report.figure_uri(filter_figure(first)))
    assert Image.open(tmp_path / "filters_conv_1.png").height > 2.5 * mean_filters.height
    assert (colour_run / "figures" / "filters_conv_1.png").is_file()  # the run drew them too


# ---------------------------------------------------------------- a non-square grey dataset, and 64x64 images


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    """A one-epoch run on scikit-learn's digits padded to 24x40 grey PNGs in class folders."""
    arrays = digit_arrays()
    wide = {**arrays, **{key: np.pad(arrays[key][:, 2:26], ((0, 0), (0, 0), (6, 6))) for key in ("x_train", "x_test")}}
    folder = write_split_folders(tmp_path_factory.mktemp("wide") / "wide_digits", wide, DIGIT_NAMES)
    out = tmp_path_factory.mktemp("wide-runs")
    assert main(["run", "--dataset", str(folder), "--epochs", "1", "--out", str(out), "--name", "wide"]) == 0
    return out / "wide"


def test_a_non_square_grey_dataset_gets_a_report(wide_run):
    html = (wide_run / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    assert page.sections == SECTION_IDS
    assert "24x40 pixels (height x width), grey" in html
    assert html.count("<figcaption>conv_") == 6  # 2 filter, 2 feature-map and 2 maximised-pattern figures
    for uri in page.images:
        decode(uri)
    thumbs = thumbnails(html)
    assert thumbs  # one epoch leaves mistakes
    for thumb in thumbs.values():
        assert thumb.mode == "L" and thumb.size == (80, 48)  # twice 24x40, not squashed square
        assert thumb.getpixel((0, 0)) == 0  # a grey photo as it is: black background, not a negative


class WholeCopyRefused(ScaledImages):
    """A streamed test set that fails the test when something converts all of it into one array."""

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole streamed test set was converted into one array")


def rescaling_model(shape, classes):
    """A small untrained CNN that takes 0..255 pixels (Rescaling(1/255) first), as many plain scripts' do."""
    return keras.Sequential([
        keras.Input(shape), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(4, 3, activation="relu", padding="same", name="conv_1"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(8, 3, activation="relu", padding="same", name="conv_2"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(classes, activation="softmax"),
    ])


def test_a_64x64_streamed_dataset_gets_a_report_with_feature_maps_as_the_model_is_fed(tmp_path, monkeypatch):
    arrays = digit_arrays()
    names = [f"digit {name}" for name in "0123456789"]
    test_pixels = coloured(arrays["x_test"][:60], seed=3, size=64)
    train = coloured(arrays["x_train"][:40], seed=4, size=64).astype(np.float32) / 255
    data = Dataset(name="big", class_names=names, x_train=train, y_train=arrays["y_train"][:40], x_val=train[:20],
                   y_val=arrays["y_train"][:20], x_test=WholeCopyRefused(test_pixels), y_test=arrays["y_test"][:60],
                   source="test arrays", style=PHOTO_STYLE)
    keras.utils.set_random_seed(0)
    model = rescaling_model((64, 64, 3), 10)
    drawn = {}
    by_class = plots.feature_maps_by_class

    def record(inputs, maps, row_labels, layer_name, style):
        drawn[layer_name] = (inputs, maps)
        return by_class(inputs, maps, row_labels, layer_name, style)

    monkeypatch.setattr(plots, "feature_maps_by_class", record)
    out = report.report_for_model(model, data, tmp_path / "big.html", "big.keras")
    html = out.read_text(encoding="utf-8")
    assert Page(html).sections == SECTION_IDS
    assert "64x64 pixels (height x width), colour (RGB)" in html and ", ".join(names) in html
    for uri in Page(html).images:
        decode(uri)
    assert set(drawn) == {"conv_1", "conv_2"}
    inputs, maps = drawn["conv_1"]
    first = report.one_image_per_class(data.y_test, 10)
    np.testing.assert_allclose(inputs, test_pixels[first] / 255, atol=1e-6)
    # the maps are the model's for its 0..255 input, as `inspect` computes them (fed [0, 1], they would be 255x weaker)
    np.testing.assert_allclose(maps[0], feature_maps(model, data.x_test[first[0]])["conv_1"], rtol=1e-4, atol=1e-5)
    assert np.abs(maps).max() > 0.05
