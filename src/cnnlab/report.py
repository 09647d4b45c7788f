"""One self-contained HTML page per run, to understand a trained model without Python.

    report_from_run("runs/digits-seed-...")        # -> runs/.../report.html
    report_for_model(model, data, "my-report.html", "my.keras")

Every figure is a PNG embedded as a data URI and the styles are inline, so the page opens offline, can be
mailed as one file and never loads anything from the network. Figures come from `cnnlab.plots`, numbers
from `cnnlab.evaluation`; this module only gathers them and fills the Jinja2 template templates/report.html.j2.
"""

import base64
import io
from datetime import datetime
from pathlib import Path

import numpy as np

from . import environment, files, pages, plots
from .data import DIGIT_STYLE, Dataset
from .errors import CnnlabError
from .evaluation import (confident_mistakes, confusion_matrix, normalise_rows, per_class_scores, scores, top_k,
                         view_probabilities)
from .explain import attributions, pixel_heat
from .explain.attributions import NAMES, usable_methods
from .explain.faithfulness import STEPS, compare_methods
from .explain.scores import normalise
from .feeding import model_input, to_model
from .inspection import (check_classifier, check_image_model, conv_layers, ensemble_members, feature_map_model,
                         load_model, output_list)
from .model import layer_rows
from .pipeline import filter_figure, load_data, maximized_figure, tta_note
from .rundir import RunDir

SAMPLE_SIZE = 16  # first test images shown with their predictions and explained
MISTAKES = 8  # most confident mistakes shown and explained
TOP_K = 3
REPORT_STEPS = 64  # of activation maximisation: the patterns are clear by then (benchmarks/maximize.py)
THUMBNAIL_PIXELS = 128  # longest side of a mistake's thumbnail PNG (shown 56 pixels high)
SECTIONS = (  # (id, heading): the page's sections, top to bottom
    ("summary", "Run summary"),
    ("scores", "Scores"),
    ("learning-curves", "Learning curves"),
    ("confusion", "Confusion matrix and per-class scores"),
    ("predictions", "Test predictions"),
    ("filters", "Filters"),
    ("feature-maps", "Feature maps"),
    ("maximized", "What each filter looks for"),
    ("grad-cam", "Grad-CAM and saliency"),
    ("attributions", "Attribution methods"),
    ("trust", "Which explanation to trust"),
)
ATTRIBUTION_MISTAKES = 4  # confident mistakes explained by every method (a row of 8 figures each)
TRUST_IMAGES = 8  # first test images the faithfulness scores and the sanity check average over
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


def read_run_history(run: RunDir) -> dict:
    if not run.history.is_file():
        raise CnnlabError(f"{run.history} is missing; is {run.path} a cnnlab run directory?")
    history = run.read_history()
    missing = [key for key in REQUIRED_HISTORY if key not in history]
    if missing or not history.get("loss"):
        what = f"lacks the column(s) {', '.join(missing)}" if missing else "has no completed epoch"
        raise CnnlabError(f"{run.history} is corrupt ({what}); start a new run")
    return history


def report_from_run(run_dir, out=None, model=None, data=None, data_dir=None, probabilities=None) -> Path:
    """(Re)build a run directory's report.html from its config, metrics, history and best model.

    `model`, `data` and the model's test-set `probabilities` skip computing them again when the caller (pipeline.run)
    has them at hand;
    `data_dir` overrides where the run's dataset is read from.
    """
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise CnnlabError(f"{run.path}: no such run directory")
    config = run.read_config()
    metrics = run.read_metrics(REQUIRED_METRICS)
    history = read_run_history(run)
    if model is None:
        model = check_image_model(load_model(run.best_model), run.best_model)
    if data is None:
        if data_dir:
            config.data_dir = str(data_dir)
        data = load_data(config)
    return build_report(model, data, Path(out) if out else run.report, config=config, metrics=metrics,
                        history=history, title=run.path.name, origin=f"run directory {run.path}",
                        probabilities=probabilities)


def report_for_model(model, data: Dataset, out, model_path, test_time_augmentation="none") -> Path:
    """A report for any saved model: no training history, so scores are computed here on the test set."""
    check_classifier(check_image_model(model, model_path), len(data.class_names), model_path)
    return build_report(model, data, Path(out), title=Path(model_path).name, origin=f"model file {model_path}",
                        test_time_augmentation=test_time_augmentation)


# ---------------------------------------------------------------- building the page


