"""The JAX backend (the one for GPUs): cnnlab's scanned training steps compute what Keras's own step loop computes.

Keras picks its backend once per process, so the training runs in a child process with KERAS_BACKEND=jax.
Dropout is off: on the blocky upscaled digits, max-pooling has exact ties, and with dropout a 1e-7 change of one
kernel (rounding, or the same run with its first kernel scaled by 1 + 1e-7) moves the weights by 1.6e-3 in one
epoch, which would hide what this test looks for: a step skipped, repeated or run on the wrong batch.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")

CHILD = r"""
import json, sys
from pathlib import Path

import jax
import numpy as np

from cnnlab import training
from cnnlab.config import make_config
from cnnlab.pipeline import load_data
from cnnlab.model import build_model

out = Path(sys.argv[1])
scanned_calls = []
make_scanned = training.scanned_train_function


def counting(model, steps):
    function = make_scanned(model, steps)

    def train_function(state, iterator):
        scanned_calls.append(steps)
        return function(state, iterator)

    return train_function


training.scanned_train_function = counting
use_scanned = training.use_scanned_steps
results = {}
for name, scanned in (("keras_loop", False), ("scanned", True)):
    training.use_scanned_steps = use_scanned if scanned else (lambda model: False)
    config = make_config(dataset="digits", epochs=2, batch_size=32, steps_per_execution=4, seed=3, dropout=0.0)
    data = load_data(config)
    training.set_seeds(config.seed)
    model = build_model(config, steps_per_epoch=training.steps_per_epoch(config, data))
    result = training.train(model, data, config, out / name, verbose=0)
    results[name] = {"loss": result.history["loss"], "val_accuracy": result.history["val_accuracy"],
                     "weights": [w.tolist() for w in model.get_weights()]}
augmenting = build_model(make_config(recipe="best"), steps_per_epoch=1)
a, b = results["keras_loop"], results["scanned"]
print(json.dumps({
    "steps_per_epoch": training.steps_per_epoch(config, data), "train_images": len(data.x_train),
    "scanned_calls": len(scanned_calls), "steps_per_call": sorted(set(scanned_calls)),
    "loss": [a["loss"], b["loss"]], "val_accuracy": [a["val_accuracy"], b["val_accuracy"]],
    "max_weight_difference": max(float(np.max(np.abs(np.subtract(x, y)))) for x, y in zip(a["weights"], b["weights"])),
    "cache_dir": jax.config.jax_compilation_cache_dir,
    "cache_min_seconds": jax.config.jax_persistent_cache_min_compile_time_secs,
    "stall_warnings": {platform: training.augmentation_stall_warning(augmenting, platform) for platform in ("cpu", "gpu")},
    "stall_warning_plain_model": training.augmentation_stall_warning(model, "gpu"),
}))
"""


@pytest.fixture(scope="module")
def jax_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "KERAS_HOME": str(tmp / "keras_home"), "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp / "runs")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), tmp


def test_scanned_steps_are_used_and_train_as_kerass_own_loop(jax_runs):
    from cnnlab.training import execution_steps

    result, _ = jax_runs
    steps = result["steps_per_epoch"]
    assert result["train_images"] % 32, "the last batch should be short, so that it runs outside the scan"
    assert result["steps_per_call"] == [execution_steps(4, steps)]
    assert result["scanned_calls"] == 2 * steps // execution_steps(4, steps)
    keras_loop, scanned = result["loss"]
    assert scanned == pytest.approx(keras_loop, rel=1e-5)  # the 4 steps of each call reordered: 4% apart
    assert result["val_accuracy"][1] == pytest.approx(result["val_accuracy"][0], abs=0.01)
    assert result["max_weight_difference"] < 1e-3  # rounding after 72 Adam steps: 6e-5 measured


def test_compiled_steps_are_cached_beside_kerass_datasets(jax_runs):
    result, tmp = jax_runs
    assert result["cache_dir"] == str(tmp / "keras_home" / "jax_cache")
    assert result["cache_min_seconds"] == 0  # the quick validation steps are kept too
    assert any((tmp / "keras_home" / "jax_cache").iterdir()), "no compilation was written to the cache"


def test_shift_rotation_and_zoom_layers_warn_of_the_stall_on_a_gpu_only(jax_runs):
    result, _ = jax_runs
    warning = result["stall_warnings"]["gpu"]
    assert "RandomRotation, RandomTranslation, RandomZoom" in warning and "KERAS_BACKEND=tensorflow" in warning
    assert result["stall_warnings"]["cpu"] is None and result["stall_warning_plain_model"] is None


def test_the_scan_checks_that_keras_calls_train_function_as_it_expects(monkeypatch):
    """The scanned loop replaces Keras's train_function: on a Keras whose JAX trainer calls it otherwise, cnnlab says
    so and keeps Keras's own loop instead of failing mid-fit."""
    from cnnlab import training

    assert training.scan_contract_warning() is None  # the Keras installed, within pyproject.toml's bounds
    monkeypatch.setattr(training, "TRAIN_FUNCTION_CALL", "state = self.train_function(iterator)")
    assert "training with Keras's own loop" in training.scan_contract_warning()
