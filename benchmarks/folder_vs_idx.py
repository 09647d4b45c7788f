"""What a folder of PNGs costs a `cnnlab run` over the same images as IDX files: the first run's decoding, and after.

    python benchmarks/folder_vs_idx.py [--images 60000] [--test-images 10000] [--epochs 3] [--rounds 2]
                                       [--work DIR] [--json benchmarks/results/folder_vs_idx.json]

Each round, taking turns, each a fresh `python -m cnnlab run` (the seed recipe, --epochs, the same seed):
  folder, cold cache   MNIST's images as PNGs in train/ and test/ class folders, CNNLAB_CACHE_DIR emptied: it
                       decodes every image into the cache
  IDX                  `--dataset mnist --data-dir` the IDX files of the same images
  folder, warm cache   the folder again: the cache written by the cold run is read
Reported: the process's wall time and its seconds until the run prints its "Data:" line (start-up, imports, the
data loaded), the run's own training seconds, seconds to its test scores (loading, training, scoring, figures; not
the report) and test accuracy (its metrics.json). "decode overhead" is the cold run's seconds to its data less the
warm run's: the wall times also hold tens of seconds of figures and report, whose spread hides it at small sizes.
The IDX files are ../shared/datasets/mnist at the full size, else the first --images and --test-images of them
written as IDX files into --work. The folder lists its images class by class, in the IDX order within each class,
and the stratified validation split picks images by their rank within their class, so both get the same split and,
with the same seed, the same training: equal validation losses and test accuracies say the PNGs decoded to MNIST's
own pixels.
"""

import argparse
import gzip
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from common import (BENCHMARKS, MNIST_DIR, WORK_DIR, cnnlab_cli_command, machine, mnist_png_folder, print_table,
                    write_json)

MNIST_SIZES = (60_000, 10_000)


def idx_folder(work, data_dir, train_images, test_images):
    """A folder of MNIST's IDX files holding its first `train_images` and `test_images` images (the shared folder
    itself at the full size)."""
    if (train_images, test_images) == MNIST_SIZES:
        return Path(data_dir)
    from cnnlab.data import load_arrays

    folder = Path(work) / f"mnist-idx-{train_images}-{test_images}"
    if not folder.is_dir():
        arrays, _ = load_arrays("mnist", data_dir, allow_download=False)
        building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=work))
        for split, prefix, n in (("train", "train", train_images), ("test", "t10k", test_images)):
            for kind, array in (("images-idx3", arrays[f"x_{split}"][:n]), ("labels-idx1", arrays[f"y_{split}"][:n])):
                header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
                with gzip.open(building / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())
        building.rename(folder)
    return folder


def measure(peer, command, metrics_path, log_path, cache_dir):
    """One `cnnlab run`, its output to `log_path`: its metrics.json, the process's wall seconds and the seconds to
    the "Data:" line it prints once its data is loaded (start-up, imports and loading: what the source costs)."""
    started, to_data = time.perf_counter(), None
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "CNNLAB_CACHE_DIR": str(cache_dir)}
    with open(log_path, "w") as log, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, env=env) as process:
        for line in process.stdout:
            if to_data is None and line.startswith("Data:"):
                to_data = time.perf_counter() - started
            log.write(line)
    wall = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}); see {log_path}")
    metrics = json.loads(Path(metrics_path).read_text())
    return {"peer": peer, "wall_seconds": wall, "to_data_seconds": to_data, "train_seconds": metrics["train_seconds"],
            "total_seconds": metrics["total_seconds"], "epochs_run": metrics["epochs_run"], "sizes": metrics["sizes"],
            "val_loss": metrics["val_loss"], "test_accuracy": metrics["test_accuracy"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=MNIST_SIZES[0], help="MNIST's first N training images (60,000)")
    parser.add_argument("--test-images", type=int, default=MNIST_SIZES[1], help="and first N test images (10,000)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data-dir", default=str(MNIST_DIR))
    parser.add_argument("--work", default=str(WORK_DIR), help=f"where the PNGs, logs and cache go ({WORK_DIR})")
    parser.add_argument("--json", default=str(BENCHMARKS / "results" / "folder_vs_idx.json"))
    args = parser.parse_args(argv)
    work = Path(args.work)
    folder = mnist_png_folder(work, args.data_dir, args.images, args.test_images)
    idx = idx_folder(work, args.data_dir, args.images, args.test_images)
    settings = ["--epochs", args.epochs, "--seed", args.seed]
    cache = work / "cnnlab-cache"
    rows, overheads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for i in range(1, args.rounds + 1):
            shutil.rmtree(cache, ignore_errors=True)
            peers = [("folder, cold cache", f"cold{i}", ["--dataset", folder]),
                     ("IDX", f"idx{i}", ["--dataset", "mnist", "--data-dir", idx]),
                     ("folder, warm cache", f"warm{i}", ["--dataset", folder])]
            for peer, name, data in peers:
                command = cnnlab_cli_command(out, name, *data, *settings)
                log = work / f"folder_vs_idx_{name}.log"
                rows.append({"round": i, **measure(peer, command, out / name / "metrics.json", log, cache)})
            cold, idx_row, warm = rows[-3:]
            overheads.append({"round": i, "decode_overhead_seconds": cold["to_data_seconds"] - warm["to_data_seconds"],
                              "warm_over_idx_seconds": warm["to_data_seconds"] - idx_row["to_data_seconds"],
                              "cold_vs_idx_wall": cold["wall_seconds"] / idx_row["wall_seconds"],
                              "warm_vs_idx_wall": warm["wall_seconds"] / idx_row["wall_seconds"]})
            print_table(rows[-3:], COLUMNS, title=f"round {i}")
    shutil.rmtree(cache, ignore_errors=True)
    print_table(rows, COLUMNS, title=f"`cnnlab run` (seed recipe, {args.epochs} epochs): {args.images:,} training and "
                                     f"{args.test_images:,} test images as PNGs or IDX")
    print_table(overheads, [("round", "round", "{}"), ("decode_overhead_seconds", "decode overhead s", "{:.1f}"),
                            ("warm_over_idx_seconds", "warm folder - IDX, to data s", "{:.1f}"),
                            ("cold_vs_idx_wall", "cold folder / IDX wall", "{:.2f}x"),
                            ("warm_vs_idx_wall", "warm folder / IDX wall", "{:.2f}x")],
                title="Per round: what the folder costs")
    write_json(args.json, {"benchmark": "folder_vs_idx", "machine": machine(), "images": args.images,
                           "test_images": args.test_images, "epochs": args.epochs, "folder": str(folder),
                           "runs": rows, "ratios": overheads})


COLUMNS = [("round", "round", "{}"), ("peer", "peer", "{}"), ("wall_seconds", "wall s", "{:.1f}"),
           ("to_data_seconds", "to data s", "{:.1f}"), ("train_seconds", "train s", "{:.1f}"),
           ("total_seconds", "to test scores s", "{:.1f}"),
           ("epochs_run", "epochs", "{}"), ("val_loss", "val loss", "{:.4f}"), ("test_accuracy", "test acc", "{:.2%}")]

if __name__ == "__main__":
    main()
