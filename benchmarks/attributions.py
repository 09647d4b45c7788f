"""Attribution methods on the seed model: milliseconds per image before and after compiling the gradients, and how
far each method can be trusted (deletion and insertion areas, rank correlation with a randomised model's maps).

    python benchmarks/attributions.py [--datasets mnist fashion] [--model mnist=runs/NAME/best.keras] [--images 16]

Peers, in one process on one model, taking turns (A B C A B C): each method with the gradients run eagerly, one
image per call (how cnnlab computed Grad-CAM and saliency before: a GradientTape per image); compiled
(tf.function / jax.jit, once per model), one image per call (the web app's /api/explain); compiled, all images in
one call. Beside them, in a child process, main's own `grad_cam` and `saliency` (--before SRC, the source tree of
before the change). Then the report's added time: its sections of attributions on this model, and a whole
`report_for_model` of the tree before and of this one, in fresh processes, taking turns. Without --model a seed model
is trained on --train-images images for --epochs epochs (the figures of trust need a trained model; speed does not).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from common import BENCHMARKS, MNIST_DIR, PYTHON, machine, print_table, write_json  # noqa: E402

BEFORE_CHILD = r"""
import json, sys, time
import numpy as np
from cnnlab.explain import grad_cam, saliency
from cnnlab.inspection import load_model
model = load_model(sys.argv[1])
images, classes, rounds = np.load(sys.argv[2]), np.load(sys.argv[3]), int(sys.argv[4])
result = {}
for name, fn in (("gradcam", grad_cam), ("saliency", saliency)):
    fn(model, images[0], int(classes[0]))  # first call: builds the models, untimed
    best = []
    for _ in range(rounds):
        started = time.perf_counter()
        for image, c in zip(images, classes):
            fn(model, image, int(c))
        best.append((time.perf_counter() - started) / len(images))
    result[name] = min(best)
print(json.dumps(result))
"""


REPORT_CHILD = r"""
import sys, time
from cnnlab.data import load_dataset
from cnnlab.inspection import load_model
from cnnlab.report import report_for_model
model, data = load_model(sys.argv[1]), load_dataset(sys.argv[2], sys.argv[3] or None)
started = time.perf_counter()
report_for_model(model, data, sys.argv[4], sys.argv[1])
print(time.perf_counter() - started)
"""


def eager_gradient_function(model, target, wrt=0):
    """The compiled `gradient_function`'s contract, run eagerly with `gradient` (a tape per call): the peer."""
    from keras import ops

    from cnnlab.explain.gradient import gradient

    def run(inputs, weights):
        seen = {}

        def fn(x):
            tensors = [x if k == wrt else ops.convert_to_tensor(v) for k, v in enumerate(inputs)]
            seen["outputs"] = model(tensors[0] if len(tensors) == 1 else tensors, training=False)
            return target(seen["outputs"], ops.convert_to_tensor(weights))

        grads = gradient(fn, inputs[wrt])
        outputs = seen["outputs"]
        outputs = [ops.convert_to_numpy(o) for o in outputs] if isinstance(outputs, (list, tuple)) \
            else ops.convert_to_numpy(outputs)
        return outputs, grads

    return run


