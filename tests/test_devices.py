"""Several devices and processes (cnnlab.distribution), on this CPU: JAX splits it into 4 virtual devices when
XLA_FLAGS says so before it starts (as Keras's own CI tests its distribution API), so the runs are child processes.

Digits with validation_split 0.21 has 1,149 training images (not a multiple of 4: the last batch is cut) and 302
validation images (the last batch is padded with 2 copies weighted 0).
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip("jax")

SETTINGS = dict(dataset="digits", image_size="14", epochs=2, steps_per_execution=4, validation_split=0.21, seed=3,
                conv_filters=[16, 32], dense_units=[64])

CHILD = r"""
import contextlib, io, json, sys
from pathlib import Path

import keras
import numpy as np

from cnnlab import distribution, evaluation
from cnnlab.cli import main
from cnnlab.config import make_config
from cnnlab.inspection import load_model
from cnnlab.pipeline import load_data, resume_config, train_run

out, settings = Path(sys.argv[1]), json.loads(sys.argv[2])


class Shardings(keras.callbacks.Callback):
    # each weight's sharding as training leaves it at the end of an epoch
    def on_epoch_end(self, epoch, logs=None):
        self.seen = [(v.value.sharding.is_fully_replicated, len(v.value.sharding.device_set)) for v in self.model.weights]


one = train_run(make_config(**settings), out, "one", verbose=0)
shardings = Shardings()
first = train_run(make_config(**{**settings, "epochs": 1, "devices": "4"}), out, "four", verbose=0, callbacks=[shardings])
resumed = train_run(resume_config(out / "four", epochs=2), resume=out / "four", verbose=0)

data = load_data(make_config(**settings))
images = data.x_val[:287]
alone = evaluation.predict(load_model(out / "one" / "best.keras"), images)
with distribution.data_parallel("4") as parallel:
    on_four = evaluation.predict(load_model(out / "one" / "best.keras"), images)
stderr = io.StringIO()
with contextlib.redirect_stderr(stderr):
    too_many = main(["train", "--dataset", "digits", "--devices", "9", "--out", str(out), "--name", "nine"])
print(json.dumps({
    "one": one[3], "four": resumed[3], "four_after_epoch_1": first[3],
    "history_one": (out / "one" / "history.csv").read_text(), "history_four": (out / "four" / "history.csv").read_text(),
    "shardings": shardings.seen, "predict_shapes": [alone.shape, on_four.shape], "parallel": parallel.describe(),
    "predict_difference": float(np.abs(alone - on_four).max()),
    "too_many": [too_many, stderr.getvalue()], "nine_exists": (out / "nine").exists(),
}))
"""


def jax_env(tmp, devices):
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "KERAS_HOME": str(tmp / "keras_home"),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devices")
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp / "runs"), json.dumps(SETTINGS)], env=jax_env(tmp, 4),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout


def rows(history_csv):
    import csv
    import io

    return list(csv.DictReader(io.StringIO(history_csv)))


def test_four_devices_reach_the_single_device_score(four_devices):
    result, _ = four_devices
    one, four = result["one"], result["four"]
    assert (one["devices"], four["devices"], four["processes"]) == (1, 4, 1)
    assert one["val_accuracy"] > 0.5, "the reference run did not learn"  # 0.73 measured; chance: 0.1
    assert four["val_accuracy"] == pytest.approx(one["val_accuracy"], abs=0.03)  # same seed, same batches
    assert four["val_loss"] == pytest.approx(one["val_loss"], rel=0.05)
    first_one, first_four = rows(result["history_one"])[0], rows(result["history_four"])[0]
    assert float(first_four["loss"]) == pytest.approx(float(first_one["loss"]), rel=0.01)


def test_weights_stay_replicated_on_every_device(four_devices):
    result, _ = four_devices
    assert result["shardings"] and all(seen == [True, 4] for seen in result["shardings"])


def test_the_padded_validation_counts_every_image_once(four_devices):
    """302 validation images on 4 devices: the last batch is padded. Keras's history (validation inside fit, on the
    4 devices) must equal cnnlab's own scoring of the best model (NumPy, one device): same accuracy, same loss."""
    result, _ = four_devices
    four = result["four"]
    assert four["sizes"]["validation"] % 4, "the validation set should not divide by 4"
    best = rows(result["history_four"])[four["best_epoch"] - 1]
    assert float(best["val_accuracy"]) == pytest.approx(four["val_accuracy"], abs=1e-6)
    assert float(best["val_loss"]) == pytest.approx(four["val_loss"], rel=1e-4)  # without the correction: 0.7% off


