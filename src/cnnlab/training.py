"""Training: fit with the best model saved as it appears, stop when the monitored score stops improving.

At the end of every epoch, in this order, each file written atomically (temporary file + rename):
  1. checkpoint/epoch-NNNN.keras   the model with its optimizer state;
  2. checkpoint/state.json         the commit point: names that checkpoint, holds the history, the best score,
                                   early stopping's counter and the dropout layers' random state;
  3. history.csv, best.keras (a copy of the checkpoint, when the score improved); older checkpoints deleted.
A kill before step 2 leaves the previous epoch's files, all intact; a kill after it is completed by a resume,
which redoes step 3. So Ctrl-C, a kill or a crash costs at most the epoch in progress, never a good model.

Batches are shuffled by (seed, epoch) alone and the dropout state is restored, so a resumed run trains
exactly as the uninterrupted run would have.
"""

import itertools
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass

import keras
import numpy as np

from . import distribution, environment, files
from .config import Config
from .data import Dataset, keras_cache_dir
from .errors import AlreadyComplete, CnnlabError, TrainingDiverged, TrainingInterrupted, resume_call
from .inspection import load_model
from .rundir import RunDir


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


def new_state():
    return {"epochs_completed": 0, "checkpoint": None, "history": {}, "best_value": None, "best_epoch": 0,
            "early_stopping_wait": 0, "stopped_early": False, "random_state": []}


class EpochShuffle(keras.utils.PyDataset):
    """The training batches of epochs `first_epoch`..`epochs - 1` as one sequence, each epoch shuffled by
    (seed, epoch) alone, so that a resumed run gets the batches the uninterrupted run got.

    Batch i depends on i only: Keras prefetches across epoch ends, which state set per epoch would race with.
    On several devices (`parallel`), batches are whole multiples of the device count and each process gets its share.
    """

    def __init__(self, x, y, batch_size, seed, first_epoch, epochs, parallel=distribution.SINGLE):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed, self.first_epoch = x, y, batch_size, seed, first_epoch
        self.parallel, self.used = parallel, distribution.whole_rows(len(x), parallel)
        self.steps_per_epoch = math.ceil(self.used / batch_size)
        self.epochs = epochs - first_epoch
        self._orders = {}

    def order(self, epoch):
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.x)),
                            **{e: o for e, o in self._orders.items() if e == epoch - 1}}
        return self._orders[epoch]

    def __len__(self):
        return self.steps_per_epoch * self.epochs

    def __getitem__(self, index):
        epoch, step = divmod(index, self.steps_per_epoch)
        rows = self.order(self.first_epoch + epoch)[step * self.batch_size:min((step + 1) * self.batch_size, self.used)]
        rows = self.parallel.local_rows(rows)
        return self.x[rows], self.y[rows]


