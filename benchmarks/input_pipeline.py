"""Input pipeline: cnnlab's image-folder reader against Keras's image_dataset_from_directory with tf.data's cache.

    python benchmarks/input_pipeline.py [--images 60000] [--rounds 3] [--work DIR] [--json PATH]

Why: cnnlab decodes a folder once with Pillow into a uint8 memory-mapped cache and trains from memory (or from the
memory map, past CNNLAB_IN_MEMORY_MB); what a user would reach for instead is image_dataset_from_directory with
.cache() and .prefetch. This says which feeds a training step faster, and at what memory. On N PNGs of MNIST's
training images (written once into --work, reused), each variant in a fresh process (its peak RSS its own),
the variants taking turns in every round:
  cnnlab, in memory      load_dataset(folder): the first load decodes into a fresh cache (images/s over all N
                         images), a second load hits it (seconds); then 2 epochs of EpochShuffle's shuffled batches
                         of 32 over the training split (64% of N; images/s per epoch)
  cnnlab, streamed       the same with CNNLAB_IN_MEMORY_MB=1: the batches are read from the memory map
  tf.data, cache()       image_dataset_from_directory(grayscale, 28x28, batch 32, shuffled, seeded).cache()
                         .prefetch(AUTOTUNE), all N images: epoch 1 decodes and fills the cache, epoch 2 reads it
  tf.data, cache(file)   the same, cached to a file in --work
  tf.data, no cache      decodes again every epoch: what the cache saves
  training step          the seed network's fit on arrays in memory, ~200 steps of 32, the first backend call
                         excluded: the rate an input pipeline has to keep up with ("vs step" is epoch 2's rate / it)
Every batch is turned into NumPy, as fit would consume it (fit also wraps EpochShuffle, a PyDataset, in tf.data;
that is not timed here). "reshuffled" says whether epoch 2's order differs from epoch 1's: image_dataset_from_directory
shuffles the files before decoding them, so a .cache() after it replays epoch 1's batches in epoch 1's order.
"of it imports" is the peak before any data: TensorFlow's share. The PNGs sit in the page cache after they are
written: decoding is measured, not the disk.
"""

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

from common import BENCHMARKS, MNIST_DIR, PYTHON, WORK_DIR, machine, mnist_png_folder, print_table, run_peer, write_json

VARIANTS = {
    "cnnlab": "cnnlab, in memory",
    "cnnlab_streamed": "cnnlab, streamed (CNNLAB_IN_MEMORY_MB=1)",
    "tf_cache": "tf.data, cache()",
    "tf_cache_file": "tf.data, cache(file)",
    "tf_no_cache": "tf.data, no cache",
    "step": "training step (seed network, fit on arrays)",
}
EPOCHS, BATCH_SIZE = 2, 32


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def timed_epochs(batches_of_epoch):
    """images/s and the label order of each epoch; `batches_of_epoch(e)` yields epoch e's (x, y) batches."""
    import numpy as np

    rates, orders = [], []
    for epoch in range(EPOCHS):
        started, labels = time.perf_counter(), []
        for x, y in batches_of_epoch(epoch):
            x, y = np.asarray(x), np.asarray(y)
            labels.append(y)
        labels = np.concatenate(labels)
        rates.append(len(labels) / (time.perf_counter() - started))
        orders.append(labels)
    return {"epoch_images_per_s": rates, "images_per_epoch": len(orders[0]),
            "reshuffled": not np.array_equal(orders[0], orders[1])}


def cnnlab_variant(folder, seed):
    # imported before the clock starts, as TensorFlow is for tf.data: what the first load imports (Pillow, the
    # split's scikit-learn) is the process's cost, not the load's
    import sklearn.model_selection  # noqa: F401

    import cnnlab.data.folder  # noqa: F401
    from cnnlab.data import ScaledImages, load_dataset
    from cnnlab.training import EpochShuffle

    imports_mb = peak_mb()
    started = time.perf_counter()
    data = load_dataset(folder, seed=seed)
    first = time.perf_counter() - started
    images = sum(data.sizes().values())
    started = time.perf_counter()
    data = load_dataset(folder, seed=seed)
    second = time.perf_counter() - started
    batches = EpochShuffle(data.x_train, data.y_train, BATCH_SIZE, seed, 0, EPOCHS)
    epochs = timed_epochs(lambda e: (batches[i] for i in range(e * batches.steps_per_epoch,
                                                               (e + 1) * batches.steps_per_epoch)))
    return {"load_seconds": first, "decode_images_per_s": images / first, "cached_load_seconds": second,
            "images": images, "streamed": isinstance(data.x_train, ScaledImages), **epochs, "imports_mb": imports_mb}


def tf_variant(folder, seed, cache, work):
    import keras
    import tensorflow as tf

    imports_mb = peak_mb()
    started = time.perf_counter()
    batches = keras.utils.image_dataset_from_directory(folder, color_mode="grayscale", image_size=(28, 28),
                                                       batch_size=BATCH_SIZE, shuffle=True, seed=seed, verbose=False)
    listed, images = time.perf_counter() - started, len(batches.file_paths)
    if cache == "memory":
        batches = batches.cache()
    elif cache == "file":
        batches = batches.cache(str(work / "tf-cache" / "images"))
    batches = batches.prefetch(tf.data.AUTOTUNE)
    return {"load_seconds": listed, "images": images, **timed_epochs(lambda e: batches), "imports_mb": imports_mb}


