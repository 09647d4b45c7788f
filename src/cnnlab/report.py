"""One self-contained HTML page per run, to understand a trained model without Python; and runs side by side.

    report_from_run("runs/digits-seed-...")        # -> runs/.../report.html
    report_for_model(model, data, "my-report.html", "my.keras")
    compare_runs(["runs/a", "runs/b"])               # -> a table of settings that differ and scores

Every figure is a PNG embedded as a data URI and the styles are inline, so the page opens offline, can be
mailed as one file and never loads anything from the network. Figures come from `cnnlab.plots`, numbers
from `cnnlab.evaluate`; this module only gathers them and fills the Jinja2 templates in `templates/`.
"""

import base64
import io
import sys
from datetime import datetime
from pathlib import Path

import keras
import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from . import environment, files, plots
from .config import make_config
from .data import Dataset
from .errors import CnnlabError, ConfigError
from .evaluate import (confident_mistakes, confusion_matrix, normalise_rows, per_class_scores, predict, scores,
                       top_k)
from .explain import grad_cam, saliency
from .inspection import check_image_model, conv_layers, feature_map_model, load_model
from .pipeline import filter_figure, load_data
from .rundir import RunDir

SAMPLE_SIZE = 16  # first test images shown with their predictions and explained
MISTAKES = 8  # most confident mistakes shown and explained
TOP_K = 3
SECTIONS = (  # (id, heading): the page's sections, top to bottom
    ("summary", "Run summary"),
    ("scores", "Scores"),
    ("learning-curves", "Learning curves"),
    ("confusion", "Confusion matrix and per-class scores"),
    ("predictions", "Test predictions"),
    ("filters", "Filters"),
    ("feature-maps", "Feature maps"),
    ("grad-cam", "Grad-CAM and saliency"),
)
REQUIRED_METRICS = ("val_loss", "val_accuracy", "best_epoch", "epochs_run", "stop_reason")
REQUIRED_HISTORY = ("loss", "accuracy")


class Steps:
    """A counter line per step ('report [3/9] learning curves'), so a long assembly shows where it is."""

    def __init__(self, total, label="report"):
        self.total, self.label, self.done = total, label, 0

    def __call__(self, what):
        self.done += 1
        print(f"{self.label} [{self.done}/{self.total}] {what}", flush=True)


# ---------------------------------------------------------------- reading a run directory


def read_run_config(run: RunDir):
    """The run's validated Config; a missing, unreadable or invalid config.json is named in the error."""
    values = run.read_json(run.config)
    if not isinstance(values, dict):
        raise CnnlabError(f"{run.config} is corrupt (not a JSON object); rebuild it or start a new run")
    try:
        return make_config(**values)
    except ConfigError as e:
        raise CnnlabError(f"{run.config} is corrupt ({e}); rebuild it or start a new run") from None


def read_run_metrics(run: RunDir) -> dict:
    metrics = run.read_json(run.metrics)
    missing = [key for key in REQUIRED_METRICS if key not in metrics] if isinstance(metrics, dict) else ["all"]
    if missing:
        raise CnnlabError(f"{run.metrics} is corrupt (lacks {', '.join(missing)}); "
                          f"rebuild it with cnnlab run, or start a new run")
    return metrics


def read_run_history(run: RunDir) -> dict:
    if not run.history.is_file():
        raise CnnlabError(f"{run.history} is missing; is {run.path} a cnnlab run directory?")
    history = run.read_history()
    missing = [key for key in REQUIRED_HISTORY if key not in history]
    if missing or not history.get("loss"):
        what = f"lacks the column(s) {', '.join(missing)}" if missing else "has no completed epoch"
        raise CnnlabError(f"{run.history} is corrupt ({what}); start a new run")
    return history


