"""Exported models against Keras: file size, export time, agreement, and single-image latency in each runtime.

    python benchmarks/export.py [--model runs/NAME/best.keras] [--images 1000] [--json benchmarks/results/export.json]

The model is exported to ONNX, a TensorFlow SavedModel and LiteRT with `cnnlab.export_model` (each verified on
MNIST test images against Keras), then one image at a time is predicted by each peer, taking turns (so that other
load on a shared machine falls on all alike): Keras's `model.predict(x[i:i+1])` (the notebook's call),
`predict_on_batch` (what `cnnlab serve` calls), a direct `model(x, training=False)`, onnxruntime (as it comes, and
on one thread), TensorFlow's SavedModel loader and the LiteRT interpreter.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from common import BENCHMARKS, MNIST_DIR, machine, print_table, write_json  # noqa: E402


def timed_ms(fn):
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def one_thread_onnx(path):
    """onnxruntime with one intra-op thread: its default pool spins on every core, which a loaded machine punishes."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a saved model (default: a freshly built seed network; its agreement figures "
                        "then say little, its sizes and latencies as much as a trained one's)")
    parser.add_argument("--data-dir", default=str(MNIST_DIR))
    parser.add_argument("--images", type=int, default=1000, help="test images each export is verified on (1000)")
    parser.add_argument("--single", type=int, default=300, help="single-image calls per peer (300)")
    parser.add_argument("--json", default=str(BENCHMARKS / "results" / "export.json"))
    args = parser.parse_args(argv)

    import keras

    from cnnlab.config import make_config
    from cnnlab.data import load_dataset
    from cnnlab.export import FORMATS, export_model, export_path, runtime
    from cnnlab.feeding import model_input, to_model
    from cnnlab.inspection import load_model
    from cnnlab.model import build_model

    data = load_dataset("mnist", args.data_dir)
    x, y = data.x_test[:args.images], data.y_test[:args.images]
    out = Path(tempfile.mkdtemp(prefix="cnnlab-export-bench-"))
    if args.model:
        model, model_path = load_model(args.model, compile=False), Path(args.model)
    else:
        model, model_path = build_model(make_config(), steps_per_epoch=1), out / "seed.keras"
        model.save(model_path)
    rows = [{"format": "keras", "size_mb": model_path.stat().st_size / 1e6}]  # a run's holds the optimizer's state
    for format in FORMATS:
        started = time.perf_counter()
        check = export_model(model, format, export_path(out / model_path.name, format), verify_with=(x, y))
        rows.append({"format": format, "size_mb": check["size_bytes"] / 1e6, "export_s": time.perf_counter() - started,
                     "max_abs_difference": check["max_abs_difference"], "top1_agreement": check["top1_agreement"],
                     "accuracy": check["exported_accuracy"], "keras_accuracy": check["keras_accuracy"],
                     "runtime": check["runtime"], "path": check["path"]})

    fed = np.ascontiguousarray(to_model(model_input(model), x))
    peers = {"keras model.predict(x[i:i+1])": lambda batch: model.predict(batch, verbose=0),
             "keras model.predict_on_batch(x[i:i+1])": lambda batch: model.predict_on_batch(batch),
             "keras model(x[i:i+1], training=False)": lambda batch: keras.ops.convert_to_numpy(model(batch, training=False))}
    peers.update({f"{format} ({row['runtime']})": runtime(format, row["path"]) for format, row in
                  zip(FORMATS, rows[1:])})
    peers["onnx, onnxruntime on 1 thread"] = one_thread_onnx(rows[1]["path"])
    for run in peers.values():  # the first call of each traces, compiles or allocates: untimed
        run(fed[:1])
    latencies = {name: [] for name in peers}
    for i in range(args.single):
        image = fed[i % len(fed)][None]
        for name, run in peers.items():
            latencies[name].append(timed_ms(lambda: run(image)))
    single = [{"peer": name, "median_ms": statistics.median(ms), "p95_ms": float(np.percentile(ms, 95))}
              for name, ms in latencies.items()]
    served_ms = single[1]["median_ms"]  # predict_on_batch: Keras's fastest single-image call
    for row in single:
        row["vs_predict_on_batch"] = served_ms / row["median_ms"]

    what = args.model or "freshly built seed network"
    print_table(rows, [("format", "format", "{}"), ("size_mb", "size MB", "{:.2f}"), ("export_s", "export s", "{:.1f}"),
                       ("max_abs_difference", "max |p - p_keras|", "{:.1e}"), ("top1_agreement", "top-1 agree", "{:.2%}"),
                       ("accuracy", "accuracy", "{:.2%}"), ("runtime", "runtime", "{}")],
                title=f"{what}: exported and verified on {len(x):,} MNIST test images (Keras accuracy "
                      f"{rows[1]['keras_accuracy']:.2%})")
    print_table(single, [("peer", "single image", "{}"), ("median_ms", "median ms", "{:.3f}"),
                         ("p95_ms", "p95 ms", "{:.3f}"), ("vs_predict_on_batch", "vs predict_on_batch", "{:.2f}x")],
                title=f"One image at a time, {args.single} calls each, taking turns")
    write_json(args.json, {"benchmark": "export", "model": what, "images": len(x), "keras": keras.__version__,
                           "machine": machine(), "formats": [{k: v for k, v in row.items() if k != "path"}
                                                             for row in rows], "single_image": single})


if __name__ == "__main__":
    main()