def test_a_four_device_run_resumes(four_devices):
    result, output = four_devices
    first, four = result["four_after_epoch_1"], result["four"]
    assert first["epochs_run"] == 1 and four["epochs_run"] == 2 and four["devices"] == 4
    history = rows(result["history_four"])
    assert [row["epoch"] for row in history] == ["1", "2"]
    assert float(history[0]["val_loss"]) == pytest.approx(first["val_loss"], rel=1e-4)  # epoch 1 kept as it was
    assert "Resuming" in output and "after epoch 1" in output
    assert "Batch: 32 images per step across 4 devices (8 per device); the batch size is the global batch" in output


def test_predictions_under_a_distribution_lose_no_image(four_devices):
    result, _ = four_devices
    assert result["parallel"] == {"devices": 4, "processes": 1}
    assert result["predict_shapes"] == [[287, 10], [287, 10]]  # 287 = 4 x 71 + 3
    assert result["predict_difference"] < 1e-5


def test_more_devices_than_there_are_is_a_one_line_error(four_devices):
    result, _ = four_devices
    status, stderr = result["too_many"]
    assert status == 2 and stderr == ("cnnlab: error: --devices 9: this process sees 4 CPU devices; use --devices auto "
                                      "or at most 4\n")
    assert not result["nine_exists"]


def test_the_batch_is_global_and_rounded_to_a_multiple_of_the_devices():
    from cnnlab.distribution import SINGLE, Parallel, global_batch, whole_rows

    four = Parallel(devices=4)
    assert global_batch(32, SINGLE) == (32, None)  # one device: as before, nothing said
    assert global_batch(30, four) == (32, "Batch: the batch size 30 is rounded to 32, a multiple of the 4 devices; 32 images "
                                          "per step across 4 devices (8 per device); the batch size is the global batch")
    assert global_batch(1, four)[0] == 4  # at least one image per device
    assert (whole_rows(1149, four), whole_rows(1149, SINGLE)) == (1148, 1149)
    halves = Parallel(devices=4, processes=2, process=1)
    assert list(halves.local_rows(list(range(8)))) == [4, 5, 6, 7]  # process 1 feeds the second half of each batch


def test_a_bad_devices_value_is_a_one_line_error(capsys):
    from cnnlab.cli import main

    assert main(["train", "--dataset", "digits", "--devices", "two"]) == 2
    assert capsys.readouterr().err == ("cnnlab: error: devices must be auto (all local devices) or a number of devices "
                                       "of at least 1, not 'two'\n")


def test_several_devices_on_tensorflow_say_that_they_need_jax(capsys, tmp_path):
    import keras

    from cnnlab.cli import main

    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"the tests' own backend is {keras.backend.backend()}: this checks TensorFlow's message")
    assert main(["train", "--dataset", "digits", "--devices", "2", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("cnnlab: error: --devices 2: several devices or processes need the JAX backend "
                                       "(keras.distribution is JAX-only in Keras 3): run with KERAS_BACKEND=jax (pip "
                                       "install 'cnnlab[jax]')\n")
    assert not any(tmp_path.iterdir())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_one_run_that_process_0_writes(tmp_path):
    """Two processes on 127.0.0.1, one CPU device each, gradients exchanged over Gloo (JAX's CPU collectives):
    the same SPMD program, so both report the same scores; only process 0 writes its --out."""
    port = free_port()
    command = [sys.executable, "-m", "cnnlab", "train", "--dataset", "digits", "--epochs", "1", "--conv-filters", "8,16",
               "--dense-units", "32", "--steps-per-execution", "4", "--devices", "auto", "--name", "mp",
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    env = jax_env(tmp_path, 1)
    processes = [subprocess.Popen([*command, "--process-id", str(k), "--out", str(tmp_path / f"out{k}")], env=env,
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for k in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    metrics = json.loads((tmp_path / "out0" / "mp" / "metrics.json").read_text())
    assert (metrics["devices"], metrics["processes"]) == (2, 2)
    assert not (tmp_path / "out1").exists()
    assert f"Process 1 of 2: process 0 writes {tmp_path / 'out1' / 'mp'}; this one writes nothing lasting" in outputs[1]
    scores = [[line for line in output.splitlines() if line.startswith("Validation (best model")] for output in outputs]
    assert scores[0] == scores[1] and len(scores[0]) == 1
    assert metrics["val_accuracy"] > 0.2  # learnt something in one epoch (chance: 0.1)
