"""Models as Keras tutorials write them, trained here on the digits and saved as .keras and legacy .h5: cnnlab scores
each exactly as plain Keras does, and every command that looks inside works or says why not.

The family: Input((28, 28)) with a Reshape; logits out (from_logits=True); two parallel branches with batch
normalisation; SeparableConv2D and DepthwiseConv2D; a dense-only baseline; a nested Sequential backbone (the transfer
learning shape); a Rescaling(1/255) first layer trained on 0..255 pixels.
"""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.evaluation import as_probabilities
from cnnlab.prediction import Classifier

L = keras.layers


def input_reshape():
    inputs = keras.Input((28, 28))
    x = L.Reshape((28, 28, 1))(inputs)
    x = L.MaxPooling2D()(L.Conv2D(16, 3, activation="relu", padding="same")(x))
    return keras.Model(inputs, L.Dense(10, activation="softmax")(L.Flatten()(x)))


def logits():
    return keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(),
                             L.Flatten(), L.Dense(10)])


def branches_with_batch_norm():
    inputs = keras.Input((28, 28, 1))
    left = L.BatchNormalization()(L.Conv2D(8, 3, padding="same", activation="relu")(inputs))
    right = L.BatchNormalization()(L.Conv2D(8, 5, padding="same", activation="relu")(inputs))
    x = L.MaxPooling2D()(L.Concatenate()([left, right]))
    return keras.Model(inputs, L.Dense(10, activation="softmax")(L.Flatten()(x)))


def separable_and_depthwise():
    return keras.Sequential([keras.Input((28, 28, 1)), L.SeparableConv2D(16, 3, activation="relu"), L.MaxPooling2D(),
                             L.DepthwiseConv2D(3, activation="relu"), L.Flatten(), L.Dense(10, activation="softmax")])


def dense_only():
    return keras.Sequential([keras.Input((28, 28, 1)), L.Flatten(), L.Dense(64, activation="relu"),
                             L.Dense(10, activation="softmax")])


def nested_backbone():
    backbone = keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(),
                                 L.Conv2D(32, 3, activation="relu")], name="backbone")
    inputs = keras.Input((28, 28, 1))
    x = L.Flatten()(backbone(inputs))
    return keras.Model(inputs, L.Dense(10, activation="softmax")(L.Dropout(0.2)(x)))


def rescaling():
    return keras.Sequential([keras.Input((28, 28, 1)), L.Rescaling(1 / 255), L.Conv2D(16, 3, activation="relu"),
                             L.MaxPooling2D(), L.Flatten(), L.Dense(10, activation="softmax")])


FAMILY = {"input_reshape": input_reshape, "logits": logits, "branches_bn": branches_with_batch_norm,
          "separable_depthwise": separable_and_depthwise, "dense_only": dense_only,
          "nested_backbone": nested_backbone, "rescaling": rescaling}
NO_CONV = {"dense_only"}


def as_trained(name, images):
    """The images as that model was trained on them: 0..255 for the Rescaling model, no channel axis for Reshape."""
    if name == "rescaling":
        return np.round(images * 255)
    return images[..., 0] if name == "input_reshape" else images


