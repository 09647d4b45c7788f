"""Activation maximisation: seconds per layer, the compiled ascent step against an eager one, how strongly the
patterns excite their filters, and what the report's section adds to the report.

    python benchmarks/maximize.py [--dataset digits|mnist|fashion_mnist] [--model runs/NAME/best.keras]

Without --model the seed network is trained for 2 epochs on --dataset (digits: as tests/conftest.py's digits_run).
Per layer: the first call (tracing included) and a second one, at the report's 64 steps and the default 128.
Excitation: each filter's mean activation on its own pattern over its mean on 100 random test images, and over
uniform noise images, and in standard deviations above the test images' mean; the same ratio for patterns made
without the final unregularised steps (`polish=0`) and for 512 steps with no regulariser at all (what plain ascent
reaches). For the first conv layer, when it takes the [0, 1] image itself: the most any image in [0, 1] can make one
of its units respond, relu(sum of the positive weights + bias), over uniform noise's mean response: a bound on the
ratio to noise that no pattern can pass.
"""

import argparse
import functools
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from common import BENCHMARKS, MNIST_DIR, machine, print_table, write_json  # noqa: E402


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def trained_seed_model(dataset, data_dir):
    from cnnlab.cli import main

    out = tempfile.mkdtemp(prefix="cnnlab-maximize-")
    where = ["--data-dir", str(data_dir)] if data_dir else []
    assert main(["train", "--dataset", dataset, *where, "--epochs", "2", "--out", out, "--name", dataset]) == 0
    return os.path.join(out, dataset, "best.keras")


def ratio(own, activations):
    """Each filter's activation on its pattern over its mean activation on other images."""
    return own / np.maximum(activations.mean(axis=0), 1e-9)


def median(values):
    return round(float(np.median(values)), 2)


def unit_bound(model, layer_name):
    """Per filter, the largest response any [0, 1] image gives one unit of `layer_name`, if it is a ReLU conv layer
    on the model's [0, 1] input (else None): relu(sum of the positive weights + bias), the patch being 1 where the
    weight is positive."""
    import keras

    from cnnlab.feeding import model_input

    layer = model.get_layer(layer_name)
    if (not isinstance(layer, keras.layers.Conv2D) or layer.activation is not keras.activations.relu
            or layer.input is not model.inputs[0] or model_input(model).pixel_scale != 1 or not layer.use_bias):
        return None
    kernel, bias = (np.asarray(weight) for weight in layer.weights)
    return np.maximum(np.maximum(kernel, 0).reshape(-1, kernel.shape[-1]).sum(axis=0) + bias, 0)


