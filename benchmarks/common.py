"""What every benchmark shares: a stopwatch callback, subprocess runs of each peer, the machine, tables and JSON.

Each peer trains in its own process (thread pools and XLA caches are per process), and the peers take
turns in one run, A B A B, so that the other load on a shared machine falls on both alike.
"""

import concurrent.futures
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
MNIST_DIR = REPO.parent / "shared" / "datasets" / "mnist"
PYTHON = sys.executable
WORK_DIR = Path(tempfile.gettempdir()) / "cnnlab-benchmarks"  # image folders written once and reused (--work)


def epoch_timer_class():
    """The Keras callback class, made on first use so that importing this module does not import Keras."""
    import keras
    import numpy as np

    class EpochTimer(keras.callbacks.Callback):
        """Per epoch: training seconds, steady images/s (first batch excluded), and test accuracy, untimed.

        The clock runs from each epoch's start to the end of its validation and the callbacks before this one
        (a checkpoint save): what a user waits for. Scoring the test set happens after the clock stops.
        """

        def __init__(self, x_test=None, y_test=None):
            super().__init__()
            self.x_test, self.y_test = x_test, y_test
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started, self.first_batch_done = time.perf_counter(), None
            self.validation_started = self.validation_ended = None

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            steps = self.params.get("steps")
            batch = min(batch, steps - 1) if steps else batch  # with steps_per_execution, the last call runs fewer
            if self.first_batch_done is None:
                self.first_batch_done, self.first_batch = now, batch
            self.last_batch_done, self.last_batch = now, batch

        def on_test_begin(self, logs=None):
            if self.validation_started is None:
                self.validation_started = time.perf_counter()

        def on_test_end(self, logs=None):
            self.validation_ended = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            ended = time.perf_counter()
            row = {"epoch": epoch + 1, "seconds": ended - self.started,
                   "train_seconds": (self.validation_started or ended) - self.started,
                   "validation_seconds": (self.validation_ended - self.validation_started) if self.validation_ended else 0.0,
                   # from the last step to here: validation, then the callbacks before this one (checkpoint writes)
                   "end_of_epoch_seconds": ended - self.last_batch_done,
                   "steady_batches": self.last_batch - self.first_batch,
                   "steady_seconds": self.last_batch_done - self.first_batch_done,
                   # the first backend call: in epoch 1 it also traces and compiles
                   "first_call_batches": self.first_batch + 1, "first_call_seconds": self.first_batch_done - self.started,
                   "val_accuracy": float(logs.get("val_accuracy", float("nan")))}
            if self.x_test is not None:
                predicted = np.argmax(self.model.predict(np.asarray(self.x_test, np.float32), batch_size=1024, verbose=0), 1)
                row["test_accuracy"] = float(np.mean(predicted == np.asarray(self.y_test)))
            self.epochs.append(row)

        def write(self, path, **about):
            Path(path).write_text(json.dumps({**about, "epochs": self.epochs}, indent=2))

    return EpochTimer


def __getattr__(name):  # `from common import EpochTimer` works, Keras loads only then
    if name == "EpochTimer":
        return epoch_timer_class()
    raise AttributeError(name)


def run_peer(command, timing_path, log_path, env=None, timeout=3600):
    """Run one peer's command in a fresh process; return its timing JSON and the process's wall seconds."""
    started = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed ({done.returncode}); see {log_path}")
    return {**json.loads(Path(timing_path).read_text()), "process_seconds": wall}


def cnnlab_command(recipe, timing_path, out_dir, data_dir=MNIST_DIR, dataset="mnist", test_each_epoch=False, **overrides):
    command = [PYTHON, BENCHMARKS / "cnnlab_run.py", "--recipe", recipe, "--timing", timing_path, "--out", out_dir,
               "--dataset", dataset]
    command += ["--data-dir", data_dir] if data_dir else []  # None: cnnlab looks in the usual places
    command += ["--test-each-epoch"] if test_each_epoch else []
    for name, value in overrides.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    return [str(c) for c in command]


def changed_settings(also):
    """An --also value, "NAME=VALUE[,NAME=VALUE]", as the overrides it names."""
    return dict(setting.split("=", 1) for setting in also.split(","))


def seed_script_command(timing_path, out_dir, data_dir=MNIST_DIR, epochs=20, test_each_epoch=False, batch_size=32):
    command = [PYTHON, BENCHMARKS / "peers" / "seed_script.py", "--data-dir", data_dir, "--epochs", epochs,
               "--batch-size", batch_size, "--train-only", "--timing", timing_path, "--out", out_dir]
    command += ["--test-each-epoch"] if test_each_epoch else []
    return [str(c) for c in command]


def cnnlab_cli_command(out_dir, name, *arguments):
    """`cnnlab run` as a user types it, in this Python; its metrics.json is then out_dir/name/metrics.json."""
    return [str(c) for c in (PYTHON, "-m", "cnnlab", "run", "--out", out_dir, "--name", name, *arguments)]


def png_tree(folder, splits, class_names):
    """A folder of class folders of PNGs, folder/SPLIT/CLASS/000042.png, from {split: (uint8 images, labels)};
    written once: built under a temporary name and renamed, so a folder that exists is complete and is reused."""
    from PIL import Image

    folder = Path(folder)
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        jobs = []
        for split, (images, labels) in splits.items():
            for name in class_names:
                (building / split / name).mkdir(parents=True)
            jobs += [(image, building / split / class_names[label] / f"{i:06d}.png")
                     for i, (image, label) in enumerate(zip(images, labels))]
        print(f"Writing {len(jobs):,} PNGs into {folder} (once; reused by later runs)", flush=True)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:  # Pillow's zlib releases the GIL
            list(pool.map(lambda job: Image.fromarray(job[0]).save(job[1]), jobs, chunksize=256))
        os.replace(building, folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return folder


def mnist_png_folder(work, data_dir, train_images, test_images=0):
    """MNIST's first `train_images` training images (and first `test_images` test images) as PNGs in class
    folders 0..9: work/mnist-png-N[-T]/train/ (and test/)."""
    from cnnlab.data import load_arrays

    folder = Path(work) / (f"mnist-png-{train_images}" + (f"-{test_images}" if test_images else ""))
    if folder.is_dir():
        return folder
    arrays, _ = load_arrays("mnist", data_dir, allow_download=False)
    if train_images > len(arrays["x_train"]) or test_images > len(arrays["x_test"]):
        raise SystemExit(f"MNIST has {len(arrays['x_train']):,} training and {len(arrays['x_test']):,} test images")
    splits = {"train": (arrays["x_train"][:train_images], arrays["y_train"][:train_images])}
    if test_images:
        splits["test"] = (arrays["x_test"][:test_images], arrays["y_test"][:test_images])
    return png_tree(folder, splits, [str(d) for d in range(10)])


def machine():
    """The machine and the load on it while the benchmark ran (2 cores shared with other work are common)."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return {"cpus": os.cpu_count(), "cpu_model": model, "avx512_bf16": "avx512_bf16" in flags,
            "load_average": os.getloadavg(), "python": platform.python_version(),
            "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow")}


def print_table(rows, columns, title=None):
    """Rows of dicts as an aligned text table, `columns` as (key, header, format) triples."""
    cells = [[header for _, header, _ in columns]]
    cells += [[("" if row.get(key) is None else fmt.format(row[key])) for key, _, fmt in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    if title:
        print(f"\n{title}")
    for i, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def write_json(path, obj):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=float) + "\n")
    print(f"\nWrote {path}")
