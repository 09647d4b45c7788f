"""Activation maximisation: seconds per layer, the compiled ascent step against an eager one, how strongly the
patterns excite their filters, and what the report's section adds to the report.

    python benchmarks/maximize.py [--model runs/NAME/best.keras] [--json benchmarks/results/maximize.json]

Without --model the seed network is trained for 2 epochs on the offline digits (as tests/conftest.py's digits_run).
Per layer: the first call (tracing included) and a second one, at the report's 64 steps and the default 128.
Excitation: each filter's mean activation on its own pattern over its mean on 100 random test images, and over
uniform noise images, and in standard deviations above the test images' mean.
"""

import argparse
import functools
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from common import BENCHMARKS, machine, print_table, write_json  # noqa: E402


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def trained_seed_model():
    from cnnlab.cli import main

    out = tempfile.mkdtemp(prefix="cnnlab-maximize-")
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--out", out, "--name", "digits"]) == 0
    return os.path.join(out, "digits", "best.keras")


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
    parser.add_argument("--model", help="a saved model (default: the seed network, 2 epochs on digits)")
    parser.add_argument("--repeats", type=int, default=10, help="timed gradient steps per way (10)")
    parser.add_argument("--json", default=str(BENCHMARKS / "results" / "maximize.json"))
    args = parser.parse_args(argv)

    from cnnlab import report
    from cnnlab.data import load_dataset
    from cnnlab.explain.maximize import layer_names, maximize, mean_activations
    from cnnlab.inspection import load_model

    path = args.model or trained_seed_model()
    model = load_model(path)
    data = load_dataset("digits")
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
            over_test = own / np.maximum(real.mean(axis=0), 1e-9)
            row.update({"x_test_images_median": round(float(np.median(over_test)), 2),
                        "x_test_images_min": round(float(over_test.min()), 2),
                        "x_noise_median": round(float(np.median(own / np.maximum(random.mean(axis=0), 1e-9))), 2),
                        "sd_above_test_median": round(float(np.median((own - real.mean(0)) / real.std(0))), 1),
                        "beats_every_test_image": round(float(np.mean(own > real.max(axis=0))), 3)})
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
