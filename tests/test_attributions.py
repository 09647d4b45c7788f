"""Attribution methods (cnnlab.attributions, `cnnlab explain`) and the tests of how far to trust them: each checks a
property an explanation must have, on models built here whose answer is known, or on the digits run; and the same
maps (and activation maximisation's patterns) on every Keras backend installed."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import missing
from test_report import QUADRANTS, quadrant_model

import cnnlab
from cnnlab.cli import main
from cnnlab.config import ATTRIBUTION_METHODS
from cnnlab.data import load_dataset
from cnnlab.explain import pixel_heat
from cnnlab.explain.faithfulness import (area, deletion_insertion, random_heats, randomised, rank_correlation,
                                         sanity_check, weighted_layer_names)
from cnnlab.explain.scores import class_probabilities
from cnnlab.model import ensemble_model

QUICK = {"integrated_gradients": {"steps": 16}, "smoothgrad": {"samples": 8}, "occlusion": {"patch": 4, "stride": 4}}
CAM_SHAPED = ("gradcam", "gradcam++", "scorecam", "occlusion")
ON_BOTH = ("gradcam", "saliency", "integrated_gradients")  # each of the three gradients


def maps_of(model, images, classes, methods=ATTRIBUTION_METHODS):
    return {m: cnnlab.attributions(model, images, m, classes, **QUICK.get(m, {})) for m in methods}


@pytest.fixture(scope="module")
def digits_model(digits_run):
    return cnnlab.load_model(digits_run / "best.keras")


@pytest.fixture(scope="module")
def digits_images():
    data = load_dataset("digits")
    return data.x_test[:6], data.y_test[:6]


def small_cnn(input_shape=(28, 28, 1), activation="softmax", seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(4, 3, activation="relu", padding="same", name="conv_a"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(6, 3, activation="relu", padding="same", name="conv_b"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation=activation, name="scores"),
    ])


def test_integrated_gradients_is_complete(digits_model, digits_images):
    """The attributions of an image add up to the change of the class *probability* from the black baseline to the
    image (what cnnlab's Integrated Gradients explains), within 5% at 128 steps."""
    images, _ = digits_images
    classes = digits_model.predict(images, verbose=0).argmax(axis=1)
    maps = cnnlab.attributions(digits_model, images, "integrated_gradients", classes, steps=128)
    assert maps.shape == images.shape
    change = class_probabilities(digits_model, images, classes) - class_probabilities(digits_model, 0 * images,
                                                                                         classes)
    assert np.all(np.abs(change) > 0.3)  # the test means something: the baseline is far from the class
    np.testing.assert_allclose(maps.sum(axis=(1, 2, 3)), change, rtol=0.05)
    blurred = cnnlab.attributions(digits_model, images[:2], "integrated_gradients", classes[:2], steps=128,
                                  baseline="blur")
    assert not np.allclose(blurred, maps[:2], atol=1e-3)  # another baseline, another path


@pytest.mark.parametrize("where", ["top-left", "bottom-left"])
def test_every_method_finds_the_only_region_the_model_sees(where):
    top, left = QUADRANTS[where]
    region = (slice(None), slice(top, top + 14), slice(left, left + 14))
    rng = np.random.default_rng(0)
    images = (rng.random((2, 28, 28, 1)) < 0.15).astype(np.float32)  # scattered ink everywhere
    images[:, top + 4:top + 10, left + 4:left + 10] = 1.0  # and a solid square inside the quadrant
    model = quadrant_model(QUADRANTS[where])
    for method, maps in maps_of(model, images, 1).items():
        assert maps.shape == (images.shape[:3] if method in CAM_SHAPED else images.shape), method
        heat = np.abs(pixel_heat(maps, method))
        assert heat[region].sum() / heat.sum() > 0.8, method  # a quarter of the image, most of the mass
    # deletion: ranking by a faithful map kills the class faster than a random ranking
    deletion, _ = deletion_insertion(model, images, pixel_heat(maps_of(model, images, 1, ["gradcam"])["gradcam"],
                                                               "gradcam"), [1, 1])
    random_deletion, _ = deletion_insertion(model, images, random_heats(images.shape[:3]), [1, 1])
    assert np.all(area(deletion) < area(random_deletion) - 0.1)


def test_the_sanity_check_tells_a_trained_model_from_a_randomised_one(digits_model, digits_images):
    images, _ = digits_images
    classes = digits_model.predict(images, verbose=0).argmax(axis=1)
    correlations = {m: sanity_check(digits_model, images, m, classes, **QUICK.get(m, {}))[0][1]
                    for m in ("gradcam", "saliency", "smoothgrad")}
    assert correlations["gradcam"] < 0.3 and correlations["smoothgrad"] < 0.3, correlations
    assert correlations["saliency"] < 0.8, correlations  # gradients keep some of the input's shape (Adebayo et al.)
    heat = np.abs(pixel_heat(cnnlab.attributions(digits_model, images, "saliency", classes), "saliency"))
    np.testing.assert_allclose(rank_correlation(heat, heat), 1.0)  # the same maps agree perfectly
    # cascading randomisation re-initialises layers from the output down, and leaves the model itself alone
    names = weighted_layer_names(digits_model)
    before = [w.copy() for w in digits_model.get_weights()]
    top_only = randomised(digits_model, 1)
    changed = [not np.allclose(a, b) for a, b in zip(before, top_only.get_weights())]
    assert changed == [False] * (len(before) - 2) + [True, True]  # the output layer: kernel and bias
    assert all(np.array_equal(a, b) for a, b in zip(before, digits_model.get_weights()))
    rows = sanity_check(digits_model, images[:2], "gradcam", classes[:2], cascading=True)
    assert [label for label, _ in rows] == [f"{name} and above" for name in names[::-1][:-1]] + ["all layers"]


@pytest.mark.slow  # a child process that imports its backend and compiles the gradients: ~20 s on 2 shared cores
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_same_maps_on_tensorflow_jax_and_torch(digits_run, digits_model, digits_images, tmp_path, backend):
    """The methods that take each backend's own autodiff (a conv layer's gradient, the input's, along a path), and
    activation maximisation's ascent: the same maps and patterns within float32 tolerance; the others only call the
    model."""
    if importlib.util.find_spec(backend) is None:
        missing(f"{backend} is not installed")
    images = np.clip(digits_images[0][:2] + np.random.default_rng(1).uniform(0, 0.02, digits_images[0][:2].shape),
                     0, 1).astype(np.float32)  # no exact ties for max-pooling to break differently
    np.save(tmp_path / "images.npy", images)
    child = (f"import json, sys, numpy as np, cnnlab; model = cnnlab.load_model({str(digits_run / 'best.keras')!r}); "
             f"images = np.load({str(tmp_path / 'images.npy')!r}); quick = {QUICK!r}; "
             f"np.savez({str(tmp_path / 'other.npz')!r}, **{{m: cnnlab.attributions(model, images, m, [3, 1], "
             f"**quick.get(m, {{}})) for m in {list(ON_BOTH)!r}}}, "
             f"maximized=cnnlab.maximize(model, 'conv_2', filters=[0, 7], steps=8)); "
             f"import keras; print(keras.backend.backend())")
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith(backend), done.stderr[-3000:]
    on_other = np.load(tmp_path / "other.npz")
    for method, maps in maps_of(digits_model, images, [3, 1], ON_BOTH).items():
        scale = np.abs(maps).max()
        np.testing.assert_allclose(on_other[method], maps, atol=2e-4 * scale, err_msg=method)
    np.testing.assert_allclose(on_other["maximized"], cnnlab.maximize(digits_model, "conv_2", filters=[0, 7], steps=8),
                               atol=1e-3)


def test_nested_backbone_logits_and_ensemble_models_get_the_same_maps(digits_images):
    """A nested backbone, a logits output and an ensemble are explained like the plain network they wrap."""
    images = digits_images[0][:2]
    plain = small_cnn()
    backbone = keras.Sequential(plain.layers[:3], name="backbone")  # the same layers, as a nested model
    inputs = keras.Input((28, 28, 1))
    nested = keras.Model(inputs, plain.layers[4](plain.layers[3](backbone(inputs))))
    logits = small_cnn(activation=None)
    logits.set_weights(plain.get_weights())
    other = small_cnn(seed=1)
    ensemble = ensemble_model([plain, other])
    expected = maps_of(plain, images, [2, 5])
    for model in (nested, logits, ensemble):
        for method, maps in maps_of(model, images, [2, 5]).items():
            np.testing.assert_allclose(maps, expected[method], atol=1e-5, err_msg=f"{model.name}: {method}")
    predicted = ensemble.predict(images, verbose=0).argmax(axis=1)  # no class given: the ensemble's own prediction
    np.testing.assert_allclose(cnnlab.attributions(ensemble, images, "gradcam"),
                               cnnlab.attributions(plain, images, "gradcam", predicted), atol=1e-5)


def test_colour_inputs_get_maps_of_their_shape():
    model = small_cnn((16, 20, 3))
    images = np.random.default_rng(0).random((3, 16, 20, 3)).astype(np.float32)
    for method, maps in maps_of(model, images, None).items():
        assert maps.shape == ((3, 16, 20) if method in CAM_SHAPED else (3, 16, 20, 3)), method
        assert np.isfinite(maps).all() and np.abs(maps).max() > 0, method
    gradients = cnnlab.attributions(model, images, "saliency", 0)
    assert not np.allclose(gradients[..., 0], gradients[..., 1])  # one gradient per colour channel


def test_an_images_map_does_not_depend_on_the_others_in_its_batch(digits_model, digits_images):
    images = digits_images[0][:3]
    for method, options in (("smoothgrad", {"samples": 8}), ("integrated_gradients", {"steps": 8}),
                            ("occlusion", {"patch": 7, "stride": 7})):
        together = cnnlab.attributions(digits_model, images, method, 2, **options)
        alone = cnnlab.attributions(digits_model, images[1:2], method, 2, **options)
        np.testing.assert_allclose(alone[0], together[1], atol=1e-6 * np.abs(together).max(), err_msg=method)


def test_bad_calls_say_what_is_wrong(digits_images):
    model, images = small_cnn(), digits_images[0][:1]
    with pytest.raises(cnnlab.CnnlabError, match="unknown attribution method 'lime'; choose one of gradcam"):
        cnnlab.attributions(model, images, "lime")
    with pytest.raises(cnnlab.CnnlabError, match="integrated_gradients takes steps, baseline, not patch"):
        cnnlab.attributions(model, images, "integrated_gradients", patch=3)
    with pytest.raises(cnnlab.CnnlabError, match=r"a batch of images \(N, 28, 28, 1\).*image\[None\]"):
        cnnlab.attributions(model, images[0], "saliency")
    with pytest.raises(cnnlab.CnnlabError, match="class index must be in 0..9, not 10"):
        cnnlab.attributions(model, images, "saliency", 10)
    with pytest.raises(cnnlab.CnnlabError, match="class_index gives 2 classes for 1 images"):
        cnnlab.attributions(model, images, "saliency", [1, 2])
    with pytest.raises(cnnlab.CnnlabError, match="smoothgrad needs a whole number of samples >= 1"):
        cnnlab.attributions(model, images, "smoothgrad", samples=0)
    with pytest.raises(cnnlab.CnnlabError, match="steps must be a whole number of at least 1, not 2.5"):
        cnnlab.attributions(model, images, "integrated_gradients", steps=2.5)
    with pytest.raises(cnnlab.CnnlabError, match="class index must be an int .* not 1.7"):
        cnnlab.attributions(model, images, "saliency", 1.7)
    with pytest.raises(cnnlab.CnnlabError, match=r"no images \(an empty batch\)"):
        cnnlab.attributions(model, images[:0], "saliency")
    pixels = np.round(images * 255).astype(np.uint8)  # 0..255 pixels are taken as cnnlab reads them
    np.testing.assert_allclose(cnnlab.attributions(model, pixels, "saliency", 3),
                               cnnlab.attributions(model, pixels / np.float32(255), "saliency", 3), rtol=1e-5)
    with pytest.raises(cnnlab.CnnlabError, match=r"in \[0, 1\] .* from 0 to \d+; 0..255 pixels are / 255"):
        cnnlab.attributions(model, np.round(images * 255), "saliency")
    with pytest.raises(cnnlab.CnnlabError, match="and NaN or infinity"):
        cnnlab.attributions(model, np.where(images > 0.5, np.nan, images), "saliency")
    with pytest.raises(cnnlab.CnnlabError, match=r"1 <= stride <= patch \(a longer stride leaves pixels no square"):
        cnnlab.attributions(model, images, "occlusion", patch=2, stride=5)
    dense = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.raises(cnnlab.CnnlabError, match="gradcam weighs the last conv layer's maps and .* has no conv layer"):
        cnnlab.attributions(dense, images, "gradcam")
    assert cnnlab.attributions(dense, images, "saliency").shape == images.shape  # the others need no conv layer


@pytest.mark.parametrize("head", [keras.layers.Dense(1, activation="sigmoid"), keras.layers.Dense(1)])
def test_a_model_with_one_output_unit_is_refused_everywhere_not_read_as_one_class(digits_images, tmp_path, capsys,
                                                                                 head):
    """A binary classifier's one unit (a sigmoid's probability, or a logit) read as one class's score would give every
    image that class at 100%, and explanations of nothing: cnnlab says it cannot tell what the unit means."""
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), head])
    with pytest.raises(cnnlab.CnnlabError, match="one output unit .* end the model in Dense\\(2\\)"):
        cnnlab.attributions(model, digits_images[0][:1], "saliency")
    for refused in (lambda: cnnlab.maximize(model, model.layers[-1].name, steps=2),
                    lambda: cnnlab.predict(model, digits_images[0][:1]),
                    lambda: cnnlab.explain.grad_cam(model, digits_images[0][0])):
        with pytest.raises(cnnlab.CnnlabError, match="one output unit"):
            refused()
    assert cnnlab.maximize(model, model.layers[0].name, steps=2).shape == (4, 28, 28, 1)  # its filters are filters
    model.save(tmp_path / "binary.keras")
    from PIL import Image

    Image.fromarray(np.uint8(digits_images[0][0, ..., 0] * 255)).save(tmp_path / "digit.png")
    model_file, image_file = str(tmp_path / "binary.keras"), str(tmp_path / "digit.png")
    for command in (["predict", model_file, image_file], ["serve", model_file, "--port", "0"],
                    ["explain", model_file, "--image", image_file, "--out", str(tmp_path / "out")],
                    ["inspect", model_file, "--image", image_file, "--maximize", "--out", str(tmp_path / "out")]):
        assert main(command) == 2, command
        error = capsys.readouterr().err
        assert "one output unit" in error and error.count("\n") == 1, error
    # its filters and feature maps need no class scores
    assert main(["inspect", model_file, "--image", image_file, "--out", str(tmp_path / "maps")]) == 0


