"""The training recipes (seed, fast, best): they build, train on tiny data and record their settings.

Correctness only: how fast they are and how well they score is measured by benchmarks/, not here.
"""

import csv
import json
import math

import keras
import numpy as np
import pytest

from cnnlab.cli import build_parser, training_config
from cnnlab.config import RECIPE_DATASET_SETTINGS, RECIPES, make_config
from cnnlab.errors import ConfigError
from cnnlab.inspection import ensemble_members, network
from cnnlab.model import augmentation_layers, build_model, learning_rate
from cnnlab.pipeline import train_run

TINY = {"dataset": "digits", "limit_train": 200, "epochs": 1}  # 160 training images: 2 steps at batch 128


@pytest.fixture(scope="module", params=list(RECIPES))
def recipe_run(request, tmp_path_factory):
    """Each recipe trained one epoch on 160 digits, through the pipeline a `cnnlab train --recipe` runs."""
    config = make_config(recipe=request.param, **TINY)
    run, best, _, metrics = train_run(config, tmp_path_factory.mktemp(request.param), name="run", verbose=0)
    return request.param, config, run, best, metrics


def test_seed_recipe_is_the_seed_notebooks_training():
    c = make_config(recipe="seed")
    assert (c.conv_filters, c.kernel_size, c.dense_units, c.dropout) == ([32, 64], 3, [100], 0.4)
    assert (c.optimizer, c.learning_rate, c.lr_schedule, c.batch_size, c.epochs) == ("adam", 1e-3, "constant", 32, 20)
    assert (c.monitor, c.patience, c.restore_best_weights, c.validation_split, c.validation_freq) == ("val_loss", 2, True, 0.2, 1)
    assert (c.batch_norm, c.convs_per_block, c.precision) == (False, 1, "float32")
    assert (c.augment_flip, c.augment_translate, c.augment_rotate, c.augment_zoom) == (False, 0, 0, 0)
    assert make_config(recipe="seed") == make_config()  # no recipe is the seed recipe


def test_each_recipe_trains_and_records_its_settings(recipe_run):
    name, config, run, best, metrics = recipe_run
    recorded = json.loads(run.config.read_text())
    assert recorded["recipe"] == name == metrics["recipe"]
    for key, value in {**RECIPES[name], **TINY}.items():
        assert recorded[key] == value, key
    assert make_config(file=run.config) == config  # config.json reproduces the run
    rows = list(csv.DictReader(run.history.open()))
    assert len(rows) == config.ensemble  # one epoch of each network
    assert all(math.isfinite(float(row["loss"])) and math.isfinite(float(row["val_loss"])) for row in rows)
    assert 0 <= metrics["val_accuracy"] <= 1 and best.output_shape == (None, 10)
    assert metrics["test_time_augmentation"] == config.test_time_augmentation


def test_recipes_build_the_network_they_describe(recipe_run):
    name, config, run, best, _ = recipe_run
    members = ensemble_members(best)
    assert len(members) == (config.ensemble if config.ensemble > 1 else 0)
    kinds = [type(layer).__name__ for layer in network(best).layers]
    assert kinds.count("Conv2D") == len(config.conv_filters) * config.convs_per_block
    assert kinds.count("BatchNormalization") == (len(config.conv_filters) if config.batch_norm else 0)
    augmenting = {"RandomFlip", "RandomTranslation", "RandomRotation", "RandomZoom"} & set(kinds)
    assert bool(augmenting) == bool(config.augment_flip or config.augment_translate or config.augment_rotate
                                    or config.augment_zoom)
    layers = network(best).layers
    hidden = {layer.dtype_policy.name for layer in layers[:-1] if not layer.name.startswith("random_")}
    assert hidden == {config.precision} and layers[-1].dtype_policy.name == "float32"  # softmax in float32


def test_augmentation_is_off_at_inference(recipe_run):
    name, config, run, best, _ = recipe_run
    images = np.random.default_rng(0).random((4, 28, 28, 1), np.float32)
    for layer in network(best).layers:
        if layer.name.startswith("random_"):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_augmentation_layers_draw_independent_transforms(dataset):
    """Layers seeded alike would draw the same numbers: each image's zoom would follow its shift."""
    images = np.zeros((256, 28, 28, 1), np.float32)
    draws = []
    for layer in augmentation_layers(make_config(recipe="best", dataset=dataset)):
        transform = layer.get_random_transformation(images, training=True)
        for key in ("flips", "translations", "angle", "height_zoom", "width_zoom"):
            if key in transform:
                values = keras.ops.convert_to_numpy(transform[key]).astype(np.float32).reshape(len(images), -1)
                draws += list(values.T)
    assert len(draws) >= 3
    correlations = np.corrcoef(draws) - np.eye(len(draws))
    assert np.abs(correlations).max() < 0.3, correlations.round(2)


