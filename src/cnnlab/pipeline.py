"""The whole assignment as functions a notebook or the CLI can call: train, score and show, look inside.

    config = make_config(dataset="mnist", data_dir="path/to/mnist")
    run_dir = run(config)            # train -> evaluate -> inspect, everything written into runs/<name>/

Each step also runs alone: `train_run`, `evaluate_model`, `inspect_model`.
"""

import contextlib
import dataclasses
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from . import distribution, environment, files, plots
from .config import Config, make_config
from .data import DIGIT_STYLE, Dataset, changes, load_dataset, short_name
from .callbacks.mlflow import mlflow_run
from .callbacks.tensorboard import TENSORBOARD_IMAGES, tensorboard_callbacks
from .errors import CnnlabError, ConfigError, DataError, TrainingInterrupted
from .evaluation import evaluate, scores, view_probabilities
from .explain.maximize import STEPS, layer_names, maximize
from .inspection import (check_classifier, check_image_model, conv_layers, ensemble_members, feature_maps,
                         filter_images, load_model, trained_kernel, untrained_kernel, untrained_model)
from .model import build_model, ensemble_line, ensemble_model, summary_text
from .rundir import RunDir
from .training import check_resumable, load_checkpoint, set_seeds, steps_per_epoch, train, training_left

GRID_SIZE = 32  # test images shown with their predictions


def run_path(config: Config, out="runs", name=None) -> Path:
    if name is not None and (Path(name).name != name or name in ("", ".", "..")):
        raise CnnlabError(f"name= must be a folder name, to go inside out=, not {name!r}; put a path in out=")
    return Path(out) / (name or f"{short_name(config.dataset)}-{config.recipe}-{datetime.now():%Y%m%d-%H%M%S}")


def new_run_dir(path) -> RunDir:
    """A fresh run directory; never one that already holds a model (a failed run must not replace a good one)."""
    run = RunDir(path)
    if run.holds_model():
        raise CnnlabError(f"{run.path} already holds a trained model; choose another name=, or resume={str(run.path)!r}")
    files.check_writable(run.path)
    return run


def resume_config(run_dir, **overrides) -> Config:
    """The config a run started with, with `overrides` (such as more epochs) applied.

    A learning-rate schedule is sized for the run's epochs when it starts (and one_cycle and cosine end at 0), so a
    scheduled run that has trained keeps its epochs: more of them would train at learning rate 0."""
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise CnnlabError(f"{run.path} is not a cnnlab run directory (it has no config.json); check the path")
    started, config = make_config(file=run.config), make_config(file=run.config, **overrides)
    if config.epochs != started.epochs and started.lr_schedule != "constant" and run.holds_model():
        epochs = f"{started.epochs} epoch{'s' * (started.epochs != 1)}"
        raise CnnlabError(f"{run.path} has a {started.lr_schedule} learning-rate schedule sized for its {epochs}, so it "
                          f"cannot resume for {config.epochs}; resume it without epochs=, or start a new run with "
                          f"epochs={config.epochs}")
    return config


def load_data(config: Config, run: RunDir = None) -> Dataset:
    """The dataset `config` describes, split as the run's settings split it. For an existing `run`, a warning
    when the data is not the data the run recorded (files added, removed or relabelled since)."""
    data = load_dataset(config.dataset, config.data_dir, config.validation_split, config.seed, config.limit_train,
                        test_split=config.test_split, image_size=config.image_size, color_mode=config.color_mode,
                        class_names=config.class_names)
    for note in data.notes:
        print(f"Data: {note}")
    if run is not None and run.data.is_file():
        changed = changes(run.read_json(run.data).get("fingerprint"), data.fingerprint)
        if changed:
            print(f"cnnlab: warning: the data of {run.path} changed since the run recorded it ({changed}); the scores "
                  f"are of the data as it is now", file=sys.stderr)
    return data