class OrderedBatches(keras.utils.PyDataset):
    """Images and labels in order, `batch_size` at a time: validation data that is streamed (ScaledImages), which
    Keras cannot take as an array."""

    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return math.ceil(len(self.y) / self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.y[rows]


def validation_data(data: Dataset, batch_size, parallel=distribution.SINGLE):
    """What fit validates on: the arrays, or a streamed dataset's batches; on several devices, batches padded to
    the device count (`distribution.PaddedBatches`)."""
    if parallel.devices > 1:
        return {"validation_data": distribution.PaddedBatches(data.x_val, data.y_val, batch_size, parallel)}
    if isinstance(data.x_val, np.ndarray):
        return {"validation_data": (data.x_val, data.y_val), "validation_batch_size": batch_size}
    return {"validation_data": OrderedBatches(data.x_val, data.y_val, batch_size)}


def _random_state_variables(model):
    """The dropout layers' seed-generator states: not in .keras files, yet they decide the dropout masks."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def epoch_row(model, epoch, logs, started) -> dict:
    """history.csv's row for a finished epoch: its number, Keras's logs, the learning rate and the seconds since
    `started` (perf_counter)."""
    return {"epoch": epoch + 1, **{key: float(value) for key, value in logs.items()},
            "learning_rate": float(_numpy(model.optimizer.learning_rate)), "seconds": time.perf_counter() - started}


def _numpy(variable):
    """A Keras variable's value as NumPy (np.asarray goes through the variable's own __array__, which NumPy 2
    accepts; keras.ops.convert_to_numpy warns about the copy keyword on the TensorFlow backend)."""
    return np.asarray(variable)


def get_random_state(model):
    return [_numpy(v).tolist() for v in _random_state_variables(model)]


def set_random_state(model, saved):
    variables = _random_state_variables(model)
    if len(saved) == len(variables):  # else the model is not the one saved: keep its fresh state
        for variable, value in zip(variables, saved):
            variable.assign(np.asarray(value, dtype=variable.dtype))


def finish_epoch(run: RunDir, state):
    """Step 3 of the module docstring, from the committed state; redone on resume in case a kill cut it short."""
    epoch = state["epochs_completed"]
    if epoch:
        run.write_history(state["history"])
    if epoch and state["best_epoch"] == epoch:
        files.copy_file(run.checkpoint_model(epoch), run.best_model)
    for folder in (run.path, run.checkpoints):
        files.remove_temporaries(folder)
    for old in run.checkpoints.glob("epoch-*.keras"):
        if old.name != state["checkpoint"]:
            old.unlink()


def history_with(history, row) -> dict:
    """A copy of `history` ({column: [values]}) with one epoch's `row` appended; epochs without validation leave NaN
    in the val_ columns."""
    history = {key: list(values) for key, values in history.items()}
    done = len(history.get("epoch", []))
    for key in {**history, **row}:
        history.setdefault(key, [math.nan] * done).append(row.get(key, math.nan))
    return history


def monitor_mode(monitor) -> str:
    return "max" if "accuracy" in monitor else "min"


def is_improvement(value, best, mode, min_delta=0.0) -> bool:
    """Whether the monitored `value` (None: not measured this epoch) beats `best` (None: nothing yet) by min_delta."""
    return value is not None and (best is None or (value > best + min_delta if mode == "max"
                                                   else value < best - min_delta))


class EpochRecorder(keras.callbacks.Callback):
    """Stop cleanly on Ctrl-C or a non-finite loss, else commit each completed epoch (see the module docstring).

    An interrupted or diverged epoch is never saved. Runs after early stopping, whose counter it saves.
    """

    def __init__(self, run: RunDir, config: Config, state, early_stopping):
        super().__init__()
        self.run, self.config, self.state, self.early_stopping = run, config, state, early_stopping
        self.mode = monitor_mode(config.monitor)
        self.interrupted = False
        self._epoch_started = 0.0

    def request_stop(self, *_):
        """SIGINT handler: the training loop stops at the end of the current batch."""
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
        print("\nCtrl-C: stopping after this batch (press again to stop now)...", file=sys.stderr, flush=True)

    def interruption(self):
        return TrainingInterrupted(self.run.path, self.state["epochs_completed"])

    def divergence(self, loss, epoch):
        best = self.state["best_epoch"]
        kept = (f"the best model (epoch {best}) is kept in {self.run.best_model}" if best
                else "no epoch had completed, so no model was saved")
        return TrainingDiverged(
            f"loss became {loss} in epoch {epoch + 1}; training stopped; {kept}; "
            f"start a new run with a lower learning_rate= (this one used {self.config.learning_rate})")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.interrupted:
            raise self.interruption()
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise self.divergence(loss, self.state["epochs_completed"])

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss = float(logs.get("loss", float("nan")))
        if not math.isfinite(loss):
            raise self.divergence(loss, epoch)
        history = history_with(self.state["history"], epoch_row(self.model, epoch, logs, self._epoch_started))
        value, best = logs.get(self.config.monitor), self.state["best_value"]
        improved = is_improvement(value, best, self.mode, self.config.min_delta)
        checkpoint = self.run.checkpoint_model(epoch + 1)
        try:
            files.save_model(self.model, checkpoint)
        except OSError as e:  # a full disk or a folder gone: the earlier epochs' files are untouched
            raise CnnlabError(f"could not save epoch {epoch + 1} in {self.run.path}: {e.strerror or e}; "
                              f"the earlier epochs are intact; fix that, then resume with: "
                              f"{resume_call(self.run.path)}") from None
        self.state.update({
            "epochs_completed": epoch + 1, "checkpoint": checkpoint.name, "history": history,
            "best_value": float(value) if improved else best,
            "best_epoch": epoch + 1 if improved else self.state["best_epoch"],
            "early_stopping_wait": self.early_stopping.wait,
            "stopped_early": bool(self.model.stop_training) and epoch + 1 < self.config.epochs,
            "random_state": get_random_state(self.model),
        })
        files.write_json(self.run.state, self.state)
        finish_epoch(self.run, self.state)
        if self.interrupted:
            raise self.interruption()


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
    """Under the distribution in effect, as EpochShuffle counts them."""
    return math.ceil(distribution.whole_rows(len(data.x_train), distribution.current()) / config.batch_size)


def execution_steps(wanted, steps_per_epoch) -> int:
    """The largest number of steps per backend call, at most `wanted`, that divides an epoch evenly.

    A call that ran past an epoch's end would take the next epoch's batches from the shared stream, so a
    resumed run would no longer see the batches the uninterrupted one saw.
    """
    return max(d for d in range(1, min(wanted, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def scanned_train_function(model, steps):
    """On JAX, `steps` training steps as one compiled `lax.scan` instead of Keras's Python loop of compiled steps.

    TensorFlow already runs steps_per_execution steps inside one graph; JAX's trainer calls back into Python
    between steps, and a GPU then waits on Python for most of each small step. Same steps in the same order, so
    the same result up to rounding: only the loop moves into XLA. Batches that cannot be stacked (a short last batch) run one by one.
    """
    import jax
    import jax.numpy as jnp

    def run_steps(state, batches):
        def step(state, batch):
            logs, state = model.train_step(state, batch)
            return state, logs

        state, logs = jax.lax.scan(step, state, batches)
        return jax.tree.map(lambda values: values[-1], logs), state  # metrics are running means: the last is right

    compiled = {}

    def jitted(function, state):
        """`function` compiled, on its first call; under a distribution, the state it returns keeps the shardings
        it came with (replicated weights), as Keras's own step does."""
        if function not in compiled:
            shardings = None if keras.distribution.distribution() is None else \
                (None, jax.tree.map(lambda value: value.sharding, state))
            compiled[function] = jax.jit(function, donate_argnums=0, out_shardings=shardings)
        return compiled[function]

    def train_function(state, iterator):
        batches = list(itertools.islice(iterator, steps))
        if not batches:
            raise StopIteration  # the end of the data, as Keras's own train function signals it
        if len(batches) == steps and len({tuple(x.shape for x in jax.tree.leaves(b)) for b in batches}) == 1:
            return jitted(run_steps, state)(state, jax.tree.map(lambda *leaves: jnp.stack(leaves), *batches))
        for batch in batches:
            logs, state = jitted(model.train_step, state)(state, batch)
        return logs, state

    return train_function


