"""The whole assignment as functions a notebook or the CLI can call: train, score and show, look inside.

    config = make_config(dataset="mnist", data_dir="path/to/mnist")
    run_dir = run(config)            # train -> evaluate -> inspect, everything written into runs/<name>/

Each step also runs alone: `train_run`, `evaluate_model`, `inspect_model`.
"""

import time
from datetime import datetime
from pathlib import Path

import numpy as np

from . import environment, files, plots
from .config import Config, make_config
from .data import Dataset, load_dataset
from .errors import CnnlabError
from .evaluate import evaluate, scores, view_probabilities
from .inspection import (check_classifier, check_image_model, conv_layers, feature_maps, filter_images, load_model,
                         trained_kernel, untrained_kernel)
from .model import build_model, summary_text
from .rundir import RunDir
from .train import check_resumable, load_checkpoint, set_seeds, steps_per_epoch, train, training_left

GRID_SIZE = 32  # test images shown with their predictions


def new_run_dir(config: Config, out="runs", name=None) -> RunDir:
    """A fresh run directory; never one that already holds a model (a failed run must not replace a good one)."""
    name = name or f"{config.dataset}-{config.recipe}-{datetime.now():%Y%m%d-%H%M%S}"
    run = RunDir(Path(out) / name)
    if run.holds_model():
        raise CnnlabError(f"{run.path} already holds a trained model; choose another --name, or --resume {run.path}")
    files.check_writable(run.path)
    return run


def resume_config(run_dir, **overrides) -> Config:
    """The config a run started with, with `overrides` (such as more epochs) applied."""
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise CnnlabError(f"{run.path} is not a cnnlab run directory (it has no config.json); check the path")
    return make_config(file=run.config, **overrides)


def load_data(config: Config) -> Dataset:
    return load_dataset(config.dataset, config.data_dir, config.validation_split, config.seed, config.limit_train)


def train_run(config: Config, out="runs", name=None, resume=None, verbose=None):
    """Build (or resume) and train a model; returns the run directory, the best model, the data and the result.

    `resume` is a run directory to continue from its last completed epoch; pass its own config
    (`resume_config`), else the resumed run would train differently from how it started.
    """
    run = RunDir(resume) if resume else new_run_dir(config, out, name)
    state = run.read_state() if resume else None
    if state:
        check_resumable(run, state, config)
        model = load_checkpoint(run.path)
        print(f"Resuming {run.path} after epoch {state['epochs_completed']}"
              + ("" if training_left(state, config) else ": training had finished; evaluating"))
    else:
        if resume:
            print(f"Restarting {run.path} from the beginning: no epoch had completed")
        set_seeds(config.seed)
    files.write_json(run.config, config.to_dict())  # from here on, a killed run can be resumed
    data = load_data(config)
    if not state:
        model = build_model(config, steps_per_epoch=steps_per_epoch(config, data))
    print(f"Data: {config.dataset} from {data.source}: " + ", ".join(f"{k} {v:,}" for k, v in data.sizes().items()))
    summary = summary_text(model)
    print(summary)
    files.write_text(run.summary, summary + "\n")
    result = train(model, data, config, run.path, resume=bool(resume), verbose=verbose)
    best = load_model(run.best_model)
    validation = evaluate(best, data.x_val, data.y_val, test_time_augmentation=config.test_time_augmentation)
    print(f"Stopped: {result.stop_reason}")
    print(f"Validation (best model, epoch {result.best_epoch}{tta_note(config.test_time_augmentation)}): "
          f"loss {validation['loss']:.4f}, accuracy {validation['accuracy']:.2%}")
    files.save_figure(plots.learning_curves(result.history, result.best_epoch, config.monitor),
                      run.figure("learning_curves"))
    metrics = {
        "dataset": config.dataset, "data_source": data.source, "sizes": data.sizes(), "seed": config.seed,
        "recipe": config.recipe, "parameters": int(model.count_params()),
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
        "stop_reason": result.stop_reason, "train_seconds": round(result.seconds, 2),
        "seconds_per_epoch": round(result.seconds / max(result.epochs_run, 1), 2),
        "val_loss": validation["loss"], "val_accuracy": validation["accuracy"],
        "test_time_augmentation": config.test_time_augmentation,
        **environment.describe(),
    }
    files.write_json(run.metrics, metrics)
    return run, best, data, metrics


