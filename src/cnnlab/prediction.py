"""Your own images through a trained model: files and folders in, predictions (and a score) out.

    classifier = Classifier.load("runs/mnist/best.keras")
    results = predict_files(classifier, find_images(["my_digits/"], classifier.class_names))
    print(score(results, len(classifier.class_names)))

A folder whose sub-folders are named after the classes (`0/`, `1/`, ... or `Sneaker/`) is a labelled set:
its images get their true class and the results an accuracy and a confusion matrix.
"""

import csv
import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from . import files, plots
from .convolution import find_conv_layer, layer_values, receptive_field, value_at
from .data import CLASS_NAMES, DIGIT_STYLE, NAMED, PHOTO_STYLE
from .errors import CnnlabError, ImageError
from .evaluation import as_probabilities, top_k
from .explain import attributions, pixel_heat
from .explain.attributions import METHODS, NAMES
from .explain.scores import normalise
from .feeding import model_input, to_model
from .inspection import (check_class_scores, check_image_model, conv_layers, feature_map_model, load_model,
                         output_list)
from .model import layer_rows, summary_text
from .preprocess import DIGIT_SHAPE, MAX_PIXELS, SUFFIXES, Prepared, is_image_file, prepare, thumbnail
from .rundir import run_config_of

PREDICT_BATCH = 256  # files read and predicted together: memory stays bounded for a folder of thousands


def run_data_of(model_path) -> dict:
    """What the run a model file belongs to recorded of its data (data.json: class names, style, image shape); for a
    run made before data.json, what its config.json's named dataset implies; {} outside a run."""
    if not model_path:
        return {}
    config = run_config_of(model_path)
    try:
        if config.with_name("data.json").is_file():
            return json.loads(config.with_name("data.json").read_text(encoding="utf-8"))
        dataset = json.loads(config.read_text(encoding="utf-8")).get("dataset") if config.is_file() else None
    except (OSError, ValueError, AttributeError):  # not a cnnlab run's files: nothing known
        return {}
    return {"class_names": CLASS_NAMES[dataset], "style": NAMED[dataset].style} if dataset in NAMED else {}


def class_names_for(model, model_path=None) -> list:
    """The class names of the run the model comes from, else 0..n-1."""
    classes = int(model.output_shape[-1])
    names = run_data_of(model_path).get("class_names")
    return [str(n) for n in names] if names and len(names) == classes else [str(i) for i in range(classes)]


def style_for(model, model_path=None) -> str:
    """digits (photos are made MNIST-like for the model) or photos (fed as they are, resized): the run's, else
    digits for a model of 28x28 grey images, as MNIST's are."""
    style = run_data_of(model_path).get("style")
    if style in (DIGIT_STYLE, PHOTO_STYLE):
        return style
    return DIGIT_STYLE if model_input(model, model_path or "").shape == DIGIT_SHAPE else PHOTO_STYLE


