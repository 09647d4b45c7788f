"""Training: fit with the best model saved as it appears, stop when the monitored score stops improving.

Everything a later step or a resume needs is written at the end of every epoch, each file atomically:
history.csv, best.keras (when the score improved), checkpoint/last.keras and checkpoint/state.json.
So Ctrl-C, a kill or a crash costs at most the epoch in progress, never a good model.
"""

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass

import keras
import numpy as np

from . import files
from .config import Config
from .data import Dataset
from .errors import CnnlabError
from .inspection import load_model
from .rundir import RunDir


class TrainingInterrupted(CnnlabError):
    """Ctrl-C: training stopped; what was saved is intact and the run can be resumed."""


class TrainingDiverged(CnnlabError):
    """The loss became NaN or infinite; the last good best model is kept."""


@dataclass
class TrainResult:
    history: dict  # column -> per-epoch values, the same as history.csv
    best_epoch: int  # 1-based
    best_value: float  # of the monitored metric
    epochs_run: int
    stopped_early: bool
    stop_reason: str
    seconds: float


def set_seeds(seed):
    """Python, NumPy and backend seeds in one call, so a run can be repeated."""
    keras.utils.set_random_seed(seed)


class EpochRecorder(keras.callbacks.Callback):
    """Stop cleanly on Ctrl-C or a non-finite loss, else save this epoch's history, best model and state.

    An interrupted or diverged epoch is never saved. Runs after early stopping, whose counter it saves.
    """

    def __init__(self, run: RunDir, config: Config, history: dict, best_value, best_epoch, early_stopping):
        super().__init__()
        self.run, self.config, self.early_stopping = run, config, early_stopping
        self.history = history
        self.mode = "max" if "accuracy" in config.monitor else "min"
        self.best_value, self.best_epoch = best_value, best_epoch
        self.interrupted = False
        self._epoch_started = 0.0

    def request_stop(self, *_):
        """SIGINT handler: Keras checks stop_training after each batch."""
        self.interrupted = True
        self.model.stop_training = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
        print("\nCtrl-C: stopping after this batch (press again to stop now)...", file=sys.stderr, flush=True)

    def resume_hint(self):
        return (f"the completed epochs and the best model are kept in {self.run.path}; "
                f"resume with: cnnlab train --resume {self.run.path}")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.interrupted:
            raise TrainingInterrupted(f"training interrupted during epoch {epoch + 1}; {self.resume_hint()}")
        loss = float(logs.get("loss", float("nan")))
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss} in epoch {epoch + 1}; training stopped, the best model so far is kept in "
                f"{self.run.best_model}; lower learning_rate (now {self.config.learning_rate})")
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row["seconds"] = time.perf_counter() - self._epoch_started
        done = len(self.history.get("epoch", []))
        for key in {**self.history, **row}:  # epochs without validation leave NaN in the val_ columns
            self.history.setdefault(key, [math.nan] * done).append(row.get(key, math.nan))
        value = logs.get(self.config.monitor)
        improved = value is not None and (
            self.best_value is None
            or (value > self.best_value + self.config.min_delta if self.mode == "max"
                else value < self.best_value - self.config.min_delta))
        if improved:
            self.best_value, self.best_epoch = float(value), epoch + 1
            files.save_model(self.model, self.run.best_model)
        self.run.write_history(self.history)
        files.save_model(self.model, self.run.last_model)
        files.write_json(self.run.state, {
            "epochs_completed": epoch + 1,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "early_stopping_wait": self.early_stopping.wait,
        })


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's EarlyStopping that can start from a saved state, and that waits out epochs without validation."""

    def __init__(self, resume_state=None, best_weights=None, **kwargs):
        super().__init__(**kwargs)
        self.resume_state, self.resume_weights = resume_state, best_weights

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.resume_state and self.resume_state.get("best_value") is not None:
            self.best = self.resume_state["best_value"]
            self.best_epoch = self.resume_state["best_epoch"] - 1
            self.wait = self.resume_state.get("early_stopping_wait", 0)
            self.best_weights = self.resume_weights

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor in (logs or {}):  # with validation_freq > 1, only validated epochs count
            super().on_epoch_end(epoch, logs)


def steps_per_epoch(config: Config, data: Dataset) -> int:
    return math.ceil(len(data.x_train) / config.batch_size)


def validation_epochs(config: Config) -> list:
    """The 1-based epochs that end with a validation pass: every `validation_freq`-th, and the last."""
    return [e for e in range(1, config.epochs + 1) if e % config.validation_freq == 0 or e == config.epochs]


def train(model, data: Dataset, config: Config, run_dir, resume=False, verbose=None, callbacks=()) -> TrainResult:
    """Fit `model` on data.x_train, validating on data.x_val; write history and models into `run_dir`.

    With `resume=True`, `model` must be the run's checkpoint (see `load_checkpoint`) and training
    continues after the last completed epoch, with the early-stopping state it had.
    `callbacks` are more Keras callbacks (a benchmark's timer), run after cnnlab's own.
    """
    run = RunDir(run_dir)
    files.check_writable(run.path, need_bytes=3 * 4 * model.count_params() + 10_000_000)
    history, state, best_weights = {}, {}, None
    if resume:
        state = run.read_json(run.state)
        history = {k: v[: state["epochs_completed"]] for k, v in run.read_history().items()}
        if run.best_model.exists():
            best_weights = load_model(run.best_model).get_weights()
    initial_epoch = state.get("epochs_completed", 0)
    if initial_epoch >= config.epochs:
        raise CnnlabError(f"{run.path} already completed {initial_epoch} of {config.epochs} epochs; raise --epochs to train on")
    early_stopping = ResumableEarlyStopping(
        resume_state=state, best_weights=best_weights, monitor=config.monitor, patience=config.patience,
        min_delta=config.min_delta, restore_best_weights=config.restore_best_weights, verbose=0)
    recorder = EpochRecorder(run, config, history, state.get("best_value"), state.get("best_epoch", 0), early_stopping)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGINT, recorder.request_stop) if in_main_thread else None
    try:
        model.fit(
            data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
            batch_size=config.batch_size, epochs=config.epochs, initial_epoch=initial_epoch,
            validation_batch_size=config.eval_batch_size, validation_freq=validation_epochs(config),
            callbacks=[early_stopping, recorder, *callbacks], shuffle=True,
            verbose=verbose if verbose is not None else (1 if sys.stdout.isatty() else 2),
        )
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"training interrupted; {recorder.resume_hint()}") from None
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous_handler)
    epochs_run = len(history.get("epoch", []))
    stopped_early = epochs_run < config.epochs
    reason = (f"early stopping: {config.monitor} did not improve by more than {config.min_delta} "
              f"for {config.patience} epoch(s) after epoch {recorder.best_epoch}") if stopped_early \
        else f"reached the maximum of {config.epochs} epochs"
    return TrainResult(
        history=history, best_epoch=recorder.best_epoch, best_value=recorder.best_value, epochs_run=epochs_run,
        stopped_early=stopped_early, stop_reason=reason,
        seconds=float(np.sum(history.get("seconds", []))),
    )


def load_checkpoint(run_dir):
    """The model (with its optimizer state) of a run's last completed epoch, to resume training."""
    run = RunDir(run_dir)
    if not run.last_model.exists():
        raise CnnlabError(f"{run.path} has no checkpoint/last.keras to resume from; is it a cnnlab run directory?")
    return load_model(run.last_model)