def report_from_run(run_dir, out=None, model=None, data=None, data_dir=None) -> Path:
    """(Re)build a run directory's report.html from its config, metrics, history and best model.

    `model` and `data` skip loading them again when the caller (pipeline.run) has them at hand;
    `data_dir` overrides where the run's dataset is read from.
    """
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise CnnlabError(f"{run.path}: no such run directory")
    config = read_run_config(run)
    metrics = read_run_metrics(run)
    history = read_run_history(run)
    if model is None:
        model = check_image_model(load_model(run.best_model), run.best_model)
    if data is None:
        if data_dir:
            config.data_dir = str(data_dir)
        data = load_data(config)
    return build_report(model, data, Path(out) if out else run.report, config=config, metrics=metrics,
                        history=history, title=run.path.name, origin=f"run directory {run.path}")


def report_for_model(model, data: Dataset, out, model_path) -> Path:
    """A report for any saved model: no training history, so scores are computed here on the test set."""
    return build_report(check_image_model(model, model_path), data, Path(out), title=Path(model_path).name,
                        origin=f"model file {model_path}")


# ---------------------------------------------------------------- building the page


def figure_uri(fig, dpi=100) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_uri(image, scale=2) -> str:
    """A test image as a small PNG, dark on white as in the figures, without going through matplotlib."""
    from PIL import Image

    pixels = np.uint8(np.round(255 * (1 - np.clip(np.asarray(image).squeeze(), 0, 1))))
    picture = Image.fromarray(pixels).resize((pixels.shape[1] * scale, pixels.shape[0] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def architecture(model) -> list:
    """(layer, type, output shape, parameters) of each layer, as model.summary() shows them."""
    rows = []
    for layer in model.layers:
        try:
            shape = str(tuple(layer.output.shape))
        except (AttributeError, ValueError):  # a layer used more than once has no single output
            shape = "?"
        rows.append({"name": layer.name, "type": type(layer).__name__, "shape": shape.replace("None", "batch"),
                     "parameters": int(layer.count_params())})
    return rows


def duration(seconds) -> str:
    if seconds is None:
        return "not recorded"
    seconds = float(seconds)
    return f"{seconds:.1f} s" if seconds < 120 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def explain_images(model, images, classes, label) -> tuple:
    """Grad-CAM and saliency maps of each image for its class, with a progress bar: the slow step."""
    print(f"  {label}: Grad-CAM and saliency of {len(images)} image(s)", flush=True)
    bar = keras.utils.Progbar(len(images), verbose=1 if sys.stdout.isatty() else 2, unit_name="image")
    cams, saliencies = [], []
    for i, (image, class_index) in enumerate(zip(images, classes)):
        cams.append(grad_cam(model, image, int(class_index)))
        saliencies.append(saliency(model, image, int(class_index)))
        bar.update(i + 1)
    return np.array(cams), np.array(saliencies)


def explanation_section(model, data, indices, probabilities, label):
    """An explanation figure for the test images at `indices`, each for its predicted class."""
    if len(indices) == 0:
        return None
    predicted = probabilities[indices].argmax(axis=1)
    cams, saliencies = explain_images(model, data.x_test[indices], predicted, label)
    titles = [f"#{i}: {data.class_names[p]} {probabilities[i, p]:.0%}\ntrue: {data.class_names[data.y_test[i]]}"
              for i, p in zip(indices, predicted)]
    wrong = predicted != data.y_test[indices]
    return figure_uri(plots.explanation_grid(data.x_test[indices], cams, saliencies, titles, wrong))


def one_image_per_class(labels, num_classes) -> list:
    """The index of the first test image of each class that has one."""
    return [int(np.flatnonzero(labels == c)[0]) for c in range(num_classes) if np.any(labels == c)]


def build_report(model, data: Dataset, out, *, config=None, metrics=None, history=None, title, origin) -> Path:
    """Compute every section's figures and numbers, fill the template, write `out` atomically."""
    steps = Steps(9)
    names = data.class_names
    trained_here = metrics is not None

    steps("predicting the test set")
    probabilities = predict(model, data.x_test)
    predicted = probabilities.argmax(axis=1)
    test = scores(data.y_test, probabilities)
    if trained_here and "test_loss" in metrics:  # the run's own record: the page must agree with metrics.json
        test = {"loss": metrics["test_loss"], "accuracy": metrics["test_accuracy"]}

    steps("run summary")
    summary = {
        "dataset": data.name, "source": metrics.get("data_source", data.source) if trained_here else data.source,
        "sizes": metrics["sizes"] if trained_here else data.sizes(),
        "layers": architecture(model), "parameters": int(model.count_params()),
        "settings": config.to_dict() if config else None,
        "environment": {key: value for key, value in (metrics if trained_here else environment.describe()).items()
                        if key in ("backend", "device", "python", "platform")},
        "versions": (metrics if trained_here else environment.describe()).get("versions", {}),
        "durations": {
            "training": duration(metrics.get("train_seconds")),
            "per epoch": duration(metrics.get("seconds_per_epoch")),
            "whole run (train, test, figures)": duration(metrics.get("total_seconds")),
        } if trained_here else None,
    }
    score_rows = [{"split": "validation", "key": "val", "loss": metrics["val_loss"],
                   "accuracy": metrics["val_accuracy"]}] if trained_here else []
    score_rows.append({"split": "test", "key": "test", "loss": test["loss"], "accuracy": test["accuracy"]})

    steps("learning curves")
    curves = figure_uri(plots.learning_curves(history, metrics["best_epoch"], config.monitor)) if history else None

    steps("confusion matrix and per-class scores")
    counts = confusion_matrix(data.y_test, predicted, len(names))
    per_class = per_class_scores(data.y_test, predicted, names)
    confusion_uri = figure_uri(plots.confusion_matrix_figure(counts, normalise_rows(counts), names))
    per_class_uri = figure_uri(plots.per_class_scores_figure(
        [row["name"] for row in per_class], *([row[key] for row in per_class] for key in ("precision", "recall", "f1"))))

    steps("test predictions and most confident mistakes")
    sample = np.arange(min(SAMPLE_SIZE, len(data.x_test)))
    sample_uri = figure_uri(plots.prediction_grid(data.x_test[sample], data.y_test[sample], probabilities[sample], names))
    mistakes = confident_mistakes(data.y_test, probabilities, MISTAKES)
    top_classes, top_probabilities = top_k(probabilities[mistakes], TOP_K)
    mistake_rows = [{
        "index": int(i), "image": thumbnail_uri(data.x_test[i]), "true": names[data.y_test[i]],
        "predicted": names[predicted[i]], "probability": float(probabilities[i, predicted[i]]),
        "top": [(names[c], float(p)) for c, p in zip(classes, probs)],
    } for i, classes, probs in zip(mistakes, top_classes, top_probabilities)]

    steps("filters, trained beside untrained")
    filters = [{"layer": layer.name, "uri": figure_uri(filter_figure(layer))} for layer in conv_layers(model)]

    steps("feature maps of one test image per class")
    chosen = one_image_per_class(data.y_test, len(names))
    extractor, layer_names = feature_map_model(model)
    outputs = extractor.predict(data.x_test[chosen], verbose=0)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    row_labels = [f"{names[data.y_test[i]]} (#{i})" for i in chosen]
    feature_maps = [{"layer": name, "uri": figure_uri(plots.feature_maps_by_class(data.x_test[chosen], maps, row_labels, name))}
                    for name, maps in zip(layer_names, outputs)]

    steps("Grad-CAM and saliency")
    explanations = {
        "sample": explanation_section(model, data, sample, probabilities, "sample"),
        "mistakes": explanation_section(model, data, mistakes, probabilities, "mistakes"),
    }

    steps("writing the page")
    html = render("report.html.j2", title=title, origin=origin, created=f"{datetime.now():%Y-%m-%d %H:%M}",
                  headings={key: f"{n}. {text}" for n, (key, text) in enumerate(SECTIONS, start=1)}, class_names=names, trained_here=trained_here, summary=summary,
                  metrics=metrics or {}, score_rows=score_rows, curves=curves, confusion=confusion_uri,
                  per_class=per_class, per_class_uri=per_class_uri, sample=sample_uri, sample_size=len(sample),
                  mistakes=mistake_rows, test_size=len(data.x_test), errors=int((predicted != data.y_test).sum()),
                  filters=filters, feature_maps=feature_maps, explanations=explanations,
                  monitor=config.monitor if config else None, top_k=TOP_K)
    files.write_text(out, html)
    return Path(out)


def render(template, **context) -> str:
    templates = Environment(loader=PackageLoader("cnnlab", "templates"), autoescape=select_autoescape(["j2", "html"]),
                            undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    templates.filters["percent"] = lambda value: "—" if value is None else f"{value:.2%}"
    templates.filters["decimal"] = lambda value: "—" if value is None else f"{value:.4f}"
    return templates.get_template(template).render(**context)


# ---------------------------------------------------------------- runs side by side

COMPARED_RESULTS = (  # (metrics.json key, label, better: "min", "max" or None)
    ("epochs_run", "epochs run", None),
    ("best_epoch", "best epoch", None),
    ("stop_reason", "why training stopped", None),
    ("parameters", "parameters", None),
    ("train_seconds", "training time (s)", "min"),
    ("total_seconds", "whole run (s)", "min"),
    ("val_loss", "validation loss", "min"),
    ("val_accuracy", "validation accuracy", "max"),
    ("test_loss", "test loss", "min"),
    ("test_accuracy", "test accuracy", "max"),
)


def compare_runs(run_dirs) -> dict:
    """Runs side by side: the settings in which they differ, then their epochs, times and scores.

    Returns {"runs": [column names], "rows": [{"group", "label", "values", "best"}]}; `best` is the index of
    the best run on a score row (lowest loss or time, highest accuracy) when at least two runs have the score.
    """
    runs = [RunDir(path) for path in run_dirs]
    for run in runs:
        if not run.path.is_dir():
            raise CnnlabError(f"{run.path}: no such run directory")
    configs = [read_run_config(run).to_dict() for run in runs]
    metrics = [read_run_metrics(run) for run in runs]
    names = [run.path.name for run in runs]
    if len(set(names)) < len(names):
        names = [str(run.path) for run in runs]
    rows = []
    for key in configs[0]:
        values = [config[key] for config in configs]
        if len(runs) == 1 or any(value != values[0] for value in values):
            rows.append({"group": "settings", "label": key, "values": values, "best": None})
    for key, label, better in COMPARED_RESULTS:
        values = [m.get(key) for m in metrics]
        known = [(value, i) for i, value in enumerate(values) if isinstance(value, (int, float))]
        best = None
        if better and len(known) >= 2:
            best = (min if better == "min" else max)(known)[1]
        rows.append({"group": "results", "label": label, "values": values, "best": best})
    return {"runs": names, "rows": rows}


def format_value(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def comparison_text(comparison) -> str:
    """The comparison as an aligned plain-text table; settings first, '*' marks the best run on a score."""
    header = ["", *comparison["runs"]]
    lines = [header]
    for row in comparison["rows"]:
        cells = [format_value(v) + ("*" if i == row["best"] else "") for i, v in enumerate(row["values"])]
        lines.append([row["label"], *cells])
    widths = [min(max(len(line[c]) for line in lines), 48) for c in range(len(header))]
    text = ["  ".join(cell[:48].ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    settings = sum(row["group"] == "settings" for row in comparison["rows"])
    text.insert(1, "  ".join("-" * width for width in widths))
    if settings == 0:
        text.insert(2, "(the runs have the same settings)")
    return "\n".join(text) + "\n* best of the compared runs"


def write_comparison_html(comparison, out) -> Path:
    formatted = {**comparison, "rows": [{**row, "cells": [format_value(v) for v in row["values"]]}
                                        for row in comparison["rows"]]}
    files.write_text(out, render("compare.html.j2", comparison=formatted,
                                 created=f"{datetime.now():%Y-%m-%d %H:%M}"))
    return Path(out)
