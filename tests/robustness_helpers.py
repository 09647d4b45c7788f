"""Shared by the robustness tests, benchmarks/kill_test.py and scripts/bad_inputs.py: running the real
`cnnlab` command in a subprocess, checking a run directory after a crash, and making broken input files."""

import filecmp
import gzip
import os
import subprocess
import sys
import shutil
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = REPO.parent / "shared" / "datasets" / "mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
TEMP_PREFIX = ".cnnlab-tmp-"  # cnnlab.files.TEMP_PREFIX, kept literal so that this module needs no Keras


# ---------------------------------------------------------------- the real command, in a subprocess


def cnnlab_env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("CNNLAB_DATA_DIR", None)
    return env


class Training:
    """`cnnlab ARGS` running in its own process; its stdout lines are collected with their arrival times."""

    def __init__(self, *args, cwd=None):
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cnnlab", *map(str, args)], cwd=cwd, env=cnnlab_env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines, self.stderr = [], ""
        self._seen = threading.Condition()
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self):
        for line in self.process.stdout:
            with self._seen:
                self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def _read_stderr(self):
        self.stderr = self.process.stderr.read()

    def wait_for(self, prefix, timeout=300):
        """Seconds since start when a stdout line starting with `prefix` appeared; None if the process ended first."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for at, line in self.lines:
                    if line.startswith(prefix):
                        return at
                if self.process.poll() is not None and not self._readers[0].is_alive():
                    return None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no line starting with {prefix!r} after {timeout} s")
                self._seen.wait(0.05)

    def finish(self, timeout=300):
        """Exit status, after the process ended and its output was read."""
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def error_lines(self):
        """cnnlab's own stderr lines (TensorFlow's start-up chatter left out)."""
        return [line for line in self.stderr.splitlines() if line.startswith(("cnnlab", "Ctrl-C"))]


def run_cnnlab(*args, cwd=None, timeout=600):
    training = Training(*args, cwd=cwd)
    return training.finish(timeout), training


# ---------------------------------------------------------------- a run directory after a crash


def temporaries(run_dir):
    run_dir = Path(run_dir)
    return sorted(p.name for folder in (run_dir, run_dir / "checkpoint") if folder.is_dir()
                  for p in folder.glob(TEMP_PREFIX + "*"))


def history_epochs(run_dir):
    path = Path(run_dir) / "history.csv"
    if not path.exists():
        return []
    rows = path.read_text().splitlines()
    assert rows[0].startswith("epoch,"), rows[0]
    return [int(row.split(",")[0]) for row in rows[1:]]


# ---------------------------------------------------------------- IDX files


IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(array):
    """An array as an IDX file: magic (0, 0, type, ndim), big-endian uint32 dims, big-endian data."""
    array = np.asarray(array)
    big = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    header = bytes([0, 0, IDX_CODES[np.dtype(big)], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(big).tobytes()


def write_idx_dataset(folder, n_train=40, n_test=20, mark=0, compress=True):
    """A tiny valid 28x28 dataset in the four IDX files; pixel [0, 0, 0] of every split is `mark`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(mark)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    arrays["train-images-idx3-ubyte"][0, 0, 0] = arrays["t10k-images-idx3-ubyte"][0, 0, 0] = mark
    for stem, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / stem).write_bytes(data)
    return folder


# ---------------------------------------------------------------- broken model files