def step_variant(data_dir, steps):
    from common import EpochTimer

    from cnnlab.config import make_config
    from cnnlab.data import load_dataset
    from cnnlab.model import build_model

    imports_mb = peak_mb()
    data = load_dataset("mnist", data_dir)
    model = build_model(make_config())
    timer = EpochTimer()
    n = steps * BATCH_SIZE
    model.fit(data.x_train[:n], data.y_train[:n], batch_size=BATCH_SIZE, epochs=1, verbose=0, callbacks=[timer])
    epoch = timer.epochs[0]
    return {"step_images_per_s": epoch["steady_batches"] * BATCH_SIZE / epoch["steady_seconds"],
            "steady_steps": epoch["steady_batches"], "imports_mb": imports_mb}


def run_variant(args):
    """One variant, in this (fresh) process; writes its figures to --result."""
    folder = Path(args.folder)
    if args.variant.startswith("cnnlab"):
        result = cnnlab_variant(folder, args.seed)
    elif args.variant == "step":
        result = step_variant(args.data_dir, args.steps)
    else:
        result = tf_variant(folder, args.seed, {"tf_cache": "memory", "tf_cache_file": "file"}.get(args.variant),
                            Path(args.work))
    Path(args.result).write_text(json.dumps({**result, "peak_mb": peak_mb()}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60_000, help="PNGs: MNIST's first N training images (60,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all variants, taking turns (3)")
    parser.add_argument("--work", default=str(WORK_DIR), help=f"where the PNGs, logs and caches go ({WORK_DIR})")
    parser.add_argument("--data-dir", default=str(MNIST_DIR))
    parser.add_argument("--steps", type=int, default=200, help="training steps timed for the reference (200)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--json", default=str(BENCHMARKS / "results" / "input_pipeline.json"))
    parser.add_argument("--variant", choices=list(VARIANTS), help="(internal) run one variant in this process")
    parser.add_argument("--folder", help="(internal)")
    parser.add_argument("--result", help="(internal)")
    args = parser.parse_args(argv)
    if args.variant:
        return run_variant(args)

    work = Path(args.work)
    folder = mnist_png_folder(work, args.data_dir, args.images) / "train"
    rows = []
    for round_ in range(1, args.rounds + 1):
        for variant in args.variants:
            for fresh in ("cnnlab-cache", "tf-cache"):  # every variant starts cold: its own first load decodes
                shutil.rmtree(work / fresh, ignore_errors=True)
            (work / "tf-cache").mkdir(parents=True)
            result_path = work / f"{variant}.json"
            command = [PYTHON, Path(__file__).resolve(), "--variant", variant, "--folder", folder, "--work", work,
                       "--result", result_path, "--seed", args.seed, "--data-dir", args.data_dir, "--steps", args.steps]
            env = {"CNNLAB_CACHE_DIR": str(work / "cnnlab-cache"),
                   **({"CNNLAB_IN_MEMORY_MB": "1"} if variant == "cnnlab_streamed" else {})}
            result = run_peer([str(c) for c in command], result_path, work / f"input_pipeline_{variant}.log", env=env)
            rows.append({"round": round_, "variant": VARIANTS[variant], "key": variant, **result})
        step = next((r["step_images_per_s"] for r in rows[-len(args.variants):] if r["key"] == "step"), None)
        for row in rows[-len(args.variants):]:
            rates = row.get("epoch_images_per_s") or [None, row.get("step_images_per_s")]
            row["epoch_1_images_per_s"], row["epoch_2_images_per_s"] = rates
            row["vs_step"] = rates[1] / step if step else None
        print_table(rows[-len(args.variants):], COLUMNS, title=f"round {round_}")
    shutil.rmtree(work / "cnnlab-cache", ignore_errors=True)
    shutil.rmtree(work / "tf-cache", ignore_errors=True)
    print_table(rows, COLUMNS, title=f"Input pipelines on {args.images:,} MNIST PNGs, batch {BATCH_SIZE}, "
                                     f"{args.rounds} round(s)")
    write_json(args.json, {"benchmark": "input_pipeline", "machine": machine(), "images": args.images,
                           "batch_size": BATCH_SIZE, "folder": str(folder), "runs": rows})


COLUMNS = [("round", "round", "{}"), ("variant", "variant", "{}"),
           ("decode_images_per_s", "decode images/s", "{:,.0f}"), ("load_seconds", "load s", "{:.2f}"),
           ("cached_load_seconds", "cached load s", "{:.2f}"),
           ("epoch_1_images_per_s", "epoch 1 images/s", "{:,.0f}"),
           ("epoch_2_images_per_s", "epoch 2 images/s", "{:,.0f}"),
           ("vs_step", "epoch 2 vs step", "{:.1f}x"), ("reshuffled", "reshuffled", "{}"),
           ("peak_mb", "peak MB", "{:,.0f}"), ("imports_mb", "of it imports", "{:,.0f}")]

if __name__ == "__main__":
    main()