class Classifier:
    """A loaded model, its class names and the images it takes; safe to call from several threads at once (a web
    server's).

    Keras models are not guaranteed thread-safe, so every use of the model holds one lock; reading and
    preprocessing images, the slow part for large files, happens outside it.
    """

    def __init__(self, model, class_names=None, name=None, style=None):
        self.model = check_class_scores(check_image_model(model, looked_inside=False))
        self.input = model_input(model)
        self.class_names = list(class_names) if class_names else class_names_for(model)
        self.name = name or model.name
        self.style = style or style_for(model)
        self._lock = threading.Lock()
        self._explaining, self._feature_layers = self._explaining_model(model) if conv_layers(model) else (None, [])

    @staticmethod
    def _explaining_model(model):
        """image -> [the model's output, every conv layer's output]: explain() gets both from one forward pass."""
        feature_maps, layers = feature_map_model(model)
        image = keras.Input(model.input_shape[1:])
        return keras.Model(image, [model(image), *output_list(feature_maps(image))]), layers

    @classmethod
    def load(cls, path, safe_mode=True):
        model = check_image_model(load_model(path, safe_mode=safe_mode, compile=False), path, looked_inside=False)
        check_class_scores(model, path)
        return cls(model, class_names_for(model, path), name=Path(path).name, style=style_for(model, path))

    @property
    def mnist_like(self) -> bool:
        """Whether images are made MNIST-like for this model (a grey digit-style one: a drawing or a photo of a digit
        is what it reads) rather than fed as they are, resized."""
        return self.style == DIGIT_STYLE and self.input.channels == 1

    def prepare(self, source, preprocess=True, max_pixels=MAX_PIXELS) -> Prepared:
        """An image file (path, bytes) made into this model's input: MNIST-like for a grey digit-style model unless
        `preprocess` is false, else the image as it is (upright, in the model's colours), resized to its input."""
        return prepare(source, preprocess and self.mnist_like, max_pixels, self.input.shape)

    def probabilities(self, inputs) -> np.ndarray:
        """(N, H, W, C) inputs in [0, 1] -> (N, classes) probabilities."""
        with self._lock:
            return as_probabilities(self.model.predict_on_batch(to_model(self.input, inputs)))

    def explain(self, image, class_index=None, method="gradcam") -> dict:
        """Feature maps of every conv layer ({name: (h, w, channels)}), the Grad-CAM map (H, W) of a class and, by
        the attribution `method` (see `cnnlab.attributions`), its map of the evidence for that class: (H, W) in
        [0, 1], a signed method's (Integrated Gradients', occlusion's) positive part.

        The class is the predicted one unless `class_index` names another.
        """
        batch = to_model(self.input, np.asarray(image, np.float32)[None])
        with self._lock:
            outputs, *feature_maps = self._explaining.predict_on_batch(batch)
            probabilities = as_probabilities(outputs)[0]
            class_index = int(np.argmax(probabilities)) if class_index is None else class_index
            maps = {name: np.asarray(out[0]) for name, out in zip(self._feature_layers, feature_maps)}
            cam = attributions(self.model, image[None], "gradcam", class_index)[0]
            heat = cam if method == "gradcam" else \
                pixel_heat(attributions(self.model, image[None], method, class_index), method)[0]
        return {"probabilities": probabilities, "class_index": class_index, "feature_maps": maps,
                "grad_cam": cam, "grad_cam_layer": conv_layers(self.model)[-1].name,
                "attribution": normalise(np.maximum(heat, 0)), "method": method}

    def conv_value(self, image, layer_name, channel, y, x) -> dict:
        """How one value of a conv layer's feature map is made from the layer's input (`convolution.value_at`), and
        the box of input pixels it depends on."""
        layer = find_conv_layer(self.model, layer_name)
        with self._lock:
            taps = layer_values(self.model, image)
        return {**value_at(layer, *taps[layer], channel, y, x),
                "receptive_field": receptive_field(self.model, layer, y, x)}

    def summary(self) -> dict:
        """The architecture as data (layers with their output shapes and parameter counts), and the images it takes
        (image_shape, style, preprocessing: mnist_like or resize), so that a page can adapt to the model."""
        return {
            "name": self.name,
            "input_shape": list(self.model.input_shape[1:]),
            "image_shape": list(self.input.shape),
            "style": self.style,
            "preprocessing": "mnist_like" if self.mnist_like else "resize",
            "pixel_scale": self.input.pixel_scale,
            "parameters": int(self.model.count_params()),
            "class_names": self.class_names,
            "summary": summary_text(self.model),
            "conv_layers": [layer.name for layer in conv_layers(self.model)],
            "attribution_methods": {method: NAMES[method] for method in METHODS},
            "layers": layer_rows(self.model),
        }


@dataclass
class FileResult:
    path: Path
    label: int | None = None  # the true class, from a class folder's name
    probabilities: np.ndarray | None = None
    error: str | None = None
    prepared: Prepared | None = None  # kept only when asked (figures)

    @property
    def prediction(self) -> int | None:
        return None if self.probabilities is None else int(np.argmax(self.probabilities))

    def top(self, k=3) -> list:
        """[(class index, probability)] of the k most probable classes, most probable first."""
        indices, probabilities = top_k(self.probabilities[None], k)
        return [(int(i), float(p)) for i, p in zip(indices[0], probabilities[0])]


def find_images(paths, class_names) -> list:
    """[(path, true class or None)] for the files and folders named.

    A file is taken whatever its suffix (a wrong one is reported when it is read); a folder gives its image
    files, and each sub-folder named after a class (its name or its index) gives images of that class.
    """
    wanted = {name.lower(): i for i, name in enumerate(class_names)} | {str(i): i for i in range(len(class_names))}
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            found.append((path, None))
            continue
        found += [(p, None) for p in sorted(path.iterdir()) if p.is_file() and is_image_file(p)]
        for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            label = wanted.get(sub.name.lower())
            if label is None:
                raise CnnlabError(f"{sub}: a sub-folder must be named after a class ({', '.join(class_names)}) "
                                  f"or its number, not {sub.name!r}; rename or move it")
            found += [(p, label) for p in sorted(sub.rglob("*")) if p.is_file() and is_image_file(p)]
        if not any(p.is_relative_to(path) for p, _ in found):
            raise CnnlabError(f"{path}: no image files ({', '.join(SUFFIXES)}) "
                              f"in it or in class sub-folders")
    return found