def train_run(config: Config, out="runs", name=None, resume=None, verbose=None, callbacks=()):
    """Build (or resume) and train a model; returns the run directory, the best model, the data and the metrics.

    `resume` is a run directory to continue from its last completed epoch; pass its own config
    (`resume_config`), else the resumed run would train differently from how it started.
    An ensemble trains its networks one after another, each in a run directory of its own (`RunDir.member`), so
    that a resumed ensemble keeps the networks it finished. `callbacks` go to Keras's fit (a benchmark's timer).
    """
    with _run_directory(config, out, name, resume) as (run, config, data), mlflow_run(config, run.path) as mlflow:
        result = _train_run(run, config, data, resume, verbose, callbacks, tested=False, mlflow=mlflow)
        if mlflow:
            mlflow.log_results(run.path, result[3])
        return result


def absolute_paths(config: Config) -> Config:
    """The config with its data paths absolute, as it is recorded: the run then resumes, and its model is scored,
    from any folder."""
    paths = {key: str(Path(value).expanduser().resolve()) for key, value in
             (("data_dir", config.data_dir), ("dataset", config.dataset))
             if value and (key == "data_dir" or Path(value).expanduser().exists())}
    return dataclasses.replace(config, **paths)


@contextlib.contextmanager
def _run_directory(config: Config, out, name, resume):
    """The run directory (new, or `resume`), locked against other cnnlab processes while the block runs, with the
    config as it is recorded and, for a new run, the data (found before the directory is made: a run without data
    leaves none)."""
    config = absolute_paths(config)
    distribution.check_devices(config.devices)
    path = Path(resume) if resume else run_path(config, out, name)
    data = None if resume else load_data(config)
    if data is not None and not len(data.x_train):  # a run recorded by cnnlab.RunRecorder keeps its test set alone
        raise DataError(f"{data.source} holds a test set only (a recorded fit's); train on data with training images")
    with distribution.private_folder(path) as path, files.exclusive(path):  # checked under the lock: a process that
        yield (RunDir(path) if resume else new_run_dir(path)), config, data  # held it may have finished this run


