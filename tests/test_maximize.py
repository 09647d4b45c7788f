"""Activation maximisation (cnnlab.maximize, `cnnlab inspect --maximize`, the report's section): the pattern found
for a filter or a class excites it far more than real images do, on any model shape and input scaling."""

import re

import keras
import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.errors import ConfigError
from cnnlab.explain.maximize import mean_activations
from cnnlab.inspection import load_model, untrained_model


@pytest.fixture(scope="module")
def trained(digits_run):
    return load_model(digits_run / "best.keras")


@pytest.fixture(scope="module")
def test_images():
    data = load_dataset("digits")
    return data.x_test[np.random.default_rng(0).choice(len(data.x_test), 100, replace=False)]


@pytest.fixture(scope="module")
def patterns(trained):
    return {layer: cnnlab.maximize(trained, layer) for layer in ("conv_1", "conv_2")}


@pytest.mark.parametrize("layer", ["conv_1", "conv_2"])
def test_each_filters_pattern_excites_it_more_than_any_test_image(trained, test_images, patterns, layer):
    assert patterns[layer].shape[1:] == (28, 28, 1) and patterns[layer].min() >= 0 and patterns[layer].max() <= 1
    own = np.diag(mean_activations(trained, layer, patterns[layer]))  # filter k's activation on pattern k
    real = mean_activations(trained, layer, test_images)
    beats_all = own > real.max(axis=0)
    far_above = own >= real.mean(axis=0) + 5 * real.std(axis=0)
    # a filter no noise ever excites (dead on every start) keeps its noise: at most a few of a layer's
    assert np.mean(beats_all & far_above) >= 0.9, np.round((own - real.mean(0)) / real.std(0), 1)


@pytest.mark.parametrize("layer", ["conv_1", "conv_2"])
def test_the_regularised_pattern_excites_its_filter_as_much_as_plain_ascent_does(trained, patterns, layer):
    """The regularisers shape the pattern; its final unregularised steps take it to what 512 plain steps of ascent
    reach (without them conv_2's median filter got 0.94 of it on this model, with them 0.98)."""
    own = np.diag(mean_activations(trained, layer, patterns[layer]))
    plain = cnnlab.maximize(trained, layer, steps=512, jitter=0, blur=0, decay=0)
    alive = own > 0
    assert alive.mean() >= 0.9
    assert np.median(own[alive] / np.diag(mean_activations(trained, layer, plain))[alive]) >= 0.95


@pytest.mark.slow  # trains the seed network on real MNIST for 2 epochs: ~20 s on 2 cores
def test_on_real_mnist_a_pattern_excites_its_filter_five_times_more_than_random_images(mnist_dir):
    """The issue's measure, on the seed network trained on MNIST (the digits model above is too weak a model for it):
    each filter's mean activation on its pattern over its mean on random test images and on uniform noise. conv_1's
    filters see 3x3 pixels, and for many of them no image in [0, 1] gets 5x what noise gives (benchmarks/maximize.py
    works out that bound), so conv_1 is held to 5x the test images' alone."""
    from cnnlab.config import make_config
    from cnnlab.model import build_model
    from cnnlab.training import set_seeds

    data = load_dataset("mnist", mnist_dir)
    set_seeds(0)
    model = build_model(make_config(dataset="mnist"))
    model.fit(data.x_train, data.y_train, epochs=2, batch_size=64, verbose=0)
    rng = np.random.default_rng(0)
    test_images = data.x_test[rng.choice(len(data.x_test), 100, replace=False)]
    noise = rng.uniform(0, 1, (100, 28, 28, 1)).astype(np.float32)

    def excitation(layer, *references):
        own = np.diag(mean_activations(model, layer, cnnlab.maximize(model, layer)))
        return [own / np.maximum(mean_activations(model, layer, images).mean(axis=0), 1e-9) for images in references]

    over_test, over_noise = excitation("conv_2", test_images, noise)  # 89% and 98% of the filters, on this machine
    assert np.mean(over_test >= 5) >= 0.75 and np.mean(over_noise >= 5) >= 0.85, (over_test, over_noise)
    [over_test] = excitation("conv_1", test_images)  # 6.5x
    assert np.median(over_test) >= 5, over_test


def test_each_class_pattern_is_that_class_at_five_times_the_probability_of_test_images(trained, test_images):
    patterns = cnnlab.maximize(trained, "probabilities", steps=64)
    probabilities = trained.predict(patterns, verbose=0)
    assert np.array_equal(probabilities.argmax(axis=1), np.arange(10))
    # the score ascended is before the softmax; the probability follows it
    assert np.all(np.diag(probabilities) >= 5 * trained.predict(test_images, verbose=0).mean(axis=0))


