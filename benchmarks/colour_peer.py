"""A colour image folder: `cnnlab run` against the plain Keras script (peers/colour_keras.py) on the same files.

    python benchmarks/colour_peer.py [--train-images 10000] [--test-images 2000] [--epochs 20] [--rounds 1]
                                     [--seed 42] [--work DIR] [--json benchmarks/results/colour_peer.json]

Why: MNIST and Fashion-MNIST say nothing about colour photos in folders, the case a user's own data is. Fashion-MNIST
items drawn at random from its training and test sets, each padded to 32x32 and coloured: its ink one random colour,
its background another (at least MIN_CONTRAST apart in some channel), drawn independently of the class, so colour
says nothing about the class and a model has to read the shape through it. Written once as train/ and test/ class
folders of RGB PNGs in --work. Both peers train the seed network the seed way (batch 32, Adam 1e-3, validation split
0.2, early stopping with patience 2 on the validation loss, the best weights kept), for at most --epochs, with the
same seed, taking turns in fresh processes; reported: test accuracy, training seconds, seconds to the test scores
(load, train, score; cnnlab also draws its figures) and the process's wall time (cnnlab also writes its report).
cnnlab stratifies its validation split and the Keras script does not, so the splits differ.
"""

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from common import BENCHMARKS, PYTHON, WORK_DIR, cnnlab_cli_command, machine, png_tree, print_table, run_peer, write_json

MIN_CONTRAST = 96  # of 255: an item and its background never (nearly) the same colour


def coloured(grey, rng):
    """(N, 28, 28) uint8 grey items -> (N, 32, 32, 3): padded, the ink and the background each a random colour."""
    ink, background = rng.integers(0, 256, (2, len(grey), 3))
    while (alike := np.abs(ink - background).max(axis=1) < MIN_CONTRAST).any():
        ink[alike], background[alike] = rng.integers(0, 256, (2, int(alike.sum()), 3))
    share = np.pad(grey, ((0, 0), (2, 2), (2, 2)))[..., None] / 255.0  # how much of each pixel is ink
    return np.round(background[:, None, None] + share * (ink - background)[:, None, None]).astype(np.uint8)


def colour_folder(work, train_images, test_images, seed):
    from cnnlab.data import CLASS_NAMES, load_arrays

    folder = Path(work) / f"colour-fashion-{train_images}-{test_images}-seed{seed}"
    if folder.is_dir():
        return folder
    arrays, _ = load_arrays("fashion_mnist", allow_download=False)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", train_images), ("test", test_images)):
        rows = np.sort(rng.choice(len(arrays[f"y_{split}"]), n, replace=False))
        splits[split] = (coloured(arrays[f"x_{split}"][rows], rng), arrays[f"y_{split}"][rows])
    names = [f"{i}-{name.replace('/', '-')}" for i, name in enumerate(CLASS_NAMES["fashion_mnist"])]  # sorted as labels
    return png_tree(folder, splits, names)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=10_000)
    parser.add_argument("--test-images", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=20, help="at most (early stopping ends it sooner); the seed's 20")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42, help="the data's colours and draws, and both peers' seed (42)")
    parser.add_argument("--work", default=str(WORK_DIR), help=f"where the PNGs and logs go ({WORK_DIR})")
    parser.add_argument("--json", default=str(BENCHMARKS / "results" / "colour_peer.json"))
    args = parser.parse_args(argv)
    work = Path(args.work)
    folder = colour_folder(work, args.train_images, args.test_images, args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for i in range(1, args.rounds + 1):
            shutil.rmtree(work / "cnnlab-cache", ignore_errors=True)  # cnnlab decodes the folder, as Keras does
            command = cnnlab_cli_command(out, f"cnnlab{i}", "--dataset", folder, "--epochs", args.epochs,
                                         "--seed", args.seed)
            run = run_peer(command, out / f"cnnlab{i}" / "metrics.json", work / "colour_peer_cnnlab.log",
                           env={"CNNLAB_CACHE_DIR": str(work / "cnnlab-cache")})
            rows.append({"round": i, "peer": "cnnlab run", "test_accuracy": run["test_accuracy"],
                         "train_seconds": run["train_seconds"], "total_seconds": run["total_seconds"],
                         "wall_seconds": run["process_seconds"], "epochs_run": run["epochs_run"],
                         "best_epoch": run["best_epoch"], "val_loss": run["val_loss"], "sizes": run["sizes"]})
            result = out / f"keras{i}.json"
            command = [str(c) for c in (PYTHON, BENCHMARKS / "peers" / "colour_keras.py", folder, "--epochs",
                                        args.epochs, "--seed", args.seed, "--result", result)]
            run = run_peer(command, result, work / "colour_peer_keras.log")
            rows.append({"round": i, "peer": "plain Keras", "test_accuracy": run["test_accuracy"],
                         "train_seconds": run["fit_seconds"], "total_seconds": run["total_seconds"],
                         "wall_seconds": run["process_seconds"], "epochs_run": run["epochs_run"],
                         "best_epoch": run["best_epoch"], "val_loss": run["val_loss"]})
            print_table(rows[-2:], COLUMNS, title=f"round {i}")
    shutil.rmtree(work / "cnnlab-cache", ignore_errors=True)
    print_table(rows, COLUMNS, title=f"Seed network on {args.train_images:,} + {args.test_images:,} coloured "
                                     f"Fashion-MNIST images (32x32 RGB PNGs), at most {args.epochs} epochs")
    write_json(args.json, {"benchmark": "colour_peer", "machine": machine(), "folder": str(folder),
                           "train_images": args.train_images, "test_images": args.test_images, "epochs": args.epochs,
                           "seed": args.seed, "runs": rows})


COLUMNS = [("round", "round", "{}"), ("peer", "peer", "{}"), ("test_accuracy", "test acc", "{:.2%}"),
           ("epochs_run", "epochs", "{}"), ("best_epoch", "best epoch", "{}"), ("val_loss", "best val loss", "{:.4f}"),
           ("train_seconds", "train s", "{:.1f}"), ("total_seconds", "to test scores s", "{:.1f}"),
           ("wall_seconds", "process s", "{:.1f}")]

if __name__ == "__main__":
    main()