def _train_run(run: RunDir, config: Config, data, resume, verbose, callbacks, tested, mlflow=None):
    """train_run's work, in the locked run directory. `tested`: the caller (`run`) scores the model on the test set
    next, so a resumed run that trained to its end but has no test scores yet is not refused. `mlflow`: the
    MLflowLogger of the run (see `mlflow_run`), which logs each network's epochs."""
    single = config.ensemble == 1
    networks = [run] if single else [run.member(k) for k in range(1, config.ensemble + 1)]
    states = [network.read_state() if resume else None for network in networks]
    if resume and not states[0] and run.best_model.exists():
        raise CnnlabError(f"{run.path} holds a trained model but no checkpoint/ to continue from; its best.keras is "
                          f"kept as it is: start a new run to train again")
    if resume:
        if states[-1]:  # the networks train in order: the last one's state says whether anything is left
            check_resumable(run, states[-1], config, tested)
        print(resume_note(run, states, config))
    with distribution.data_parallel(config.devices) as parallel:  # one device: no distribution, as before
        batch_size, batch_line = distribution.global_batch(config.batch_size, parallel)
        if resume and batch_size != config.batch_size:  # a changed batch would change the steps and the schedule
            raise ConfigError(f"{run.path} trained with batch_size={config.batch_size}, which does not divide among "
                              f"{parallel.devices} devices; resume it with devices= a count that divides "
                              f"{config.batch_size}")
        config = dataclasses.replace(config, batch_size=batch_size)
        if batch_line:
            print(batch_line)
        if not states[0]:
            set_seeds(config.seed)
        files.write_json(run.config, config.to_dict())  # from here on, a killed run can be resumed
        if data is None:  # a resumed run's, loaded once it is known to have something left to do
            data = load_data(config, run)
        print(f"Data: {data.name} from {data.source}: " + ", ".join(f"{k} {v:,}" for k, v in data.sizes().items()) +
              f"; {len(data.class_names)} classes, images {'x'.join(map(str, data.image_shape))}")
        if not run.data.is_file():
            files.write_json(run.data, data.describe())
        note = recipe_note(config, data)
        if note:
            print(note)
        results = []
        for k, (network, state) in enumerate(zip(networks, states)):
            network_config = dataclasses.replace(config, seed=config.seed + k)  # the same split, its own weights
            if state:
                model = load_checkpoint(network.path)
            else:
                if k:
                    set_seeds(network_config.seed)
                model = build_model(network_config, len(data.class_names), steps_per_epoch(config, data),
                                    input_shape=data.image_shape)
            if k == 0 and state and run.summary.is_file():  # a checkpoint's would add its optimizer's parameters
                print(run.summary.read_text(encoding="utf-8"), end="")
            elif k == 0:
                summary = summary_text(model) + ("" if single else "\n" + ensemble_line(config))
                print(summary)
                files.write_text(run.summary, summary + "\n")
            if not single:
                print(f"Network {k + 1} of {config.ensemble} (seed {network_config.seed}): {network.path}")
            try:
                tracking = tracking_callbacks(config, network, data, mlflow, network=None if single else k + 1)
                results.append(train(model, data, network_config, network.path, resume=bool(state), verbose=verbose,
                                     callbacks=[*tracking, *callbacks]))
            except TrainingInterrupted as e:  # resumed from the run directory, not from the network's own
                if single:
                    raise
                raise TrainingInterrupted(run.path, e.epochs_completed, network=(k + 1, config.ensemble)) from None
    if single:
        best, history = load_model(run.best_model), results[0].history
    else:
        best = ensemble_model([load_model(network.best_model, compile=False) for network in networks])
        files.save_model(best, run.best_model)
        history = stacked_history([result.history for result in results])
        run.write_history(history)
    validation = evaluate(best, data.x_val, data.y_val, test_time_augmentation=config.test_time_augmentation)
    best_epochs = [result.best_epoch for result in results]
    epochs_run = [result.epochs_run for result in results]
    for k, result in enumerate(results, start=1):
        print(f"Stopped{'' if single else f' (network {k})'}: {result.stop_reason}")
    which = f"epoch {best_epochs[0]}" if single else \
        f"the mean of {config.ensemble} networks, best epochs {', '.join(map(str, best_epochs))}"
    print(f"Validation (best model, {which}{tta_note(config.test_time_augmentation)}): "
          f"loss {validation['loss']:.4f}, accuracy {validation['accuracy']:.2%}")
    files.save_figure(plots.learning_curves(history, best_epochs, config.monitor), run.figure("learning_curves"))
    train_seconds = sum(result.seconds for result in results)
    metrics = {
        "dataset": data.name, "data_source": data.source, "sizes": data.sizes(), "seed": config.seed,
        "image_shape": list(data.image_shape), "skipped_files": len(data.skipped),
        "recipe": config.recipe, "parameters": int(best.count_params()),
        "best_epoch": best_epochs[0] if single else best_epochs, "epochs_run": epochs_run[0] if single else epochs_run,
        "stopped_early": any(result.stopped_early for result in results),
        "stop_reason": "; ".join(f"{'' if single else f'network {k}: '}{result.stop_reason}"
                                 for k, result in enumerate(results, start=1)),
        "train_seconds": round(train_seconds, 2), "seconds_per_epoch": round(train_seconds / max(sum(epochs_run), 1), 2),
        "val_loss": validation["loss"], "val_accuracy": validation["accuracy"],
        "test_time_augmentation": config.test_time_augmentation,
        **environment.describe(), **parallel.describe(),
    }
    files.write_json(run.metrics, metrics)
    return run, best, data, metrics