def child(tree, code, *arguments):
    """The last line a Python child with `tree` as its cnnlab prints."""
    done = subprocess.run([PYTHON, "-c", code, *arguments], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": tree})
    if done.returncode:
        sys.exit(done.stderr[-2000:])
    return done.stdout.strip().splitlines()[-1]


def trained_seed_model(dataset, data, train_images, epochs):
    from cnnlab.config import make_config
    from cnnlab.model import build_model
    from cnnlab.training import set_seeds

    set_seeds(0)
    model = build_model(make_config(dataset=dataset), steps_per_epoch=1)
    model.fit(data.x_train[:train_images], data.y_train[:train_images], epochs=epochs, batch_size=64, verbose=0)
    return model


def best_seconds(fn, rounds):
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(dataset, args):
    import importlib

    import cnnlab
    from cnnlab.data import load_dataset
    from cnnlab.evaluation import confident_mistakes, predict
    from cnnlab.explain import pixel_heat
    from cnnlab.explain.faithfulness import area, deletion_insertion, random_heats, sanity_check
    from cnnlab.explain.gradient import gradient_function
    from cnnlab.report import attributions_section, explain_images, report_options, trust_section

    cam, saliency = (importlib.import_module(f"cnnlab.explain.{name}") for name in ("cam", "saliency"))

    data = load_dataset(dataset, args.data_dir if dataset == "mnist" else None)
    given = dict(item.split("=", 1) for item in args.model).get(dataset)
    model = cnnlab.load_model(given) if given else trained_seed_model(dataset, data, args.train_images, args.epochs)
    images = data.x_test[:args.images]
    probabilities = predict(model, data.x_test[:2000])
    classes = probabilities[:args.images].argmax(axis=1)
    accuracy = float((probabilities.argmax(axis=1) == data.y_test[:2000]).mean())
    methods = list(cnnlab.explain.METHODS)
    ways = {}
    for method in methods:
        ways[(method, "eager, 1 per call")] = lambda m=method: [cnnlab.attributions(model, x[None], m, [c])
                                                               for x, c in zip(images, classes)]
        ways[(method, "compiled, 1 per call")] = lambda m=method: [cnnlab.attributions(model, x[None], m, [c])
                                                                  for x, c in zip(images, classes)]
        ways[(method, "compiled, batch")] = lambda m=method: cnnlab.attributions(model, images, m, classes)
    seconds = {key: [] for key in ways}

    def with_gradients(kind, fn):
        function = eager_gradient_function if kind.startswith("eager") else gradient_function
        cam.gradient_function = saliency.gradient_function = function
        try:
            return fn()
        finally:
            cam.gradient_function = saliency.gradient_function = gradient_function

    for key, fn in ways.items():  # build and compile every path once, untimed
        with_gradients(key[1], fn)
    for _ in range(args.rounds):  # A B C A B C: the load of the shared machine falls on all alike
        for key, fn in ways.items():
            seconds[key].append(best_seconds(lambda: with_gradients(key[1], fn), 1))

    before, whole_report = {}, {}
    if args.before:
        with tempfile.TemporaryDirectory() as tmp:
            model_path = given or str(Path(tmp) / "model.keras")
            if not given:
                model.save(model_path)
            np.save(Path(tmp) / "images.npy", images), np.save(Path(tmp) / "classes.npy", classes)
            before = json.loads(child(args.before, BEFORE_CHILD, model_path, str(Path(tmp) / "images.npy"),
                                      str(Path(tmp) / "classes.npy"), str(args.rounds)))
            trees = {"before": args.before, "after": str(Path(__file__).resolve().parents[1] / "src")}
            whole_report = {name: [] for name in trees}
            for _ in range(args.rounds):  # a whole report, each tree in a fresh process, taking turns
                for name, tree in trees.items():
                    whole_report[name].append(float(child(tree, REPORT_CHILD, model_path, dataset,
                                                          args.data_dir if dataset == "mnist" else "",
                                                          str(Path(tmp) / f"{name}.html"))))

    rows = []
    for method in [*methods, "random"]:
        if method == "random":
            heat = random_heats(images.shape[:3])
        else:
            heat = pixel_heat(cnnlab.attributions(model, images, method, classes), method)
        deletion, insertion = deletion_insertion(model, images, heat, classes)
        row = {"method": method, "deletion_area": float(area(deletion).mean()),
               "insertion_area": float(area(insertion).mean())}
        if method != "random":
            row["randomised_rank_correlation"] = sanity_check(model, images, method, classes, heat=np.abs(heat))[0][1]
            row["main_ms"] = 1000 * before[method] if method in before else None
            for kind in ("eager, 1 per call", "compiled, 1 per call", "compiled, batch"):
                row[f"{kind} ms"] = 1000 * min(seconds[(method, kind)]) / len(images)
            row["speed-up"] = row["eager, 1 per call ms"] / row["compiled, 1 per call ms"]
        rows.append(row)

    mistakes = confident_mistakes(data.y_test[:2000], probabilities, 8)
    report = {}
    for name, fn in (("Grad-CAM and saliency section (16 + 8 images)",
                      lambda: (explain_images(model, data.x_test[:16], probabilities[:16].argmax(1), "sample"),
                               explain_images(model, data.x_test[mistakes], probabilities[mistakes].argmax(1), "m"))),
                     ("attribution methods section (1 + 4 images, every method)",
                      lambda: attributions_section(model, data, probabilities, mistakes)),
                     ("which explanation to trust section (8 images, with randomised model)",
                      lambda: trust_section(model, data, probabilities))):
        first = best_seconds(fn, 1)  # what a report pays: tracing and compiling too (but Keras's own predict)
        report[name] = {"first_call_s": first, "again_s": best_seconds(fn, args.rounds)}
    return {"dataset": dataset, "model": given or f"seed, trained on {args.train_images} images x {args.epochs} "
            f"epochs", "test_accuracy_first_2000": accuracy, "images": len(images), "rows": rows,
            "report_seconds": report, "whole_report_seconds": whole_report,
            "report_options": report_options(data.image_shape)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    parser.add_argument("--model", nargs="*", default=[], metavar="DATASET=PATH")
    parser.add_argument("--data-dir", default=str(MNIST_DIR))
    parser.add_argument("--images", type=int, default=16, help="test images explained (16)")
    parser.add_argument("--train-images", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="src/ of the tree before the change (main's grad_cam and saliency)")
    parser.add_argument("--json", default=str(BENCHMARKS / "results" / "attributions.json"))
    args = parser.parse_args(argv)

    results = []
    for dataset in args.datasets:
        result = measure(dataset, args)
        results.append(result)
        columns = [("method", "method", "{}"), ("main_ms", "main (ms)", "{:.2f}"),
                   ("eager, 1 per call ms", "eager 1/call", "{:.2f}"),
                   ("compiled, 1 per call ms", "compiled 1/call", "{:.2f}"),
                   ("compiled, batch ms", f"compiled batch of {result['images']}", "{:.2f}"),
                   ("speed-up", "1/call speed-up", "{:.1f}x"), ("deletion_area", "deletion", "{:.3f}"),
                   ("insertion_area", "insertion", "{:.3f}"),
                   ("randomised_rank_correlation", "rank corr. randomised", "{:.2f}")]
        print_table(result["rows"], columns, f"{dataset}: {result['model']}, test accuracy "
                    f"{result['test_accuracy_first_2000']:.1%}; ms per image (best of {args.rounds})")
        for what, seconds in result["report_seconds"].items():
            print(f"  report, {what}: {seconds['first_call_s']:.2f} s first, {seconds['again_s']:.2f} s again")
        for tree, seconds in result["whole_report_seconds"].items():
            print(f"  whole report_for_model, {tree}: " + ", ".join(f"{s:.1f}" for s in seconds) + " s")
    write_json(args.json, {"machine": machine(), "results": results})


if __name__ == "__main__":
    main()