def make_model_files(folder):
    """Every kind of model file cnnlab must refuse or accept, by name -> path (imports Keras)."""
    import h5py
    import keras

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def model(*layers, shape=(28, 28, 1), classes=10):
        m = keras.Sequential([keras.Input(shape), *layers, keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.Flatten(),
                              keras.layers.Dense(classes, activation="softmax" if classes > 1 else "sigmoid")])
        m.compile("adam", "sparse_categorical_crossentropy")
        return m

    @keras.saving.register_keras_serializable(package="someones_code")
    class Doubling(keras.layers.Layer):
        def call(self, x):
            return x * 2

    paths = {}

    def save(name, m, how="save"):
        paths[name] = folder / name
        getattr(m, how)(paths[name])

    good = model()
    save("good.keras", good)
    save("good.h5", good)
    save("lambda.keras", model(keras.layers.Lambda(lambda x: x * 2.0, name="times_two")))
    save("lambda.h5", model(keras.layers.Lambda(lambda x: x * 2.0, name="times_two")))
    save("custom_layer.keras", model(Doubling(name="doubling")))
    save("custom_layer.h5", model(Doubling(name="doubling")))
    save("weights_only.weights.h5", good, "save_weights")
    save("rgb_32x32.keras", model(shape=(32, 32, 3)))
    save("five_classes.keras", model(classes=5))
    save("one_unit.keras", model(classes=1))  # a binary classifier's sigmoid
    keras.saving.get_custom_objects().pop("someones_code>Doubling", None)  # as in a fresh process

    def write(name, data):
        paths[name] = folder / name
        paths[name].write_bytes(data)

    intact = paths["good.keras"].read_bytes()
    write("truncated.keras", intact[: len(intact) // 2])
    corrupt = bytearray(intact)
    corrupt[len(corrupt) // 3: len(corrupt) // 3 + 64] = bytes(64)
    write("corrupt_bytes.keras", bytes(corrupt))
    write("truncated.h5", paths["good.h5"].read_bytes()[:4096])
    write("text.keras", b"this is not a model\n")
    write("empty.keras", b"")
    write("h5_named.keras", paths["good.h5"].read_bytes())
    write("keras_named.h5", intact)
    paths["plain_zip.keras"] = folder / "plain_zip.keras"
    with zipfile.ZipFile(paths["plain_zip.keras"], "w") as archive:
        archive.writestr("notes.txt", "a zip, not a model")
    paths["data_only.h5"] = folder / "data_only.h5"
    with h5py.File(paths["data_only.h5"], "w") as f:
        f["table"] = np.zeros(3)
    write("image.png", b"\x89PNG\r\n\x1a\n" + bytes(32))
    return paths


# ---------------------------------------------------------------- kill -9 at a random moment


KILL_EPOCHS = 3
KILL_ARGS = ("train", "--dataset", "digits", "--limit-train", "400", "--epochs", str(KILL_EPOCHS), "--patience", "99")
RUN_FILES = {"config.json", "data.json", "summary.txt", "history.csv", "best.keras", "metrics.json", "checkpoint",
             "figures"}


def calibrate(workdir):
    """(start-up seconds, training seconds) of one uninterrupted kill-test training: the windows kills land in.
    Training runs from the line 'Epoch 1/' to the commit of the last epoch (what follows is evaluation)."""
    training = Training(*KILL_ARGS, "--out", workdir, "--name", "calibration")
    began = training.wait_for("Epoch 1/")
    assert began is not None, training.stderr[-2000:]
    while (read_state(Path(workdir) / "calibration") or {}).get("epochs_completed") != KILL_EPOCHS:
        assert training.process.poll() is None, training.stderr[-2000:]
        time.sleep(0.01)
    trained = time.monotonic() - training.started - began
    assert training.finish() == 0, training.stderr[-2000:]
    return began, trained


def wait_for_a_write(run_dir, training, target="", timeout=300):
    """Block until a temporary file of an atomic write of `target` (a file name's start; any file by default)
    exists in the run directory: that write is under way."""
    deadline = time.monotonic() + timeout
    while not [name for name in temporaries(run_dir) if name.startswith(TEMP_PREFIX + target)]:
        if training.process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def read_state(run_dir):
    import json

    path = Path(run_dir) / "checkpoint" / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def check_after_kill(run_dir):
    """What a kill -9 may leave: the last committed epoch's files, all whole. Returns epochs completed."""
    from cnnlab import load_model

    run_dir = Path(run_dir)
    state = read_state(run_dir)  # written atomically: it parses, or it is not there
    done = state["epochs_completed"] if state else 0
    visible = {p.name for p in run_dir.iterdir() if not p.name.startswith(".")} if run_dir.exists() else set()
    assert visible <= RUN_FILES, visible - RUN_FILES
    history = history_epochs(run_dir)
    # history.csv is rewritten just after the commit: it shows the committed epochs, or one fewer
    assert history in (list(range(1, done + 1)), list(range(1, done))), (history, done)
    if done == 0:
        assert not {"best.keras", "history.csv"} & visible, visible
    else:
        assert (run_dir / "checkpoint" / state["checkpoint"]).is_file(), (state["checkpoint"], visible)
    if done >= 2:  # epoch 1 always improves, and its best.keras copy finished before epoch 2 began
        assert "best.keras" in visible, (done, visible)
    if "best.keras" in visible:
        assert load_model(run_dir / "best.keras").count_params() > 0
    return done


PHASES = ("start-up", "mid-write", "training")
WINDOW_TRIES = 3


def kill_and_recover(workdir, name, rng, startup_s, training_s, phase=None):
    """kill -9 a real training at a random moment, check what it left, then resume it (or, when it had not
    started a run directory, start it again) and check the finished run. Returns a record of what happened.

    phase: 'start-up' (imports, data, model: a random moment before training), 'mid-write' (the moment the
    temporary file of a random epoch's checkpoint, or of its best.keras copy, appears), 'training' (a random moment
    between the first epoch's start and the last epoch's commit), or None for one drawn at random (20%, 20%, 60%).
    """
    run_dir = Path(workdir) / name
    phase = phase or rng.choices(PHASES, weights=(1, 1, 3))[0]
    for attempt in range(1, WINDOW_TRIES + 1):  # a kill that missed its window is tried again, a bounded number
        victim = Training(*KILL_ARGS, "--out", workdir, "--name", name)
        if phase == "start-up":
            time.sleep(rng.uniform(0, startup_s))
            hit = victim.process.poll() is None
        elif phase == "mid-write":
            victim.wait_for(f"Epoch {rng.randint(1, KILL_EPOCHS)}/")
            hit = wait_for_a_write(run_dir, victim, rng.choice(["epoch-", "best.keras"]))
        else:
            victim.wait_for("Epoch 1/")
            time.sleep(rng.uniform(0, training_s))
            hit = victim.process.poll() is None
        moment = time.monotonic() - victim.started
        victim.process.kill()
        finished_first = victim.finish() == 0
        if hit and not finished_first:
            break
        shutil.rmtree(run_dir, ignore_errors=True)  # missed: the process had finished, or the write never came
    else:
        raise AssertionError(f"{name}: the {phase} window was missed {WINDOW_TRIES} times in a row")
    record = {"name": name, "phase": phase, "killed_after_s": round(moment, 2), "attempts": attempt,
              "leftover_temporaries": temporaries(run_dir)}
    record["epochs_done_at_kill"] = check_after_kill(run_dir)
    if not (run_dir / "metrics.json").exists():  # killed before the end: training, or evaluating after it
        how = ("--resume", run_dir) if (run_dir / "config.json").exists() else ("--out", workdir, "--name", name)
        code, recovery = run_cnnlab(*(("train", "--resume", run_dir) if how[0] == "--resume" else (*KILL_ARGS, *how)))
        record["recovery"] = "resume" if how[0] == "--resume" else "fresh run"
        assert code == 0, (record, code, recovery.error_lines(), recovery.stderr[-3000:], recovery.lines[-5:])
    assert history_epochs(run_dir) == list(range(1, KILL_EPOCHS + 1)), (record, history_epochs(run_dir))
    assert check_after_kill(run_dir) == KILL_EPOCHS, record
    state = read_state(run_dir)
    if state["best_epoch"] == KILL_EPOCHS:  # then best.keras is a copy of the last checkpoint, not an older model
        assert filecmp.cmp(run_dir / "best.keras", run_dir / "checkpoint" / state["checkpoint"], shallow=False), record
    assert (run_dir / "metrics.json").is_file(), record
    assert not temporaries(run_dir), (record, temporaries(run_dir))
    checkpoint = sorted(p.name for p in (run_dir / "checkpoint").iterdir())
    assert checkpoint == [f"epoch-{KILL_EPOCHS:04d}.keras", "state.json"], (record, checkpoint)
    return record
