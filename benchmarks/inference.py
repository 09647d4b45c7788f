"""Inference speed of the seed model: batch throughput on MNIST's 10,000 test images, and single-image latency.

    python benchmarks/inference.py [--model runs/NAME/best.keras] [--recipe seed] [--json benchmarks/results/inference.json]

Peers, in one process on one model, taking turns: the seed notebook's own call (`m.predict(tt_x)`: float64
input, Keras's default batch of 32), cnnlab's `evaluation.predict` (float32, batch 256), and larger batches.
Single images: the notebook's `m.predict(x[0:1])` against `predict_on_batch` and a direct call of the model.
Target (issue 5): >= 10,000 images/s for the seed model on 2 cores.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from common import BENCHMARKS, MNIST_DIR, machine, print_table, write_json  # noqa: E402


def timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a saved model (default: a freshly built one; weights do not change the speed)")
    parser.add_argument("--recipe", default="seed", help="the recipe whose network is built when no --model (seed)")
    parser.add_argument("--data-dir", default=str(MNIST_DIR))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", type=int, default=200, help="single-image calls per way (200)")
    parser.add_argument("--json", default=str(BENCHMARKS / "results" / "inference.json"))
    args = parser.parse_args(argv)

    from cnnlab.config import make_config
    from cnnlab.data import load_dataset
    from cnnlab.evaluation import predict
    from cnnlab.inspection import load_model
    from cnnlab.model import build_model

    x = load_dataset("mnist", args.data_dir).x_test
    x64 = x.astype(np.float64)  # the notebook's tt_x = t_x_data.reshape(-1,28,28,1)/255.0
    model = load_model(args.model) if args.model else build_model(make_config(recipe=args.recipe), steps_per_epoch=1)
    batch_ways = {
        "seed notebook: m.predict(tt_x), batch 32, float64": lambda: model.predict(x64, verbose=0),
        "cnnlab evaluation.predict, batch 256": lambda: predict(model, x),
        "model.predict, batch 1024": lambda: model.predict(x, batch_size=1024, verbose=0),
        "model.predict, batch 4096": lambda: model.predict(x, batch_size=4096, verbose=0),
    }
    for fn in batch_ways.values():  # compile every path once, untimed
        fn()
    seconds = {name: [] for name in batch_ways}
    for _ in range(args.repeats):  # A B C D A B C D: other load on the machine falls on all alike
        for name, fn in batch_ways.items():
            seconds[name].append(timed(fn))
    batch_rows = [{"way": name, "images_per_s": len(x) / min(s), "median_images_per_s": len(x) / statistics.median(s)}
                  for name, s in seconds.items()]
    seed_rate = batch_rows[0]["images_per_s"]
    for row in batch_rows:
        row["vs_seed_notebook"] = row["images_per_s"] / seed_rate

    single_ways = {
        "seed notebook: m.predict(x[0:1])": lambda i: model.predict(x[i:i + 1], verbose=0),
        "model.predict_on_batch(x[i:i+1])": lambda i: model.predict_on_batch(x[i:i + 1]),
        "model(x[i:i+1], training=False)": lambda i: np.asarray(model(x[i:i + 1], training=False)),  # the answer, not a promise of it
    }
    for fn in single_ways.values():
        fn(0)
    latencies = {name: [] for name in single_ways}
    for i in range(args.single):
        for name, fn in single_ways.items():
            latencies[name].append(timed(lambda: fn(i % len(x))) * 1000)
    single_rows = [{"way": name, "median_ms": statistics.median(ms), "p95_ms": float(np.percentile(ms, 95))}
                   for name, ms in latencies.items()]

    what = args.model or f"freshly built `{args.recipe}` network"
    print_table(batch_rows, [("way", "batch inference", "{}"), ("images_per_s", "images/s (best)", "{:,.0f}"),
                             ("median_images_per_s", "images/s (median)", "{:,.0f}"),
                             ("vs_seed_notebook", "vs notebook", "{:.1f}x")],
                title=f"{what}: {len(x):,} test images, best of {args.repeats} (target >= 10,000 images/s)")
    print_table(single_rows, [("way", "single image", "{}"), ("median_ms", "median ms", "{:.2f}"), ("p95_ms", "p95 ms", "{:.2f}")],
                title=f"One image at a time, {args.single} calls each")
    write_json(args.json, {"benchmark": "inference", "model": what, "machine": machine(), "batch": batch_rows,
                           "single_image": single_rows})


if __name__ == "__main__":
    main()