def tracking_callbacks(config: Config, run: RunDir, data: Dataset, mlflow=None, network=None) -> list:
    """The callbacks that show a network's training elsewhere: TensorBoard (--tensorboard) on the first
    `TENSORBOARD_IMAGES` validation images, MLflow (--mlflow) for its epochs (`network`: an ensemble's, from 1)."""
    found = []
    if config.tensorboard:
        rows = np.arange(min(TENSORBOARD_IMAGES, len(data.y_val)))  # only these rows: x_val may be streamed
        found += tensorboard_callbacks(run.path / "tensorboard", data.x_val[rows], data.y_val[rows], data.class_names)
    if mlflow:
        found.append(mlflow.for_network(network))
    return found


TUNED_ON = ("mnist", "fashion_mnist", "digits")  # where the fast and best recipes were measured


def recipe_note(config: Config, data: Dataset) -> str | None:
    """A recipe tuned on the digit datasets says so when it trains on others."""
    if config.recipe == "seed" or config.dataset in TUNED_ON:
        return None
    return (f"Recipe {config.recipe} was tuned on MNIST and Fashion-MNIST (28x28 grey); on {data.name} its settings "
            f"(augmentation, epochs, widths) are a starting point, not a measured best: change them with flags")


def resume_note(run: RunDir, states, config: Config) -> str:
    """Where a resumed run goes on from: which epoch (and, in an ensemble, which network), or that it had finished."""
    if not any(states):
        return f"Restarting {run.path} from the beginning: no epoch had completed"
    left = [k for k, state in enumerate(states) if not state or training_left(state, config)]
    if not left:
        return f"Resuming {run.path} after epoch {states[-1]['epochs_completed']}: training had finished; evaluating"
    k = left[0]
    network = "" if len(states) == 1 else f" network {k + 1} of {len(states)}"
    return f"Resuming {run.path}{network} " + (f"after epoch {states[k]['epochs_completed']}" if states[k]
                                                else "from its start")


def stacked_history(histories) -> dict:
    """The networks' histories one below the other, with a `member` column (1, 2, ...) saying whose row it is."""
    keys = ["member", *dict.fromkeys(key for history in histories for key in history)]
    stacked = {key: [] for key in keys}
    for k, history in enumerate(histories, start=1):
        rows = len(history.get("epoch", []))
        for key in keys:
            stacked[key] += [k] * rows if key == "member" else history.get(key, [np.nan] * rows)
    return stacked


def tta_note(test_time_augmentation):
    return "" if test_time_augmentation == "none" else f", test-time augmentation: {test_time_augmentation}"


def evaluate_model(model, data: Dataset, out_dir=None, test_time_augmentation="none", per_view=None) -> dict:
    """Test loss and accuracy; with `out_dir`, also the figure of test images with predicted and true labels.

    With test-time augmentation the scores are those of the averaged predictions, and the plain model's accuracy
    is kept beside them (`test_accuracy_single_view`), so that what the averaging adds stays visible.
    `per_view` is the test set's `view_probabilities`, when the caller has them already."""
    check_classifier(model, len(data.class_names))
    if per_view is None:
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
                                    title=f"First {n} test images: predicted (probability) and true label; mistakes in "
                                          f"red", style=data.style)
        files.save_figure(fig, Path(out_dir) / "predictions.png")
    return result


def filter_figure(layer, first=False):
    """A conv layer's trained filters above a fresh initialisation of the same layer: what training changed.

    `first`: the model's first conv layer, whose input channels are the image's; a colour image's are drawn in
    colour and per channel.
    """
    kernel = trained_kernel(layer)
    rgb = first and kernel.shape[2] == 3
    trained, caption = filter_images(kernel, rgb=rgb)
    untrained, _ = filter_images(untrained_kernel(layer), rgb=rgb)
    return plots.trained_vs_untrained(trained, untrained, layer.name, caption)


