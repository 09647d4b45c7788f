"""The web app's CNN-Explainer view (/api/conv, cnnlab.convolution): one value of a conv layer's feature map worked
out from the layer's input and weights, checked against the layer's own output, and the input pixels it depends on."""

import io

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from cnnlab.convolution import layer_values, receptive_field, value_at
from cnnlab.serve import create_app


@pytest.fixture(scope="module")
def client(classifier):
    with TestClient(create_app(classifier), raise_server_exceptions=True) as c:
        yield c


def seven() -> bytes:
    img = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(img).line([(60, 50), (220, 50), (120, 240)], fill="black", width=22)
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("layer, channel, y, x", [("conv_1", 0, 0, 0), ("conv_1", 17, 12, 20), ("conv_1", 31, 27, 27),
                                                  ("conv_2", 5, 7, 9), ("conv_2", 63, 0, 13)])
def test_the_sum_shown_is_the_feature_maps_value(client, classifier, layer, channel, y, x):
    answer = client.post(f"/api/conv?layer={layer}&channel={channel}&y={y}&x={x}",
                         files={"file": ("seven.png", seven(), "image/png")})
    assert answer.status_code == 200, answer.text
    worked = answer.json()
    image = classifier.prepare(seven()).input
    keras_value = classifier.explain(image)["feature_maps"][layer][y, x, channel]  # Keras's own forward pass
    assert worked["value"] == pytest.approx(keras_value, abs=1e-5)
    products = np.array(worked["products"])
    assert products.shape == (3, 3, 1 if layer == "conv_1" else 32)
    np.testing.assert_allclose(products, np.array(worked["patch"]) * np.array(worked["kernel"]), atol=1e-5)
    assert worked["sum"] == pytest.approx(products.sum(), abs=1e-4)
    assert worked["pre_activation"] == pytest.approx(worked["sum"] + worked["bias"], abs=1e-5)
    assert worked["activated"] == pytest.approx(max(worked["pre_activation"], 0), abs=1e-6)  # relu
    assert worked["activated"] == pytest.approx(keras_value, abs=1e-4)
    assert np.array(worked["feature_map"])[y, x] == pytest.approx(keras_value, abs=1e-5)
    if layer == "conv_1":  # the patch is the input image under the kernel, zeros where 'same' pads it
        padded = np.pad(image[..., 0], 1)
        np.testing.assert_allclose(np.array(worked["patch"])[..., 0], padded[y:y + 3, x:x + 3], atol=1e-5)


def test_the_receptive_field_of_two_convs_and_a_pool_is_8_pixels_and_nothing_outside_it_counts(classifier):
    image = classifier.prepare(seven()).input
    worked = classifier.conv_value(image, "conv_2", 5, 7, 9)  # conv 3x3 -> pool 2 -> conv 3x3: 1 + 2 + 1 * 2 + 2 * 2
    box = worked["receptive_field"]
    assert (box["height"], box["width"]) == (8, 8)
    assert (box["top"], box["left"], box["bottom"], box["right"]) == (11, 15, 18, 22)
    changed = np.random.default_rng(0).uniform(0, 1, image.shape).astype(np.float32)
    changed[box["top"]:box["bottom"] + 1, box["left"]:box["right"] + 1] = image[box["top"]:box["bottom"] + 1,
                                                                               box["left"]:box["right"] + 1]
    assert classifier.conv_value(changed, "conv_2", 5, 7, 9)["value"] == pytest.approx(worked["value"], abs=1e-5)
    corner = classifier.conv_value(image, "conv_2", 0, 0, 0)["receptive_field"]  # clipped at the image's edge
    assert (corner["top"], corner["left"], corner["bottom"], corner["right"]) == (0, 0, 4, 4)


def test_every_kind_of_conv_layer_inside_a_nested_backbone_adds_up():
    """Strided 'same', dilated 'valid', depthwise, separable and grouped convolutions in a nested backbone: at every
    position of every channel the worked-out value equals the layer's own output."""
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([
        keras.Input((13, 11, 3)),
        keras.layers.Conv2D(4, 3, strides=2, padding="same", name="strided"),
        keras.layers.Conv2D(6, 3, dilation_rate=2, activation="relu", name="dilated"),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="tanh", name="depthwise"),
        keras.layers.SeparableConv2D(6, 2, depth_multiplier=2, name="separable"),
        keras.layers.Conv2D(4, 1, groups=2, name="grouped")], name="backbone")
    image = keras.Input((13, 11, 3))
    model = keras.Model(image, keras.layers.Dense(3, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(backbone(image))))
    picture = np.random.default_rng(0).uniform(0, 1, (13, 11, 3)).astype(np.float32)
    values = layer_values(model, picture)
    assert [layer.name for layer in values] == ["strided", "dilated", "depthwise", "separable", "grouped"]
    for layer, (layer_input, layer_output) in values.items():
        h, w, channels = layer_output.shape
        for channel in range(channels):
            for y in range(h):
                for x in range(w):
                    worked = value_at(layer, layer_input, layer_output, channel, y, x)
                    assert worked["activated"] == pytest.approx(worked["value"], abs=1e-5), (layer.name, channel, y, x)
        assert worked["kind"] == type(layer).__name__ and worked["note"]
    assert receptive_field(model, backbone.get_layer("dilated"), 0, 0)["height"] == 3 + 4 * 2  # dilation 2, stride 2
    assert value_at(backbone.get_layer("depthwise"), *values[backbone.get_layer("depthwise")], 5, 0, 0)[
        "input_channels"] == [2]


def test_a_residual_blocks_receptive_field_and_one_that_cannot_be_told():
    image = keras.Input((16, 16, 1))
    first = keras.layers.Conv2D(2, 3, padding="same", name="first")(image)
    skipped = keras.layers.Add()([first, keras.layers.Conv2D(2, 3, padding="same", name="inner")(first)])
    last = keras.layers.Conv2D(2, 3, padding="same", name="last")(skipped)
    model = keras.Model(image, keras.layers.Dense(2)(keras.layers.Flatten()(last)))
    assert [receptive_field(model, model.get_layer(name), 8, 8)["height"] for name in ("first", "inner", "last")] == \
        [3, 5, 7]
    resized = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Resizing(8, 8),
                                keras.layers.Conv2D(2, 3, name="conv"), keras.layers.Flatten(), keras.layers.Dense(2)])
    assert receptive_field(resized, resized.get_layer("conv"), 0, 0) is None


@pytest.mark.parametrize("query, expected", [
    ("layer=dense_1", "no conv layer 'dense_1'; its conv layers are: conv_1, conv_2"),
    ("layer=conv_1&channel=32", "channel must be in 0..31 for conv_1, not 32"),
    ("layer=conv_2&y=14", "y must be in 0..13"),
    ("layer=conv_1&x=-1", "x: Input should be greater than or equal to 0"),
    ("channel=1", "layer: Field required"),
    ("layer=conv_1&y=two", "y: Input should be a valid integer"),
])
def test_a_bad_layer_channel_or_position_is_a_422_with_a_reason(client, query, expected):
    answer = client.post(f"/api/conv?{query}", files={"file": ("seven.png", seven(), "image/png")})
    assert answer.status_code == 422 and expected in answer.json()["detail"]


def test_the_page_has_the_explainer_view(client):
    page = client.get("/").text
    script = client.get("/static/app.js").text
    assert 'id="conv-card"' in page and "/api/conv?" in script
