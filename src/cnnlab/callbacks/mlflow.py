"""MLflow: a run's settings (params), per-epoch metrics, test scores and files (artifacts), logged to MLflow.

`--mlflow` alone logs to a local store beside the run directories, MLflow's SQLite store (RUNS/mlflow.db, the files
in RUNS/mlartifacts/), so it works with nothing running; `--mlflow URI` logs to that tracking URI (a team's server).
Runs go to the experiment "cnnlab", named as their run directories; RUN_DIR/mlflow.json keeps the MLflow run's id,
so a resumed run goes on logging into the same MLflow run.

    with mlflow_run(config, run_dir) as logger:           # None when config.mlflow is None
        model.fit(..., callbacks=[logger.for_network()])   # params at the start, metrics each epoch
        logger.log_results(run_dir, metrics)               # test scores, report.html, best.keras, figures
    # then: mlflow ui --backend-store-uri sqlite:///runs/mlflow.db
"""

import contextlib
import math
import time
from pathlib import Path

import keras
import numpy as np

from .. import files
from ..config import setting_text
from ..distribution import is_writer
from ..errors import CnnlabError, TrainingInterrupted, first_line
from ..rundir import RunDir

LOCAL = "local"  # config.mlflow: the SQLite store in the runs folder
EXPERIMENT = "cnnlab"
RUN_FILE = "mlflow.json"  # in the run directory: {"tracking_uri", "run_id"}
ARTIFACTS = ("report.html", "best.keras", "config.json", "data.json", "history.csv", "metrics.json", "summary.txt")


def client_class():
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise CnnlabError("MLflow logging needs the mlflow package: pip install 'cnnlab[mlflow]'") from None
    return MlflowClient


def tracking_uri(setting, runs_folder) -> str:
    """`setting` (config.mlflow) as a tracking URI: LOCAL is the SQLite store in `runs_folder`."""
    if setting == LOCAL:
        return f"sqlite:///{(Path(runs_folder).resolve() / 'mlflow.db').as_posix()}"
    return setting


class MLflowLogger:
    """One MLflow run, logged through MlflowClient (no global active run, so a notebook's own MLflow use is left
    alone)."""

    def __init__(self, uri, run_dir, params):
        try:
            self._start(uri, run_dir, params)
        except CnnlabError:
            raise
        except Exception as e:  # MLflow's own errors for a URI it cannot use: an unknown scheme, a server not there
            raise CnnlabError(f"cannot log to MLflow at {uri} ({first_line(e)}); give mlflow= a tracking URI MLflow "
                              f"accepts (http://host:5000, sqlite:///path/mlflow.db) or 'local'") from None

    def _start(self, uri, run_dir, params):
        self.uri, self.run = uri, RunDir(run_dir)
        self.client = client_class()(tracking_uri=uri)
        recorded = self.run.read_json(self.run.path / RUN_FILE) if (self.run.path / RUN_FILE).is_file() else {}
        if recorded.get("tracking_uri") == uri:  # a resumed run: go on in its MLflow run
            self.run_id = recorded["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        self.run_id = self.client.create_run(self.experiment_id(), run_name=self.run.path.name,
                                             tags={"cnnlab.run_dir": str(self.run.path.resolve())}).info.run_id
        files.write_json(self.run.path / RUN_FILE, {"tracking_uri": uri, "run_id": self.run_id})
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(key, _param(value)) for key, value in params.items()])

    def experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        local = self.uri.startswith("sqlite:///")  # MLflow's own default: the files beside the database
        where = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri() if local else None
        return self.client.create_experiment(EXPERIMENT, artifact_location=where)

    def for_network(self, network=None) -> "MLflowEpochs":
        """The callback that logs each epoch (an ensemble's `network`, from 1: its metrics named network_K/...)."""
        return MLflowEpochs(self, "" if network is None else f"network_{network}/")

    def log_metrics(self, values: dict, step=0):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()
                   if isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
                   and math.isfinite(value)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_results(self, run_dir, metrics: dict):
        """The scores of metrics.json and the run directory's files: report, best model, record, figures."""
        run = RunDir(run_dir)  # the best model's validation scores are its epoch's: named best_val_* here
        self.log_metrics({("best_" if key.startswith("val_") else "") + key: value for key, value in metrics.items()
                          if key.startswith(("val_", "test_"))
                          or key in ("best_epoch", "epochs_run", "parameters", "train_seconds", "total_seconds")})
        for name in ARTIFACTS:
            if (run.path / name).is_file():
                self.client.log_artifact(self.run_id, str(run.path / name))
        if run.figures.is_dir():
            self.client.log_artifacts(self.run_id, str(run.figures), "figures")

    def end(self, status="FINISHED"):
        self.client.set_terminated(self.run_id, status)


def _param(value) -> str:
    return str(setting_text(value))


class MLflowEpochs(keras.callbacks.Callback):
    """Each epoch's logs and learning rate as MLflow metrics, step = the epoch (from 1, as history.csv counts)."""

    def __init__(self, logger: MLflowLogger, prefix=""):
        super().__init__()
        self.logger, self.prefix = logger, prefix

    def on_epoch_end(self, epoch, logs=None):
        values = {**(logs or {}), "learning_rate": float(np.asarray(self.model.optimizer.learning_rate))}
        self.logger.log_metrics({self.prefix + key: value for key, value in values.items()}, step=epoch + 1)


@contextlib.contextmanager
def mlflow_run(config, run_dir):
    """An MLflowLogger for the block (None when `config.mlflow` is None), ended FINISHED when the block completes,
    KILLED when it is interrupted, FAILED when it fails."""
    if config.mlflow is None or not is_writer():  # on several machines, process 0 logs the run once
        yield None
        return
    run = RunDir(run_dir)
    logger = MLflowLogger(tracking_uri(config.mlflow, run.path.parent), run.path, config.to_dict())
    try:
        yield logger
    except (TrainingInterrupted, KeyboardInterrupt):
        logger.end("KILLED")
        raise
    except BaseException:
        logger.end("FAILED")
        raise
    logger.end()