def step_seconds(model, layer, repeats):
    """One ascent step's gradient, compiled (gradient_function) and eager (gradient), taking turns."""
    from keras import ops

    from cnnlab.explain.gradient import gradient, gradient_function
    from cnnlab.explain.maximize import _response_model, filter_means

    response = _response_model(model, layer)
    channels = int(response.output.shape[-1])
    batch = np.random.default_rng(0).uniform(0, 1, (channels, *model.input_shape[1:])).astype(np.float32)
    one_hot = np.eye(channels, dtype=np.float32)
    compiled = gradient_function(response, filter_means)
    weights = ops.convert_to_tensor(one_hot)
    ways = {"compiled": lambda: compiled([batch], one_hot),
            "eager": lambda: gradient(lambda x: filter_means(response(x, training=False), weights), batch)}
    for way in ways.values():  # trace and warm up
        way()
    seconds = {name: [] for name in ways}
    for _ in range(repeats):
        for name, way in ways.items():
            seconds[name].append(timed(way)[0])
    return {name: statistics.median(values) for name, values in seconds.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=["digits", "mnist", "fashion_mnist"],
                        help="the test images and, without --model, the training set")
    parser.add_argument("--data-dir", help=f"where the dataset's files are (MNIST's default: {MNIST_DIR})")
    parser.add_argument("--model", help="a saved model (default: the seed network, 2 epochs on --dataset)")
    parser.add_argument("--repeats", type=int, default=10, help="timed gradient steps per way (10)")
    parser.add_argument("--json", help="default: results/maximize.json for digits, results/maximize_DATASET.json")
    args = parser.parse_args(argv)
    if args.dataset == "mnist" and not args.data_dir:
        args.data_dir = MNIST_DIR
    args.json = args.json or str(BENCHMARKS / "results" / ("maximize.json" if args.dataset == "digits"
                                                           else f"maximize_{args.dataset}.json"))

    from cnnlab import report
    from cnnlab.data import load_dataset
    from cnnlab.explain.maximize import layer_names, maximize, mean_activations
    from cnnlab.inspection import load_model

    path = args.model or trained_seed_model(args.dataset, args.data_dir)
    model = load_model(path)
    data = load_dataset(args.dataset, args.data_dir)
    rng = np.random.default_rng(0)
    test_images = data.x_test[rng.choice(len(data.x_test), 100, replace=False)]
    noise = rng.uniform(0, 1, (100, *model.input_shape[1:])).astype(np.float32)
    rows = []
    for layer in layer_names(model):
        first, _ = timed(functools.partial(maximize, model, layer, steps=64))
        again, _ = timed(functools.partial(maximize, model, layer, steps=64))
        full, patterns = timed(functools.partial(maximize, model, layer, steps=128))
        steps = step_seconds(model, layer, args.repeats)
        own = np.diag(mean_activations(model, layer, patterns))
        real, random = mean_activations(model, layer, test_images), mean_activations(model, layer, noise)
        row = {"layer": layer, "filters": len(patterns), "first_64_steps_s": round(first, 2),
               "64_steps_s": round(again, 2), "128_steps_s": round(full, 2),
               "step_ms_compiled": round(1000 * steps["compiled"], 1), "step_ms_eager": round(1000 * steps["eager"], 1),
               "eager_over_compiled": round(steps["eager"] / steps["compiled"], 2)}
        if layer != layer_names(model)[-1]:  # class scores can be negative: no ratios for them
            over_test, over_noise = ratio(own, real), ratio(own, random)
            unpolished = np.diag(mean_activations(model, layer, maximize(model, layer, polish=0)))
            plain = np.diag(mean_activations(model, layer, maximize(model, layer, steps=512, jitter=0, blur=0,
                                                                    decay=0)))
            row.update({"x_test_images_median": median(over_test),
                        "x_test_images_min": round(float(over_test.min()), 2),
                        "x_test_no_polish_median": median(ratio(unpolished, real)),
                        "x_test_512_plain_steps_median": median(ratio(plain, real)),
                        # per filter, as tests/test_maximize.py compares them
                        "of_plain_median": median(own[own > 0] / np.maximum(plain[own > 0], 1e-9)),
                        "of_plain_no_polish_median": median(unpolished[own > 0] / np.maximum(plain[own > 0], 1e-9)),
                        "x_test_at_least_5": round(float(np.mean(over_test >= 5)), 3),
                        "x_noise_median": median(over_noise),
                        "x_noise_at_least_5": round(float(np.mean(over_noise >= 5)), 3),
                        # a filter silent on every test image is infinitely many of their (zero) deviations above
                        "sd_above_test_median": round(float(np.median((own - real.mean(0)) /
                                                                      np.maximum(real.std(0), 1e-9))), 1),
                        "beats_every_test_image": round(float(np.mean(own > real.max(axis=0))), 3)})
            bound = unit_bound(model, layer)
            if bound is not None:
                row.update({"unit_bound_x_noise_median": median(ratio(bound, random)),
                            "unit_bound_below_5x_noise": round(float(np.mean(ratio(bound, random) < 5)), 3)})
        else:
            probabilities = model.predict(patterns, verbose=0)
            row["predicted_as_its_class"] = round(float(np.mean(probabilities.argmax(1) == np.arange(len(patterns)))), 3)
            row["probability_x_test_images_min"] = round(float(np.min(
                np.diag(probabilities) / model.predict(test_images, verbose=0).mean(axis=0))), 2)
        rows.append(row)
    section, _ = timed(lambda: report.maximized_figures(model, data.style))
    out = tempfile.mkdtemp(prefix="cnnlab-maximize-report-")
    whole, _ = timed(lambda: report.report_for_model(model, data, os.path.join(out, "report.html"), path))
    keys = list(dict.fromkeys(key for row in rows for key in row))
    print_table(rows, [(key, key, "{}") for key in keys], title="Activation maximisation per layer (seconds; "
                                                                "excitation ratios)")
    print(f"report section (the trained model's patterns of every conv layer, 64 steps): {section:.1f} s of a "
          f"whole report's {whole:.1f} s ({section / whole:.0%}; the whole includes the section)")
    write_json(args.json, {"model": str(path), "layers": rows, "report_section_s": round(section, 2),
                           "report_whole_s": round(whole, 2), "machine": machine()})


if __name__ == "__main__":
    main()
