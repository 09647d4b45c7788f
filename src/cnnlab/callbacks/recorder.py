"""RunRecorder: your own model and `model.fit`, recorded as a cnnlab run directory, without rewriting the script.

    rec = cnnlab.RunRecorder("runs/mine", test_data=(x_test, y_test), class_names=names)
    model.fit(x, y, validation_data=(x_val, y_val), epochs=10, callbacks=[rec])
    # runs/mine/ holds what `cnnlab run` writes: `cnnlab compare`, `report`, `inspect` and `serve` take it as any run

Each epoch: history.csv, and best.keras when the monitored score improved (written atomically, as cnnlab's own
training writes them). At the end of the fit: the best model's test scores and figures, metrics.json, report.html.
config.json records what Keras tells a callback: the optimizer and its learning rate, the loss, the epochs asked
for, the model's input shape and classes; the batch size is measured (the loss tracker counts the first batch's
images), as are the training and validation sizes. The model needs `metrics=["accuracy"]` and fit's validation
data every epoch: the best model is chosen, and its validation score read, from the epoch logs.

Pixel scaling. cnnlab keeps images in [0, 1] and feeds a model as `feeding.model_input` reads the model: one whose
first layers rescale its input (`Rescaling(1/255)`, a `Normalization` adapted to 0..255) gets 0..255 pixels, any
other [0, 1]. The test images' own range is read from them (uint8, or values above 1.5: 0..255; else [0, 1]) and
must be the one the model's layers say, else the fit is refused at its start with what to change: a model trained
on 0..255 pixels without a Rescaling layer would be fed [0, 1] by every later cnnlab command, and score as chance.
The test set is kept in the run directory (test_data.npz, the run's dataset) in [0, 1], or as uint8 when it was.

Test data: (x_test, y_test) arrays (labels as integers or one-hot), a tf.data.Dataset or a keras.utils.PyDataset of
(images, labels) batches. Keras shows a callback no validation data, so TensorBoard's per-epoch images
(`tensorboard=True`) are of the test images; `mlflow=True` logs to RUNS/mlflow.db beside the run, a string to that
tracking URI.
"""

import time

import keras
import numpy as np

from .. import environment, files, plots
from ..config import MONITORS, make_config
from ..data import as_float_images
from ..errors import CnnlabError, ConfigError, DataError
from ..feeding import check_fits, model_input
from ..inspection import load_model
from ..model import summary_text
from ..pipeline import load_data, test_and_report
from ..rundir import RunDir
from ..training import epoch_row, history_with, is_improvement, monitor_mode
from .mlflow import LOCAL, MLflowLogger, client_class, tracking_uri
from .tensorboard import TENSORBOARD_IMAGES, require_tensorboard, tensorboard_callbacks

TEST_FILE = "test_data.npz"


def arrays_of(test_data):
    """(images, integer labels) of `test_data`: arrays, or a tf.data.Dataset or PyDataset of (x, y) batches."""
    if isinstance(test_data, (tuple, list)) and len(test_data) == 2:
        images, labels = (np.asarray(part) for part in test_data)
    else:
        batches = [(np.asarray(batch[0]), np.asarray(batch[1])) for batch in _batches(test_data)]
        if not batches:
            raise DataError("test_data holds no batches; give it the test images and labels")
        images, labels = (np.concatenate(part) for part in zip(*batches))
    if labels.ndim == 2 and labels.shape[1] > 1:  # one-hot
        labels = labels.argmax(axis=1)
    labels = labels.reshape(-1)
    if len(images) != len(labels) or not len(labels):
        raise DataError(f"test_data holds {len(images)} images and {len(labels)} labels; give as many of each, "
                        f"at least one")
    if not (np.issubdtype(labels.dtype, np.integer) or np.all(np.mod(labels, 1) == 0)):
        raise DataError(f"test_data's labels are {labels.dtype} values, not class numbers 0..n-1 (or one-hot rows)")
    return images, labels.astype(np.int64)


def _batches(data):
    if isinstance(data, keras.utils.PyDataset):
        return (data[i] for i in range(len(data)))
    if hasattr(data, "as_numpy_iterator"):  # a tf.data.Dataset
        if int(data.cardinality()) == -1:  # tf.data.INFINITE_CARDINALITY
            raise DataError("test_data repeats forever; give it the test set once (without .repeat())")
        return data.as_numpy_iterator()
    raise DataError(f"test_data must be (x_test, y_test) arrays, a tf.data.Dataset or a keras.utils.PyDataset of "
                    f"(images, labels) batches, not {type(data).__name__}")