def figure_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=files.FIGURE_DPI, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_uri(image, style=DIGIT_STYLE) -> str:
    """An (H, W, C) test image as a small PNG, drawn as the figures draw it (colour as RGB, grey by the dataset's
    `style`), without matplotlib: at twice its size, sharp on a high-resolution screen, or shrunk to
    THUMBNAIL_PIXELS on its longest side when that is larger, so that large images keep the page small."""
    from PIL import Image

    pixels = np.uint8(np.round(255 * plots.shown_image(image, style)))
    height, width = pixels.shape[:2]
    zoom = min(2, THUMBNAIL_PIXELS / max(height, width))
    picture = Image.fromarray(pixels).resize((max(1, round(width * zoom)), max(1, round(height * zoom))),
                                             Image.NEAREST if zoom >= 1 else Image.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def architecture(model) -> list:
    """The layers' rows, each output shape written as model.summary() writes it: (batch, height, width, channels)."""
    rows = layer_rows(model)
    for row in rows:
        shape = row["output_shape"]
        row["shape"] = "?" if shape is None else "(" + ", ".join(map(str, ["batch", *shape])) + ")"
    return rows


def duration(seconds) -> str:
    if seconds is None:
        return "not recorded"
    seconds = float(seconds)
    return f"{seconds:.1f} s" if seconds < 120 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def explain_images(model, images, classes, label) -> tuple:
    """Grad-CAM and saliency maps of each image for its class, many images per model call."""
    print(f"  {label}: Grad-CAM and saliency of {len(images)} image(s)", flush=True)
    cams = attributions(model, images, "gradcam", classes)
    return cams, normalise(pixel_heat(attributions(model, images, "saliency", classes), "saliency"))


def explanation_figure(model, data, indices, probabilities, label):
    """An explanation figure for the test images at `indices`, each for its predicted class."""
    if len(indices) == 0:
        return None
    predicted = probabilities[indices].argmax(axis=1)
    cams, saliencies = explain_images(model, data.x_test[indices], predicted, label)
    titles = [f"#{i}: {data.class_names[p]} {probabilities[i, p]:.0%}\ntrue: {data.class_names[data.y_test[i]]}"
              for i, p in zip(indices, predicted)]
    wrong = predicted != data.y_test[indices]
    return figure_uri(plots.explanation_grid(data.x_test[indices], cams, saliencies, titles, wrong, style=data.style))


def report_options(image_shape) -> dict:
    """Cheaper settings than the methods' defaults, so that the report stays quick: fewer Integrated Gradients
    steps and SmoothGrad samples, and occlusion by a 4x4 grid of squares."""
    patch = max(1, min(image_shape[:2]) // 4)
    return {"integrated_gradients": {"steps": 16}, "smoothgrad": {"samples": 10},
            "occlusion": {"patch": patch, "stride": patch}}


def attributions_section(model, data: Dataset, probabilities, mistakes) -> dict:
    """Every method's map of the first test image and of the most confident mistakes, for the predicted class."""
    indices = np.array([0, *mistakes[:ATTRIBUTION_MISTAKES]], int)
    predicted = probabilities[indices].argmax(axis=1)
    images = data.x_test[indices]
    print(f"  every attribution method on {len(indices)} image(s)", flush=True)
    options = report_options(data.image_shape)
    heats = {NAMES[m]: pixel_heat(attributions(model, images, m, predicted, **options.get(m, {})), m)
             for m in usable_methods(model)}
    titles = [f"#{i}: {data.class_names[p]} {probabilities[i, p]:.0%}\ntrue: {data.class_names[data.y_test[i]]}"
              for i, p in zip(indices, predicted)]
    figure = plots.attribution_grid(images, heats, titles, predicted != data.y_test[indices], style=data.style)
    return {"figure": figure_uri(figure), "mistakes": len(indices) - 1}


def trust_section(model, data: Dataset, probabilities) -> dict:
    """Deletion and insertion areas and the randomisation check of every method, averaged over the first
    TRUST_IMAGES test images, for their predicted classes."""
    count = min(TRUST_IMAGES, len(data.x_test))
    images, predicted = data.x_test[:count], probabilities[:count].argmax(axis=1)
    print(f"  faithfulness and sanity check on {count} image(s)", flush=True)
    results = compare_methods(model, images, predicted, usable_methods(model), report_options(data.image_shape),
                              sanity=True)
    fractions = np.linspace(0, 1, STEPS + 1)
    curves = plots.faithfulness_curves(fractions, *({r["name"]: r[kind].mean(axis=0) for r in results.values()}
                                                    for kind in ("deletion", "insertion")))
    rows = [{"method": r["name"], "milliseconds": 1000 * r["seconds_per_image"], "deletion": r["deletion_area"],
             "insertion": r["insertion_area"], "sanity": r.get("sanity")} for r in results.values()]
    return {"rows": rows, "curves": figure_uri(curves), "images": count, "steps": STEPS}


def one_image_per_class(labels, num_classes) -> list:
    """The index of the first test image of each class that has one."""
    return [int(np.flatnonzero(labels == c)[0]) for c in range(num_classes) if np.any(labels == c)]


def image_description(shape, style) -> str:
    """What the images are, for the summary: '24x40 pixels (height x width), grey: white ink on black'."""
    height, width, channels = shape
    colours = "colour (RGB)" if channels == 3 else "grey: white ink on black" if style == DIGIT_STYLE else "grey"
    return f"{height}x{width} pixels (height x width), {colours}"


def summary_section(model, data: Dataset, config, metrics) -> dict:
    """Data, machine, durations, architecture and settings: from the run's record, else from here and now."""
    record = metrics if metrics is not None else environment.describe()
    return {
        "dataset": data.name, "source": record.get("data_source", data.source),
        "sizes": record.get("sizes", data.sizes()), "images": image_description(data.image_shape, data.style),
        "layers": architecture(model), "parameters": int(model.count_params()),
        "settings": config.to_dict() if config else None,
        "environment": {key: record[key] for key in ("backend", "device", "python", "platform") if key in record},
        "versions": record.get("versions", {}),
        "durations": {
            "training": duration(metrics.get("train_seconds")),
            "per epoch": duration(metrics.get("seconds_per_epoch")),
            "whole run (train, test, figures)": duration(metrics.get("total_seconds")),
        } if metrics is not None else None,
    }


def score_rows(data: Dataset, probabilities, metrics, test_time_augmentation="none", single_view_accuracy=None) -> list:
    """Validation (a run only) and test loss and accuracy, and with test-time augmentation the model alone's test
    accuracy; a run's own record wins, so the page equals metrics.json."""
    rows = []
    if metrics is not None:
        rows.append({"split": "validation", "key": "val", "loss": metrics["val_loss"],
                     "accuracy": metrics["val_accuracy"]})
    single_view_accuracy = (metrics or {}).get("test_accuracy_single_view", single_view_accuracy)
    if single_view_accuracy is not None:
        rows.append({"split": "test, the model alone (one view per image)", "key": "test_single_view",
                     "loss": None, "accuracy": single_view_accuracy})
    if metrics is not None and "test_loss" in metrics:
        test = {"loss": metrics["test_loss"], "accuracy": metrics["test_accuracy"]}
    else:  # a model file, or a run made by `cnnlab train` that was never tested
        test = scores(data.y_test, probabilities)
    rows.append({"split": f"test{tta_note(test_time_augmentation)}", "key": "test", **test})
    return rows


def confusion_section(data: Dataset, predicted) -> dict:
    counts = confusion_matrix(data.y_test, predicted, len(data.class_names))
    per_class = per_class_scores(data.y_test, predicted, data.class_names)
    bars = plots.per_class_scores_figure([row["name"] for row in per_class],
                                         *([row[key] for row in per_class] for key in ("precision", "recall", "f1")))
    return {"confusion": figure_uri(plots.confusion_matrix_figure(counts, normalise_rows(counts), data.class_names)),
            "per_class": per_class, "per_class_uri": figure_uri(bars),
            "test_size": len(data.y_test), "errors": int((predicted != data.y_test).sum())}


def mistake_rows(data: Dataset, probabilities, mistakes) -> list:
    """Image, true class, predicted class, its probability and the top classes of each mistake."""
    names = data.class_names
    top_classes, top_probabilities = top_k(probabilities[mistakes], TOP_K)
    return [{
        "index": int(i), "image": thumbnail_uri(data.x_test[i], data.style), "true": names[data.y_test[i]],
        "predicted": names[classes[0]], "probability": float(probs[0]),
        "top": [(names[c], float(p)) for c, p in zip(classes, probs)],
    } for i, classes, probs in zip(mistakes, top_classes, top_probabilities)]


def feature_map_figures(model, data: Dataset) -> list:
    """Every conv layer's feature maps for the first test image of each class, one figure per layer."""
    chosen = one_image_per_class(data.y_test, len(data.class_names))
    images = data.x_test[chosen]  # only these rows: x_test may be streamed (ScaledImages)
    extractor, layer_names = feature_map_model(model)
    outputs = output_list(extractor.predict(to_model(model_input(model), images), verbose=0))
    labels = [f"{data.class_names[data.y_test[i]]} (#{i})" for i in chosen]
    return [{"layer": name, "uri": figure_uri(plots.feature_maps_by_class(images, maps, labels, name, data.style))}
            for name, maps in zip(layer_names, outputs)]


def maximized_figures(model, style) -> list:
    """Every conv layer's activation maximisation in REPORT_STEPS steps of ascent; the trained model's alone, to
    keep the report quick (the filters section shows what training changed; `inspect --maximize` both)."""
    return [{"layer": layer.name, "uri": figure_uri(maximized_figure(model, None, layer.name, style,
                                                                     steps=REPORT_STEPS))}
            for layer in conv_layers(model)]


def ensemble_note(model):
    members = ensemble_members(model)
    return (f"This model averages the probabilities of {len(members)} networks; the filters, feature maps and "
            f"Grad-CAM below are the first network's ({members[0].name}), for the class the whole model predicts."
            if members else None)


def build_report(model, data: Dataset, out, *, config=None, metrics=None, history=None, title, origin,
                 probabilities=None, test_time_augmentation="none") -> Path:
    """Compute every section's figures and numbers, fill the template, write `out` atomically.

    `config`, `metrics` and `history` are a run's record; without them (a model file) the page says so.
    `probabilities` are the test set's (with the test-time augmentation: the run's, else the argument's), when
    the caller has them.
    """
    files.check_writable(Path(out).parent)  # before the figures, which take a while
    if config:
        test_time_augmentation = config.test_time_augmentation
    steps = Steps(len(SECTIONS) + 2)
    steps("predicting the test set")
    single_view_accuracy = None
    if probabilities is None:
        per_view = view_probabilities(model, data.x_test, test_time_augmentation=test_time_augmentation)
        probabilities = np.mean(per_view, axis=0)
        if test_time_augmentation != "none":
            single_view_accuracy = scores(data.y_test, per_view[0])["accuracy"]
    predicted = probabilities.argmax(axis=1)
    sample = np.arange(min(SAMPLE_SIZE, len(data.x_test)))
    mistakes = confident_mistakes(data.y_test, probabilities, MISTAKES)
    page = {
        "title": title, "origin": origin, "created": f"{datetime.now():%Y-%m-%d %H:%M}",
        "headings": {key: f"{n}. {text}" for n, (key, text) in enumerate(SECTIONS, start=1)},
        "class_names": data.class_names, "trained_here": metrics is not None, "metrics": metrics or {},
        "monitor": config.monitor if config else None, "top_k": TOP_K, "sample_size": len(sample),
        "ensemble_note": ensemble_note(model),
    }
    steps("run summary")
    page["summary"] = summary_section(model, data, config, metrics)
    steps("scores")
    page["score_rows"] = score_rows(data, probabilities, metrics, test_time_augmentation, single_view_accuracy)
    steps("learning curves")
    page["curves"] = figure_uri(plots.learning_curves(history, metrics["best_epoch"], config.monitor)) \
        if history else None
    steps("confusion matrix and per-class scores")
    page.update(confusion_section(data, predicted))
    steps("test predictions and most confident mistakes")
    page["sample"] = figure_uri(plots.prediction_grid(data.x_test[sample], data.y_test[sample], probabilities[sample],
                                                      data.class_names, style=data.style))
    page["mistakes"] = mistake_rows(data, probabilities, mistakes)
    steps("filters, trained beside untrained")
    page["filters"] = [{"layer": layer.name, "uri": figure_uri(filter_figure(layer, first=k == 0))}
                       for k, layer in enumerate(conv_layers(model))]
    steps("feature maps of one test image per class")
    page["feature_maps"] = feature_map_figures(model, data)
    steps("the input each conv filter responds to most")
    page["maximized"] = maximized_figures(model, data.style)
    steps("Grad-CAM and saliency")
    page["explanations"] = {
        "sample": explanation_figure(model, data, sample, probabilities, "sample"),
        "mistakes": explanation_figure(model, data, mistakes, probabilities, "mistakes"),
    }
    steps("every attribution method for the sample and the mistakes")
    page["attributions"] = attributions_section(model, data, probabilities, mistakes)
    steps("which explanation to trust: deletion, insertion, randomised weights")
    page["trust"] = trust_section(model, data, probabilities)
    steps("writing the page")
    files.write_text(out, pages.render("report.html.j2", **page))
    return Path(out)