def maximized_figure(model, untrained, layer_name, style=DIGIT_STYLE, class_names=None, steps=STEPS):
    """The patterns that excite each filter of a conv layer (or each class of the output layer) most, of `model`
    above its `untrained` copy (`inspection.untrained_model`; None: the trained patterns alone)."""
    patterns = [maximize(net, layer_name, steps=steps) if net is not None else None for net in (model, untrained)]
    output = layer_name == layer_names(model)[-1]
    labels = (class_names or range(len(patterns[0]))) if output else None
    return plots.maximized_patterns(*patterns, layer_name, labels, units="classes" if output else "filters",
                                    style=style)


def inspect_model(model, image, out_dir, title="input", include_pooling=False, style=DIGIT_STYLE, maximize_steps=0,
                  class_names=None) -> list:
    """Filters (trained beside untrained) and feature maps of every conv layer, and the (H, W, C) `image` they are
    of, as PNGs in `out_dir`; the filters alone when `image` is None (they need no data). `style` is the image's
    dataset's (see `plots.shown_image`). `maximize_steps` (0: none): also the input pattern each filter of each conv
    layer, and each class of the output layer (named by `class_names`), responds to most, trained beside untrained,
    found in that many steps of gradient ascent (`explain.maximize`; 128 is its default)."""
    check_image_model(model)
    members = ensemble_members(model)
    if members:
        print(f"{model.name} averages {len(members)} networks; the filters and feature maps are the first one's "
              f"({members[0].name})")
    out_dir = Path(out_dir)
    written = []

    def save(fig, name):
        files.save_figure(fig, out_dir / f"{name}.png")
        written.append(out_dir / f"{name}.png")

    for k, layer in enumerate(conv_layers(model)):
        save(filter_figure(layer, first=k == 0), f"filters_{layer.name}")
    if maximize_steps:
        untrained = untrained_model(model)
        for name in layer_names(model):
            save(maximized_figure(model, untrained, name, style, class_names, maximize_steps), f"maximized_{name}")
    if image is None:
        return written
    save(plots.input_figure(image, title, style), "feature_maps_input")
    for name, maps in feature_maps(model, image, include_pooling).items():
        save(plots.feature_maps_figure(maps, name), f"feature_maps_{name}")
    return written


def run(config: Config, out="runs", name=None, resume=None, verbose=None) -> RunDir:
    """The whole assignment: train with early stopping, score on the test set, show, look inside."""
    started = time.perf_counter()
    with _run_directory(config, out, name, resume) as (run_dir, config, data), \
            mlflow_run(config, run_dir.path) as mlflow:  # locked until the report is written
        try:
            _, best, data, metrics = _train_run(run_dir, config, data, resume, verbose, (), tested=True,
                                                mlflow=mlflow)
        except TrainingInterrupted as e:
            e.function = "run"  # resumed by run, which also scores it
            raise
        report = test_and_report(run_dir, best, data, config, metrics, started)
        if mlflow:
            mlflow.log_results(run_dir.path, metrics)
    print(f"Report: {report}")
    print(f"Run directory: {run_dir.path}")
    return run_dir


def test_and_report(run_dir: RunDir, best, data: Dataset, config: Config, metrics, started) -> Path:
    """The end of a run once trained (by `run`, or a fit that cnnlab.RunRecorder recorded): test scores and figures
    (predictions, filters, feature maps), metrics.json with them, then report.html."""
    from .report import report_from_run  # the report builds on this module

    per_view = view_probabilities(best, data.x_test, test_time_augmentation=config.test_time_augmentation)
    metrics.update(evaluate_model(best, data, run_dir.figures, config.test_time_augmentation, per_view))
    index = 0
    inspect_model(best, data.x_test[index], run_dir.figures,
                  title=f"test image {index}: {data.class_names[data.y_test[index]]}", style=data.style)
    metrics["total_seconds"] = round(time.perf_counter() - started, 2)
    files.write_json(run_dir.metrics, metrics)
    return report_from_run(run_dir.path, model=best, data=data, probabilities=np.mean(per_view, axis=0))