def tta_note(test_time_augmentation):
    return "" if test_time_augmentation == "none" else f", test-time augmentation: {test_time_augmentation}"


def evaluate_model(model, data: Dataset, out_dir=None, test_time_augmentation="none") -> dict:
    """Test loss and accuracy; with `out_dir`, also the figure of test images with predicted and true labels.

    With test-time augmentation the scores are those of the averaged predictions, and the plain model's accuracy
    is kept beside them (`test_accuracy_single_view`), so that what the averaging adds stays visible."""
    check_classifier(model, len(data.class_names))
    per_view = view_probabilities(model, data.x_test, test_time_augmentation=test_time_augmentation)
    probabilities = np.mean(per_view, axis=0)
    test = scores(data.y_test, probabilities)
    print(f"Test ({len(data.y_test):,} images{tta_note(test_time_augmentation)}): loss {test['loss']:.4f}, "
          f"accuracy {test['accuracy']:.2%}")
    result = {"test_loss": test["loss"], "test_accuracy": test["accuracy"], "test_time_augmentation": test_time_augmentation}
    if test_time_augmentation != "none":
        result["test_accuracy_single_view"] = scores(data.y_test, per_view[0])["accuracy"]
        print(f"Test accuracy of the model alone (one view per image): {result['test_accuracy_single_view']:.2%}")
    if out_dir is not None:
        n = min(GRID_SIZE, len(data.x_test))
        fig = plots.prediction_grid(data.x_test[:n], data.y_test[:n], probabilities[:n], data.class_names,
                                    title=f"First {n} test images: predicted (probability) and true label; mistakes in red")
        files.save_figure(fig, Path(out_dir) / "predictions.png")
    return result


def filter_figure(layer):
    """A conv layer's trained filters above a fresh initialisation of the same layer: what training changed."""
    trained, caption = filter_images(trained_kernel(layer))
    untrained, _ = filter_images(untrained_kernel(layer))
    return plots.trained_vs_untrained(trained, untrained, layer.name, caption)


def inspect_model(model, image, out_dir, title="input", include_pooling=False) -> list:
    """Filters (trained beside untrained) and feature maps of every conv layer, as PNGs in `out_dir`."""
    check_image_model(model)
    out_dir = Path(out_dir)
    written = []

    def save(fig, name):
        files.save_figure(fig, out_dir / f"{name}.png")
        written.append(out_dir / f"{name}.png")

    for layer in conv_layers(model):
        save(filter_figure(layer), f"filters_{layer.name}")
    save(plots.input_figure(image, title), "feature_maps_input")
    for name, maps in feature_maps(model, image, include_pooling).items():
        save(plots.feature_maps_figure(maps, name), f"feature_maps_{name}")
    return written


def run(config: Config, out="runs", name=None, resume=None, verbose=None) -> RunDir:
    """The whole assignment: train with early stopping, score on the test set, show, look inside."""
    started = time.perf_counter()
    run_dir, best, data, metrics = train_run(config, out, name, resume, verbose)
    metrics.update(evaluate_model(best, data, run_dir.figures, config.test_time_augmentation))
    index = 0
    inspect_model(best, data.x_test[index], run_dir.figures,
                  title=f"test image {index}: {data.class_names[data.y_test[index]]}")
    metrics["total_seconds"] = round(time.perf_counter() - started, 2)
    files.write_json(run_dir.metrics, metrics)
    from .report import report_from_run  # the report builds on this module

    print(f"Report: {report_from_run(run_dir.path, model=best, data=data)}")
    print(f"Run directory: {run_dir.path}")
    return run_dir