def test_a_recipe_can_tune_itself_to_a_dataset_and_flags_still_win():
    fashion = make_config(recipe="best", dataset="fashion_mnist")
    for key, value in RECIPE_DATASET_SETTINGS[("best", "fashion_mnist")].items():
        assert getattr(fashion, key) == value, key
    assert fashion.batch_norm and fashion.lr_schedule == RECIPES["best"]["lr_schedule"]  # the rest is the recipe's
    assert make_config(recipe="best", dataset="mnist").conv_filters == RECIPES["best"]["conv_filters"]
    assert make_config(recipe="best", dataset="fashion_mnist", epochs=3).epochs == 3
    model = build_model(fashion, steps_per_epoch=1)
    assert model.layers[0].name == "random_flip" and model.layers[0].mode == "horizontal"


def test_one_cycle_warms_up_to_the_peak_and_decays_to_zero():
    config = make_config(lr_schedule="one_cycle", learning_rate=0.004, epochs=2, warmup_fraction=0.25)
    schedule = learning_rate(config, steps_per_epoch=50)  # 100 steps, 25 of warm-up
    lr = [float(schedule(step)) for step in (0, 12, 25, 60, 100)]
    assert lr[0] == pytest.approx(0.004 / 25) and lr[0] < lr[1] < lr[2] == pytest.approx(0.004)
    assert lr[2] > lr[3] > lr[4] and lr[4] == pytest.approx(0, abs=1e-9)
    cosine = learning_rate(make_config(lr_schedule="cosine", learning_rate=0.01, epochs=1), steps_per_epoch=10)
    assert float(cosine(0)) == pytest.approx(0.01) and float(cosine(10)) == pytest.approx(0, abs=1e-9)
    assert learning_rate(make_config()) == 1e-3
    with pytest.raises(ValueError, match="steps_per_epoch"):
        build_model(config)


def test_validation_every_n_epochs_leaves_gaps_and_keeps_the_last(tmp_path):
    config = make_config(dataset="digits", limit_train=200, epochs=3, validation_freq=2, monitor="val_accuracy",
                         steps_per_execution=3, eval_batch_size=7)
    run, *_ = train_run(config, tmp_path, name="run", verbose=0)
    rows = list(csv.DictReader(run.history.open()))
    validated = [int(r["epoch"]) for r in rows if r["val_loss"] != "nan"]
    assert validated == [2, 3] and [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert run.best_model.exists()


def test_cli_flags_set_every_new_setting():
    args = build_parser().parse_args([
        "train", "--recipe", "fast", "--no-batch-norm", "--convs-per-block", "2", "--precision", "float32",
        "--augment-flip", "--augment-translate", "0.1", "--augment-rotate", "10", "--augment-zoom", "0.2", "--lr-schedule", "cosine",
        "--warmup-fraction", "0.1", "--steps-per-execution", "8", "--jit-compile", "false", "--validation-freq", "3",
        "--eval-batch-size", "256", "--ensemble", "3"])
    c = training_config(args)
    assert (c.recipe, c.batch_norm, c.convs_per_block, c.precision) == ("fast", False, 2, "float32")
    assert (c.augment_flip, c.augment_translate, c.augment_rotate, c.augment_zoom) == (True, 0.1, 10, 0.2)
    assert (c.lr_schedule, c.warmup_fraction, c.steps_per_execution, c.jit_compile) == ("cosine", 0.1, 8, "false")
    assert (c.validation_freq, c.eval_batch_size, c.batch_size) == (3, 256, RECIPES["fast"]["batch_size"])
    assert c.ensemble == 3


def test_jit_compile_takes_toml_booleans(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("jit_compile = true\n")
    assert make_config(file=path).jit_compile == "true"


@pytest.mark.parametrize("overrides,field", [
    ({"precision": "float8"}, "precision"),
    ({"lr_schedule": "linear"}, "lr_schedule"),
    ({"warmup_fraction": 1.0}, "warmup_fraction"),
    ({"augment_translate": 0.8}, "augment_translate"),
    ({"augment_rotate": -1}, "augment_rotate"),
    ({"augment_zoom": 1.0}, "augment_zoom"),
    ({"convs_per_block": 0}, "convs_per_block"),
    ({"ensemble": 0}, "ensemble"),
    ({"ensemble": 11}, "ensemble"),
    ({"ensemble": 3, "seed": 2**32 - 2}, "seed"),
    ({"steps_per_execution": 0}, "steps_per_execution"),
    ({"jit_compile": "maybe"}, "jit_compile"),
    ({"validation_freq": 0}, "validation_freq"),
    ({"eval_batch_size": 0}, "eval_batch_size"),
    ({"batch_norm": "sometimes"}, "batch_norm"),
    ({"test_time_augmentation": "rotate"}, "test_time_augmentation"),
])
def test_bad_values_of_the_new_settings_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        make_config(**overrides)