def saved_family(folder):
    """Each model trained for 4 epochs on the digits and saved both ways into `folder`:
    {name: {"paths": {".keras": path, ".h5": path}, "keras_accuracy": plain Keras's test accuracy}}."""
    data = load_dataset("digits")
    built = {}
    for name, make in FAMILY.items():
        keras.utils.set_random_seed(1)
        model = make()
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=name == "logits"),
                      metrics=["accuracy"])
        model.fit(as_trained(name, data.x_train), data.y_train, epochs=4, batch_size=32, verbose=0)
        accuracy = float(np.mean(np.argmax(model.predict(as_trained(name, data.x_test), verbose=0), axis=1)
                                 == data.y_test))
        paths = {suffix: Path(folder) / f"{name}{suffix}" for suffix in (".keras", ".h5")}
        for path in paths.values():
            model.save(path)
        built[name] = {"paths": paths, "keras_accuracy": accuracy}
    return built


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return saved_family(tmp_path_factory.mktemp("family"))


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("name", sorted(FAMILY))
def test_evaluate_scores_as_plain_keras_and_inspect_works_or_says_why(family, capsys, tmp_path, name, suffix):
    entry = family[name]
    assert entry["keras_accuracy"] > 0.5, entry  # each model learnt something: the comparison means something
    path = entry["paths"][suffix]
    assert main(["evaluate", str(path), "--dataset", "digits", "--out", str(tmp_path / "evaluate")]) == 0
    scored = json.loads((tmp_path / "evaluate" / "evaluation.json").read_text())
    assert scored["test_accuracy"] == pytest.approx(entry["keras_accuracy"], abs=1e-9), name
    capsys.readouterr()
    code = main(["inspect", str(path), "--dataset", "digits", "--out", str(tmp_path / "inspect")])
    if name in NO_CONV:
        assert code == 2 and "has no conv layer" in capsys.readouterr().err
        return
    assert code == 0
    figures = {p.name for p in (tmp_path / "inspect").iterdir()}
    assert any(f.startswith("filters_") for f in figures) and any(f.startswith("feature_maps_") and
                                                                  f != "feature_maps_input.png" for f in figures)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILY.keys() - NO_CONV))
def test_the_report_of_every_family_member_is_whole(family, tmp_path, name):
    out = tmp_path / "report.html"
    assert main(["report", str(family[name]["paths"][".keras"]), "--dataset", "digits", "--out", str(out)]) == 0
    page = out.read_text()
    assert "Grad-CAM" in page and page.count("data:image/png;base64,") >= 8
    scored = f"{family[name]['keras_accuracy']:.2%}"
    assert scored in page, (name, scored)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILY.keys() - NO_CONV))
def test_predict_and_serve_take_every_family_member(family, name):
    """The Classifier behind predict and serve, on models named as keras.Model names them ("functional")."""
    classifier = Classifier.load(family[name]["paths"][".keras"])
    image = load_dataset("digits").x_test[0]
    found = classifier.explain(image)
    assert found["feature_maps"] and found["grad_cam"].shape == image.shape[:2]
    model = keras.models.load_model(family[name]["paths"][".keras"])
    expected = model.predict(as_trained(name, image[None]), verbose=0)[0]
    np.testing.assert_allclose(found["probabilities"], as_probabilities(expected[None])[0], atol=1e-5)


def test_a_model_named_as_keras_names_it_is_predicted_in_a_fresh_process(tmp_path):
    """keras.Model(inputs, outputs) is named "functional", and so is the next model a fresh process makes unnamed:
    `cnnlab predict` (and serve) once made one beside the loaded model and failed on the clash."""
    inputs = keras.Input((40, 48, 3))
    x = L.Conv2D(4, 3, activation="relu")(L.Rescaling(1 / 255)(inputs))
    keras.Model(inputs, L.Dense(5)(L.GlobalAveragePooling2D()(x)), name="functional").save(tmp_path / "m.keras")
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(tmp_path / "photo.png")
    done = subprocess.run([sys.executable, "-m", "cnnlab", "predict", str(tmp_path / "m.keras"),
                           str(tmp_path / "photo.png")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "photo.png" in done.stdout


def test_a_rescaling_after_a_nested_augmentation_block_is_found():
    """Keras's image-classification tutorial: `data_augmentation` (a Sequential of random layers) then
    Rescaling(1/255): the model wants 0..255 pixels, though its first layer is the augmentation block."""
    from cnnlab.feeding import model_input

    augmentation = keras.Sequential([L.RandomFlip("horizontal"), L.RandomRotation(0.1)])
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(4, 3)(L.Rescaling(1.0 / 255)(augmentation(inputs)))
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(x)))
    assert model_input(model).pixel_scale == 255.0
    assert model_input(keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(2, 3), L.Rescaling(1 / 255)])).pixel_scale == 1.0