def predict_files(classifier, items, preprocess=True, keep_images=False) -> list:
    """Read, preprocess and predict each (path, label) of `items`; a file that fails gets its reason, not a stop."""
    results = []
    for start in range(0, len(items), PREDICT_BATCH):
        batch = []
        for path, label in items[start:start + PREDICT_BATCH]:
            try:
                prepared = classifier.prepare(path, preprocess, MAX_PIXELS)
            except ImageError as e:
                results.append(FileResult(path, label, error=str(e).removeprefix(f"{path}: ")))
                continue
            if keep_images:  # for figures: a thumbnail is enough, and a thousand 1024x1024 images are not
                prepared = Prepared(thumbnail(prepared.original), prepared.input)
            results.append(FileResult(path, label, prepared=prepared))
            batch.append(results[-1])
        if batch:
            probabilities = classifier.probabilities(np.stack([r.prepared.input for r in batch]))
            for result, p in zip(batch, probabilities):
                result.probabilities = p
                if not keep_images:
                    result.prepared = None
    return results


def score(results, n_classes) -> dict | None:
    """Accuracy and confusion matrix (rows: true class, columns: predicted) of the labelled, predicted files."""
    scored = [r for r in results if r.label is not None and r.probabilities is not None]
    if not scored:
        return None
    confusion = np.zeros((n_classes, n_classes), np.int64)
    for r in scored:
        confusion[r.label, r.prediction] += 1
    return {"images": len(scored), "correct": int(np.trace(confusion)),
            "accuracy": float(np.trace(confusion) / len(scored)), "confusion_matrix": confusion.tolist()}


def records(results, class_names, k=3) -> list:
    """One plain dict per file, for JSON and CSV output."""
    def entry(index, p):
        return {"class": class_names[index], "probability": round(p, 6)}

    rows = []
    for r in results:
        row = {"file": str(r.path), "label": None if r.label is None else class_names[r.label],
               "prediction": None, "probability": None, "top": [], "error": r.error}
        if r.probabilities is not None:
            top = r.top(k)
            row.update(prediction=class_names[top[0][0]], probability=round(top[0][1], 6), top=[entry(*t) for t in top])
        rows.append(row)
    return rows


def table(results, class_names, k=3) -> str:
    """The results as an aligned text table: file, (true class,) prediction, probability, top-k or the error."""
    labelled = any(r.label is not None for r in results)
    header = ["file"] + (["true"] if labelled else []) + ["prediction", "probability", f"top-{k}"]
    lines = []
    for row in records(results, class_names, k):
        cells = [row["file"]] + ([row["label"] or "-"] if labelled else [])
        if row["error"]:
            cells += ["-", "-", f"error: {row['error']}"]
        else:
            cells += [row["prediction"], f"{row['probability']:.1%}",
                      ", ".join(f"{t['class']} {t['probability']:.1%}" for t in row["top"])]
        lines.append(cells)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [header] + lines)


def csv_text(results, class_names, k=3) -> str:
    """One CSV row per file: file, label, prediction, probability, top ("class:probability ..."), error."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", "label", "prediction", "probability", "top", "error"])
    for row in records(results, class_names, k):
        writer.writerow([row["file"], row["label"] or "", row["prediction"] or "", row["probability"] or "",
                         " ".join(f"{t['class']}:{t['probability']:.4f}" for t in row["top"]), row["error"] or ""])
    return out.getvalue()


def save_figures(results, class_names, out_dir, k=3) -> list:
    """A figure per predicted file (kept with keep_images=True): as read, as fed to the model, top k."""
    written = []
    for i, r in enumerate(results):
        if r.prepared is not None:
            top = [(class_names[c], p) for c, p in r.top(k)]
            path = Path(out_dir) / f"{i:03d}_{r.path.stem}.png"
            files.save_figure(plots.preprocessing_figure(r.prepared.original, r.prepared.input, top, str(r.path)), path)
            written.append(path)
    return written


def confusion_table(confusion, class_names) -> str:
    """Rows: true class; columns: predicted class."""
    names = [str(n) for n in class_names]
    corner = "true \\ predicted"
    first = max(len(corner), *(len(n) for n in names))
    width = max(max(len(n) for n in names), max(len(str(v)) for row in confusion for v in row))
    lines = [corner.ljust(first) + "  " + " ".join(n.rjust(width) for n in names)]
    lines += [name.ljust(first) + "  " + " ".join(str(v).rjust(width) for v in row) for name, row in zip(names, confusion)]
    return "\n".join(lines)