def test_explain_cli_writes_the_figure_maps_and_scores(digits_run, digits_model, tmp_path, capsys):
    out = tmp_path / "explained"
    assert main(["explain", str(digits_run / "best.keras"), "--index", "2", "--method", "all", "--out", str(out),
                 "--steps", "8", "--patch", "7", "--stride", "7"]) == 0
    assert capsys.readouterr().out.split() == [str(out / f"attributions_2{s}") for s in (".png", ".npz", ".json")]
    record = json.loads((out / "attributions_2.json").read_text())
    image = load_dataset("digits").x_test[2]
    assert record["class_index"] == int(digits_model.predict(image[None], verbose=0).argmax())
    assert sorted(record["methods"]) == sorted(ATTRIBUTION_METHODS)
    assert record["methods"]["integrated_gradients"]["options"] == {"steps": 8}
    maps = np.load(out / "attributions_2.npz")
    for method, entry in record["methods"].items():
        assert maps[method].shape == ((28, 28) if method in CAM_SHAPED else (28, 28, 1)) == tuple(entry["map_shape"])
        assert 0 <= entry["deletion_area"] < entry["insertion_area"] <= 1, method
    np.testing.assert_allclose(maps["gradcam"], cnnlab.attributions(digits_model, image[None], "gradcam")[0],
                               atol=1e-5)
    from PIL import Image

    assert Image.open(out / "attributions_2.png").width > 1000  # eight panels side by side


@pytest.mark.parametrize("flags, message", [
    (["--method", "lime"], "--method must be all or one or more of gradcam"),
    (["--method", "gradcam", "--steps", "8"], "--steps is an option of integrated_gradients, which --method gradcam"),
    (["--steps", "0"], "--steps must be at least 1, not 0"),
    (["--class", "12", "--method", "saliency"], "class index must be in 0..9, not 12"),
    (["--method", "integrated_gradients", "--baseline", "white"], "--baseline must be black, blur or an image file, "
                                                                   "not white (not a file)"),
    (["--index", "1", "--image", "x.png"], "not allowed with argument --index"),
])
def test_explain_cli_refuses_bad_flags_in_one_line(digits_run, tmp_path, capsys, flags, message):
    try:
        status = main(["explain", str(digits_run / "best.keras"), "--out", str(tmp_path), *flags])
    except SystemExit as e:  # argparse's own errors
        status = e.code
    error = capsys.readouterr().err.strip()
    assert status == 2 and message in error and "\n" not in error and "Traceback" not in error