def pixel_range(images) -> float:
    """255.0 for 0..255 pixels (uint8, or values above 1.5), 1.0 for [0, 1]; other ranges are refused."""
    if images.dtype == np.uint8:
        return 255.0
    low, high = float(np.min(images)), float(np.max(images))
    if low < 0 or high > 255:
        raise DataError(f"test_data's images hold values {low:g}..{high:g}; cnnlab reads pixels 0..255 or [0, 1]: "
                        f"give them so, and normalise inside the model (a Rescaling or Normalization layer)")
    return 255.0 if high > 1.5 else 1.0


def stored_images(images, scale) -> np.ndarray:
    """The test images as the run's .npz keeps them: uint8 when they are whole 0..255 pixels, else float in [0, 1]."""
    if scale == 255.0 and (images.dtype == np.uint8 or np.all(np.mod(images, 1) == 0)):
        return images.astype(np.uint8)
    return np.asarray(images, np.float32) / np.float32(scale)


def _name(setting) -> str:
    """A compile setting as text: 'sparse_categorical_crossentropy', or a serialized object's class name."""
    if isinstance(setting, dict):
        return setting.get("config", {}).get("name") or setting.get("class_name", "?")
    return getattr(setting, "__name__", None) or str(setting)


class RunRecorder(keras.callbacks.Callback):
    """A cnnlab run directory of the fit it is given to (see the module docstring)."""

    def __init__(self, run_dir, test_data, class_names=None, monitor="val_accuracy", tensorboard=False, mlflow=None):
        super().__init__()
        if monitor not in MONITORS:
            raise ConfigError(f"monitor must be one of {', '.join(MONITORS)}, not {monitor!r}")
        self.run = RunDir(run_dir)
        if self.run.holds_model():
            raise CnnlabError(f"{self.run.path} already holds a trained model; record into another run_dir")
        files.check_writable(self.run.path, flag="run_dir")
        self.images, self.labels = arrays_of(test_data)
        self.class_names = None if class_names is None else [str(name) for name in class_names]
        self.monitor, self.tensorboard = monitor, bool(tensorboard)
        self.mlflow = LOCAL if mlflow is True else (mlflow or None)
        if self.tensorboard:  # a missing extra is said before the fit, not after its first epoch
            require_tensorboard()
        if self.mlflow:
            client_class()
        self.history, self.best_value, self.best_epoch = {}, None, 0
        self.config = self.logger = self.mlflow_epochs = None
        self.tracking = keras.callbacks.CallbackList([])
        self.sizes = {}
        self._started = self._epoch_started = 0.0

    # ------------------------------------------------------------ at the start: what the model takes
    def on_train_begin(self, logs=None):
        if self.config is not None:
            raise CnnlabError(f"this RunRecorder recorded a fit into {self.run.path} already; give the next fit a new "
                              f"RunRecorder with another run_dir")
        self._started = time.perf_counter()
        model = self.model
        spec = model_input(model)
        classes = int(model.output_shape[-1])
        self.class_names = self.class_names or [str(k) for k in range(classes)]
        if len(self.class_names) != classes or self.labels.max() >= classes:
            raise DataError(f"the model has {classes} outputs but test_data and class_names have "
                            f"{max(len(self.class_names), int(self.labels.max()) + 1)} classes; give the model's")
        scale = pixel_range(self.images)
        if scale != spec.pixel_scale:
            wanted = "0..255 pixels" if spec.pixel_scale == 255 else "[0, 1]"
            raise DataError(f"test_data's images are {'0..255 pixels' if scale == 255 else 'in [0, 1]'} but the model "
                            f"takes {wanted} ({spec.reason}); give test images as the model is trained on them, or "
                            f"{'divide them by 255' if spec.pixel_scale == 1 and scale == 255 else 'multiply by 255'}; "
                            f"a model trained on 0..255 pixels needs a Rescaling(1/255) layer first")
        self.images = stored_images(self.images, scale)
        check_fits(spec, as_float_images(self.images[:1]).shape[1:], data="test_data")
        with files.atomic_path(self.run.path / TEST_FILE, suffix=".npz") as tmp:
            np.savez(tmp, x_test=self.images, y_test=self.labels, class_names=np.array(self.class_names))
        files.write_text(self.run.summary, summary_text(model) + "\n")
        self.sizes = {"test": len(self.labels)}
        if self.tensorboard:
            rows = slice(0, TENSORBOARD_IMAGES)
            self.tracking = keras.callbacks.CallbackList(
                tensorboard_callbacks(self.run.path / "tensorboard", as_float_images(self.images[rows]),
                                      self.labels[rows], self.class_names), model=model, **self.params)
        self.tracking.on_train_begin(logs)

    def fit_config(self, batch_size):
        """config.json: what can be known of the fit, in cnnlab's settings."""
        model, spec = self.model, model_input(self.model)
        rate = model.optimizer.get_config()["learning_rate"]  # a number, or a serialized schedule
        return make_config(
            dataset=str((self.run.path / TEST_FILE).resolve()), class_names=self.class_names,
            image_size=f"{spec.shape[0]}x{spec.shape[1]}", color_mode="rgb" if spec.channels == 3 else "grayscale",
            recorded_model=model.name, loss=_name(model.get_compile_config().get("loss")),
            optimizer=type(model.optimizer).__name__.lower(),
            learning_rate=float(str(np.asarray(model.optimizer.learning_rate))),  # float32's shortest text: 0.003
            lr_schedule=_name(rate) if isinstance(rate, dict) else "constant", batch_size=batch_size,
            epochs=self.params["epochs"], monitor=self.monitor, tensorboard=self.tensorboard, mlflow=self.mlflow)

    # ------------------------------------------------------------ each batch and epoch
    def _seen(self) -> int:
        """Images the loss tracker has counted since Keras last reset it (each epoch, and each validation pass)."""
        return int(np.asarray(next(m for m in self.model.metrics if m.name == "loss").count))

    def on_train_batch_begin(self, batch, logs=None):
        self.tracking.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if self.config is None:  # the first call: Keras's `batch` is the last step it ran
            if "accuracy" not in (logs or {}):
                raise CnnlabError(f"RunRecorder records accuracy: compile the model with metrics=['accuracy'] (its "
                                  f"logs have {', '.join(logs or {}) or 'nothing'})")
            self.config = self.fit_config(batch_size=round(self._seen() / (batch + 1)))
            files.write_json(self.run.config, self.config.to_dict())
            if self.mlflow:
                self.logger = MLflowLogger(tracking_uri(self.mlflow, self.run.path.parent), self.run.path,
                                           self.config.to_dict())
                self.mlflow_epochs = self.logger.for_network()
                self.mlflow_epochs.set_model(self.model)
        if "train" not in self.sizes and batch + 1 == self.params.get("steps"):
            self.sizes["train"] = self._seen()
        self.tracking.on_train_batch_end(batch, logs)

    def on_test_begin(self, logs=None):
        self.tracking.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.tracking.on_test_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()
        self.tracking.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if "val_loss" not in logs:
            raise CnnlabError("RunRecorder chooses and scores the best model on validation data: give fit "
                              "validation_data= (or validation_split=), validated every epoch")
        if "validation" not in self.sizes:
            self.sizes["validation"] = self._seen()
        self.history = history_with(self.history, epoch_row(self.model, epoch, logs, self._epoch_started))
        if is_improvement(logs.get(self.monitor), self.best_value, monitor_mode(self.monitor)):
            files.save_model(self.model, self.run.best_model)
            self.best_value, self.best_epoch = float(logs[self.monitor]), epoch + 1
        self.run.write_history(self.history)
        self.tracking.on_epoch_end(epoch, logs)
        if self.mlflow_epochs:
            self.mlflow_epochs.on_epoch_end(epoch, logs)

    # ------------------------------------------------------------ at the end: scores, figures, report
    def on_train_end(self, logs=None):
        try:
            self._finish(logs)
        except BaseException:
            if self.logger:  # the MLflow run says the fit failed rather than staying RUNNING
                self.logger.end("FAILED")
            raise

    def _finish(self, logs):
        self.tracking.on_train_end(logs)
        if not self.best_epoch:
            raise CnnlabError(f"the fit completed no epoch, so {self.run.path} holds no model")
        best = load_model(self.run.best_model)
        data = load_data(self.config)
        files.write_json(self.run.data, {**data.describe(), "sizes": self.sizes})
        epochs_run = len(self.history["epoch"])
        files.save_figure(plots.learning_curves(self.history, self.best_epoch, self.monitor),
                          self.run.figure("learning_curves"))
        stopped = bool(self.model.stop_training) and epochs_run < self.config.epochs
        train_seconds = float(np.sum(self.history["seconds"]))
        at_best = self.best_epoch - 1
        metrics = {
            "dataset": data.name, "data_source": f"model.fit recorded by cnnlab.RunRecorder; test set in {data.source}",
            "sizes": self.sizes, "image_shape": list(data.image_shape), "parameters": int(best.count_params()),
            "best_epoch": self.best_epoch, "epochs_run": epochs_run, "stopped_early": stopped,
            "stop_reason": (f"stopped by a callback after epoch {epochs_run}" if stopped else
                            f"fit ran its {epochs_run} epochs"),
            "train_seconds": round(train_seconds, 2), "seconds_per_epoch": round(train_seconds / epochs_run, 2),
            "val_loss": self.history["val_loss"][at_best], "val_accuracy": self.history["val_accuracy"][at_best],
            "test_time_augmentation": "none", **environment.describe(),
        }
        report = test_and_report(self.run, best, data, self.config, metrics, self._started)
        if self.logger:
            self.logger.log_results(self.run.path, metrics)
            self.logger.end()
        print(f"Report: {report}")
        print(f"Run directory: {self.run.path}")