def cache_compilations():
    """On JAX, keep compiled steps on disk (beside Keras's dataset cache) unless the user chose a folder: on an H100,
    compiling `fast`'s steps took longer (~3.6 s) than its 750 steps (0.7 s), and the next run loads them instead.
    Every compilation is kept, not only those over JAX's default second: the validation steps compile in less but
    are paid again by every run."""
    if keras.backend.backend() != "jax":
        return
    import jax

    if jax.config.jax_compilation_cache_dir is None:  # JAX_COMPILATION_CACHE_DIR sets it too
        jax.config.update("jax_compilation_cache_dir", str(keras_cache_dir().parent / "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


# Keras's JAX trainer calls `logs, state = self.train_function(state, iterator)` in fit: the scan replaces that
# function, so it relies on this call (checked in Keras 3.6 to 3.15; pyproject.toml bounds Keras below 3.16).
TRAIN_FUNCTION_CALL = "logs, state = self.train_function(state, iterator)"


def scan_contract_warning() -> str | None:
    """Why the scanned loop cannot replace Keras's (the JAX trainer no longer calls train_function as the scan
    expects), or None when it can."""
    import inspect

    from keras.src.backend.jax.trainer import JAXTrainer

    try:
        holds = TRAIN_FUNCTION_CALL in inspect.getsource(JAXTrainer.fit)
    except (OSError, TypeError):  # no source shipped: cannot check, so do not rely on it
        holds = False
    return None if holds else (f"warning: Keras {keras.__version__}'s JAX trainer does not call its train function "
                               f"as cnnlab's scanned loop expects; training with Keras's own loop (slower on a GPU)")


def use_scanned_steps(model) -> bool:
    """Where the scan applies: JAX, compiled, several steps per call (on one device or several), and a Keras whose
    trainer calls train_function as the scan expects (else a warning, and Keras's own loop)."""
    if not (keras.backend.backend() == "jax" and model.steps_per_execution > 1 and bool(model.jit_compile)):
        return False
    warning = scan_contract_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    return warning is None


def augmentation_stall_warning(model, platform=None) -> str | None:
    """A warning where training is known to stall: Keras's shift, rotation and zoom layers inside a JAX training step
    on an accelerator (50 steps did not finish in 45 s on an H100, 11.5 s without them; keras-team/keras#23229).
    `platform` is JAX's (cpu, gpu, tpu), by default the one it runs on."""
    stalling = {"RandomTranslation", "RandomRotation", "RandomZoom"} & {type(layer).__name__ for layer in model.layers}
    if keras.backend.backend() != "jax" or not stalling:
        return None
    if platform is None:
        import jax

        platform = jax.default_backend()
    if platform == "cpu":
        return None
    return (f"warning: {', '.join(sorted(stalling))} make JAX training on a {platform.upper()} stall (Keras's augmentation "
            f"layers; keras-team/keras#23229); train with KERAS_BACKEND=tensorflow, or without them: "
            f"augment_translate=0, augment_rotate=0, augment_zoom=0")


def validation_epochs(config: Config) -> list:
    """The 1-based epochs that end with a validation pass: every `validation_freq`-th, and the last."""
    return [e for e in range(1, config.epochs + 1) if e % config.validation_freq == 0 or e == config.epochs]


def training_left(state, config: Config):
    return not state["stopped_early"] and state["epochs_completed"] < config.epochs


def check_resumable(run: RunDir, state, config: Config, tested=False):
    """Refuse, before any data is loaded, to resume a run that has nothing left to do. A run killed after its
    last epoch but before metrics.json was written still has its evaluation to do; with `tested` (`cnnlab run`),
    so does one killed before its test scores were written."""
    if training_left(state, config) or not run.metrics.exists():
        return
    if tested and "test_accuracy" not in run.read_metrics():
        return
    done = state["epochs_completed"]
    if state["stopped_early"]:
        raise AlreadyComplete(f"{run.path} already stopped early after epoch {done} ({config.monitor} stopped "
                              f"improving); there is nothing to resume")
    if done >= config.epochs:
        more = "raise epochs= to train on" if config.lr_schedule == "constant" else \
            f"its {config.lr_schedule} learning-rate schedule has ended; start a new run to train longer"
        raise AlreadyComplete(f"{run.path} already completed {done} of {config.epochs} epochs; {more}")


def model_file_bytes(model):
    """About the size of a .keras file of `model` with Adam's two moments: float32 weights, three copies."""
    return 3 * 4 * model.count_params() + 100_000


def train(model, data: Dataset, config: Config, run_dir, resume=False, verbose=None, callbacks=()) -> TrainResult:
    """Fit `model` on data.x_train, validating on data.x_val; write history and models into `run_dir`.

    With `resume=True`, `model` must be the run's checkpoint (see `load_checkpoint`) and training
    continues after the last completed epoch, with the early-stopping and dropout state it had.
    `callbacks` are more Keras callbacks (a benchmark's timer), run after cnnlab's own.
    """
    run = RunDir(run_dir)
    if not resume and run.holds_model():
        raise CnnlabError(f"{run.path} already holds a trained model; train into another folder, or pass resume=True "
                          f"to continue it")
    # Up to two checkpoints, best.keras and one temporary copy exist at a time.
    files.check_writable(run.path, need_bytes=4 * model_file_bytes(model) + 10_000_000)
    state = (run.read_state() if resume else None) or new_state()
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    finish_epoch(run, state)
    best_weights = None
    if state["best_epoch"] and config.restore_best_weights:
        best_weights = load_model(run.best_model, compile=False).get_weights()
    if not training_left(state, config):
        return _result(state, config)
    set_random_state(model, state["random_state"])
    early_stopping = ResumableEarlyStopping(
        resume_state=state, best_weights=best_weights, monitor=config.monitor, patience=config.patience,
        min_delta=config.min_delta, restore_best_weights=config.restore_best_weights, verbose=0)
    recorder = EpochRecorder(run, config, state, early_stopping)
    parallel = distribution.current()
    batches = EpochShuffle(data.x_train, data.y_train, config.batch_size, config.seed, state["epochs_completed"],
                           config.epochs, parallel)
    validation = validation_data(data, config.eval_batch_size, parallel)
    # on several devices: first, so that early stopping and the history read the means over the images themselves
    first = [validation["validation_data"].means_correction()] if parallel.devices > 1 else []

    model.steps_per_execution = execution_steps(config.steps_per_execution, batches.steps_per_epoch)
    cache_compilations()
    warning = augmentation_stall_warning(model)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if use_scanned_steps(model):
        model.train_function = scanned_train_function(model, model.steps_per_execution)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGINT, recorder.request_stop) if in_main_thread else None
    try:
        model.fit(
            batches, steps_per_epoch=batches.steps_per_epoch, shuffle=False,  # EpochShuffle shuffles
            **validation, validation_freq=validation_epochs(config), epochs=config.epochs,
            initial_epoch=state["epochs_completed"], callbacks=[*first, early_stopping, recorder, *callbacks],
            verbose=verbose if verbose is not None else (1 if environment.live_output() else 2),
        )
    except KeyboardInterrupt:
        raise recorder.interruption() from None
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous_handler)
    return _result(state, config)


def _result(state, config: Config) -> TrainResult:
    history, stopped_early = state["history"], state["stopped_early"]
    reason = (f"early stopping: {config.monitor} did not improve by more than {config.min_delta} "
              f"for {config.patience} epoch(s) after epoch {state['best_epoch']}") if stopped_early \
        else f"reached the maximum of {config.epochs} epochs"
    return TrainResult(
        history=history, best_epoch=state["best_epoch"], best_value=state["best_value"],
        epochs_run=state["epochs_completed"], stopped_early=stopped_early, stop_reason=reason,
        seconds=float(np.sum(history.get("seconds", []))),
    )


def load_checkpoint(run_dir):
    """The model (with its optimizer state) of a run's last completed epoch, to resume training."""
    run = RunDir(run_dir)
    state = run.read_state()
    if not state:
        raise CnnlabError(f"{run.path} has no completed epoch to resume from; is it a cnnlab run directory?")
    return load_model(run.checkpoints / state["checkpoint"])