def backbone_models():
    """One nested colour backbone, in a model fed [0, 1] and in one fed 0..255 (Rescaling in front): the same
    network, so it must want the same patterns, on their own scales."""
    keras.utils.set_random_seed(3)
    backbone = keras.Sequential([keras.Input((16, 16, 3)),
                                 keras.layers.Conv2D(6, 3, activation="relu", name="inner_conv"),
                                 keras.layers.MaxPooling2D(),
                                 keras.layers.Conv2D(8, 3, activation="relu", name="deep_conv")], name="backbone")
    head = [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4, activation="softmax", name="classes")]
    plain_in = keras.Input((16, 16, 3))
    plain = keras.Model(plain_in, head[1](head[0](backbone(plain_in))))
    scaled_in = keras.Input((16, 16, 3))
    scaled = keras.Model(scaled_in, head[1](head[0](backbone(keras.layers.Rescaling(1 / 255)(scaled_in)))))
    return plain, scaled


def test_a_nested_colour_backbone_and_the_models_input_scaling():
    plain, scaled = backbone_models()
    patterns = cnnlab.maximize(plain, "deep_conv", steps=48)
    assert patterns.shape == (8, 16, 16, 3) and patterns.min() >= 0 and patterns.max() <= 1
    noise = np.random.default_rng(1).uniform(0, 1, (32, 16, 16, 3)).astype(np.float32)
    own = np.diag(mean_activations(plain, "deep_conv", patterns))
    best_noise = mean_activations(plain, "deep_conv", noise).max(axis=0)
    alive = best_noise > 0  # an untrained ReLU filter can be dead for every input
    assert alive.sum() >= 4 and np.all(own[alive] > best_noise[alive])
    # the 0..255 model gets its patterns through its own scaling: the same images in [0, 1]
    np.testing.assert_allclose(cnnlab.maximize(scaled, "deep_conv", steps=48), patterns, atol=1e-3)
    assert cnnlab.maximize(plain, "classes", filters=[2], steps=8).shape == (1, 16, 16, 3)


def test_a_wrong_layer_or_filter_is_a_one_line_error_that_lists_the_layers(trained):
    with pytest.raises(ConfigError) as error:
        cnnlab.maximize(trained, "conv_9")
    assert "conv_9" in str(error.value) and "conv_1, conv_2, probabilities" in str(error.value)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r"64 filters \(0\.\.63\); there is no 64"):
        cnnlab.maximize(trained, "conv_2", filters=[3, 64])
    with pytest.raises(ConfigError, match=r"polish= .* in 0\.\.1, not 2"):
        cnnlab.maximize(trained, "conv_2", polish=2)
    for steps in (0, 2.5):
        with pytest.raises(ConfigError, match=f"steps= must be a whole number >= 1, not {steps}"):
            cnnlab.maximize(trained, "conv_2", steps=steps)


def test_a_wrong_step_count_is_refused_before_the_model_is_read(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "no_such.keras"), "--maximize", "--maximize-steps", "0"]) == 2
    assert capsys.readouterr().err == "cnnlab: error: --maximize-steps must be in 1..1000, not 0\n"
    assert main(["inspect", str(tmp_path / "no_such.keras"), "--maximize-steps", "8"]) == 2
    assert capsys.readouterr().err == "cnnlab: error: --maximize-steps is an option of --maximize; add --maximize\n"


def test_inspect_maximize_draws_a_nested_colour_models_layers_trained_beside_untrained(tmp_path, capsys):
    plain, _ = backbone_models()
    plain.save(tmp_path / "nested.keras")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    assert main(["inspect", str(tmp_path / "nested.keras"), "--image", str(tmp_path / "in.png"), "--maximize",
                 "--maximize-steps", "4", "--out", str(tmp_path / "figures")]) == 0
    printed = capsys.readouterr().out
    for name in ("inner_conv", "deep_conv", "classes"):
        path = tmp_path / "figures" / f"maximized_{name}.png"
        assert str(path) in printed
        with Image.open(path) as picture:  # trained above untrained, in colour
            assert picture.height > 150 and np.ptp(np.asarray(picture.convert("RGB"), np.int16), axis=2).max() > 0
    untrained = untrained_model(plain)
    assert not np.allclose(untrained.get_layer("backbone").get_layer("deep_conv").kernel,
                           plain.get_layer("backbone").get_layer("deep_conv").kernel)


def test_the_report_shows_each_conv_layers_patterns(digits_run):
    html = (digits_run / "report.html").read_text(encoding="utf-8")
    section = re.search(r'<section id="maximized".*?</section>', html, re.DOTALL).group(0)
    assert section.count('<img src="data:image/png;base64,') == 2
    assert "conv_1:" in section and "conv_2:" in section


def test_the_untrained_copy_draws_every_weight_again_the_depthwise_ones_too():
    """DepthwiseConv2D keeps its initializer as depthwise_initializer and SeparableConv2D as depthwise_ and
    pointwise_: every weight with an initializer is drawn again, so an untrained view never shows trained weights."""
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.DepthwiseConv2D(3, name="dw"),
                              keras.layers.SeparableConv2D(4, 3, name="sep"), keras.layers.Flatten(),
                              keras.layers.Dense(3, name="out")])
    for variable in model.weights:
        variable.assign(np.full(variable.shape, 7.0, np.float32))  # no initializer draws 7 everywhere
    fresh = untrained_model(model)
    assert [v.path.split("/", 1)[1] for v in fresh.weights if np.all(np.asarray(v) == 7.0)] == []
    assert np.all(np.asarray(model.weights[0]) == 7.0)  # the model itself is left alone
