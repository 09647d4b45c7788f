"""The study: Optuna trials over cnnlab's settings, each an ordinary run directory, in a database that several
processes (and machines) share.

TUNE_DIR/
  study.db           the Optuna study (SQLite), unless --storage names another database
  space.json         the search space it searches
  trial-0000/ ...    one run directory per trial (config.json, history.csv, best.keras, metrics.json), with
                     trial.json (number, state, parameters, seed) and output.txt (what the trial printed)
  best-config.json   the best trial's settings: cnnlab run --config TUNE_DIR/best-config.json
  tune.html          the trials, the optimisation history, parameter importances, parallel coordinates

The study is named after the folder and kept in the storage, with its settings and space: `cnnlab tune` again on
the same folder (or with --storage, on another machine, in a folder of the same name) joins or continues it until
it has N trials that completed or were pruned. Every trial trains with the same seed, so that trials differ by
their settings only and are scored on the same validation images.
"""

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import optuna
from optuna.trial import TrialState

from .. import files
from ..config import Config, known_image_size, make_config, setting_text
from ..data import short_name
from ..errors import CnnlabError, ConfigError, TrainingDiverged, TrainingInterrupted, first_line
from ..pipeline import absolute_paths, load_data, train_run
from . import page
from . import space as spaces
from .pruning import PruningCallback

OBJECTIVE = "val_accuracy"  # of each trial's best model, on the validation split
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)  # toward N
HEARTBEAT_SECONDS, GRACE_SECONDS = 10, 30  # a trial whose process died is failed after GRACE_SECONDS and redone
PRUNERS = ("median", "hyperband", "none")
ATTRIBUTE = "cnnlab"  # the study's user attribute holding its settings, space and pruner
TRIAL_FILE = "trial.json"


class TuneInterrupted(TrainingInterrupted):
    """Ctrl-C during a study: the trial in progress is not counted; the study continues where it stopped."""

    def __init__(self, out, trials):
        super().__init__(out, 0)
        self.out, self.trials = out, trials

    def __str__(self):
        return (f"tuning interrupted; the finished trials are kept in {self.out}; continue the study by running tune "
                f"again with out={str(self.out)!r} and trials={self.trials}")


@dataclass
class TuneResult:
    out: Path
    study: "optuna.Study"
    best_value: float
    best_params: dict
    best_config: Path  # cnnlab run --config takes it
    page: Path
    counts: dict  # trial state name -> how many


def tune(trials, out=None, workers=1, storage=None, space=None, pruner=None, startup_trials=5, config_file=None,
         **settings) -> TuneResult:
    """Search cnnlab's settings with Optuna: `trials` runs in `out`, the best one's settings written as a config file.

        result = cnnlab.tune(trials=8, dataset="digits", epochs=2, out="runs/tune-digits")
        result.best_config        # cnnlab run --config runs/tune-digits/best-config.json

    `settings` (and `config_file`) fix what every trial shares (dataset, epochs, limit_train, seed, ...); `space`
    is a dict or a TOML/JSON file of what is searched (see cnnlab.tune.space; default: `default_space`). `storage`
    is a database URL Optuna accepts (default: TUNE_DIR/study.db); `workers` processes on this machine share it.
    `pruner`: median (default), hyperband or none, or an optuna pruner; the median pruner waits for
    `startup_trials` trials.
    """
    if not (isinstance(trials, int) and trials >= 1):
        raise ConfigError(f"trials= must be a whole number of at least 1, not {trials!r}")
    if not 1 <= workers <= 64:
        raise ConfigError(f"workers= must be in 1..64 processes, not {workers}")
    if isinstance(pruner, str) and pruner not in PRUNERS:
        raise ConfigError(f"pruner= must be one of {', '.join(PRUNERS)}, not {pruner!r}")
    given = {key: value for key, value in settings.items() if value is not None}
    base = absolute_paths(make_config(file=config_file, **given))
    where = f"space={str(space)!r}" if isinstance(space, (str, Path)) else "the search space"
    values = spaces.read_space(space) if isinstance(space, (str, Path)) else space
    if values is not None:  # before anything is written
        spaces.check_space(values, base, known_image_size(base), where)
    out = Path(out or Path("runs") / f"tune-{short_name(base.dataset)}")
    files.check_writable(out)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    study = _open_study(out, url)
    stored = study.user_attrs.get(ATTRIBUTE)
    if stored:
        base, searched = _continued(stored, base, given, values, where, out)
    else:
        image_size = known_image_size(base) or load_data(base).image_shape[:2]
        searched = spaces.check_space(values or spaces.default_space(image_size), base, image_size, where)
        clash = sorted(set(given) & {"conv_filters" if k in spaces.DERIVED else k for k in spaces.searched(searched)})
        if clash:
            raise ConfigError(f"{', '.join(clash)} {'is' if len(clash) == 1 else 'are'} both given and searched; "
                              f"drop the flag, or fix it in the space (name = value)")
        study.set_user_attr(ATTRIBUTE, {"settings": base.to_dict(), "space": searched,
                                        "pruner": pruner if isinstance(pruner, str) else "median",
                                        "startup_trials": startup_trials})
    files.write_json(out / "space.json", spaces.as_file(searched))
    try:
        if workers == 1:
            run_trials(study, out, trials, pruner=pruner, base=base)
        else:
            _run_workers(out, url, trials, workers, base.data_dir)
    except (KeyboardInterrupt, TrainingInterrupted):
        raise TuneInterrupted(out, trials) from None
    return finish(study, out, base)


def _open_study(out, url) -> "optuna.Study":
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None  # workers wait for the lock
    try:
        with _stable_since_2_9():
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                                                 grace_period=GRACE_SECONDS)
    except (ImportError, ValueError, optuna.exceptions.StorageInternalError) as e:
        raise CnnlabError(f"storage={url!r}: cannot open it ({first_line(e)}); give a database URL Optuna "
                          f"accepts, such as sqlite:///study.db or postgresql://user:password@host/database") from None
    return optuna.create_study(storage=storage, study_name=Path(out).resolve().name, direction="maximize",
                               load_if_exists=True)


@contextlib.contextmanager
def _stable_since_2_9():
    """Heartbeats are still marked experimental, unchanged since Optuna 2.9: no warning on every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _continued(stored, base: Config, given, values, where, out):
    """The settings and space of a study that exists: its own, and a one-line error where the flags or --space
    ask for others (the data folder may differ: another machine has its own)."""
    recorded = make_config(**stored["settings"])
    wanted = absolute_paths(make_config(**{**stored["settings"], **given}))
    differ = [k for k, v in wanted.to_dict().items() if k != "data_dir" and v != recorded.to_dict()[k]]
    if differ:
        was = ", ".join(f"{k}={setting_text(recorded.to_dict()[k])!r}" for k in differ)
        raise ConfigError(f"the study in {out} searches with {was}; continue it without those flags, or give "
                          f"another out= folder")
    if values is not None and spaces.check_space(values, recorded, where=where) != stored["space"]:
        raise ConfigError(f"the study in {out} searches another space ({out / 'space.json'}); continue it without "
                          f"space=, or give another out= folder")
    return dataclasses.replace(recorded, data_dir=wanted.data_dir), stored["space"]


def make_pruner(name, startup_trials, epochs):
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)


def run_worker(out, url, trials, worker, data_dir=None):
    """A worker process's part (python -m cnnlab.tune): the study's trials from its storage, with this machine's
    `data_dir` (the stored one is the first machine's)."""
    study = _open_study(out, url)
    base = make_config(**{**study.user_attrs[ATTRIBUTE]["settings"], "data_dir": data_dir}) if data_dir else None
    run_trials(study, out, trials, worker, base=base)


def run_trials(study, out, trials, worker=0, pruner=None, base=None):
    """This process's share of the study: trials until it has `trials` that completed, were pruned or are running
    elsewhere. A trial whose process died (no heartbeat) is failed first, so that it is redone."""
    stored = study.user_attrs[ATTRIBUTE]
    base = base or make_config(**stored["settings"])
    study.pruner = pruner if isinstance(pruner, optuna.pruners.BasePruner) else \
        make_pruner(pruner or stored["pruner"], stored["startup_trials"], base.epochs)
    # a random stream of its own: another worker's, or a resumed study's, does not repeat this one's trials
    study.sampler = optuna.samplers.TPESampler(seed=base.seed + 1000 * worker + len(study.trials))
    objective = Objective(out, base, stored["space"], worker)
    while True:
        with _stable_since_2_9():
            optuna.storages.fail_stale_trials(study)
        if len(study.get_trials(deepcopy=False, states=COUNTED)) >= trials:
            return
        study.optimize(objective, n_trials=1, gc_after_trial=True)


class Objective:
    """One trial: settings from the sampler, a run directory trained with the pruning callback, its validation
    accuracy; a pruned (or diverged) trial is marked so in its run directory and raises optuna.TrialPruned."""

    def __init__(self, out, base: Config, space: dict, worker=0):
        self.out, self.base, self.space, self.worker = Path(out), base, space, worker

    def __call__(self, trial):
        config = spaces.suggest(trial, self.space, self.base)
        keras.utils.clear_session()  # the last trial's models and compiled functions go
        run = self.out / f"trial-{trial.number:04d}"
        for key, value in (("run_dir", str(run.resolve())), ("host", socket.gethostname()), ("seed", config.seed),
                           ("worker", self.worker)):
            trial.set_user_attr(key, value)
        pruning = PruningCallback(trial, OBJECTIVE)
        files.check_writable(run)
        self._mark(run, trial, "RUNNING")
        try:
            with open(run / "output.txt", "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
                _, _, _, metrics = train_run(config, self.out, run.name, verbose=0, callbacks=[pruning])
        except TrainingDiverged as e:  # too high a learning rate: a bad trial, as a pruned one is
            trial.set_user_attr("diverged", str(e))
            self._mark(run, trial, "PRUNED", reason=f"diverged: {e}")
            raise optuna.TrialPruned(f"diverged: {e}") from None
        if pruning.pruned_after:
            reason = (f"pruned by Optuna's {type(trial.study.pruner).__name__} after epoch {pruning.pruned_after} "
                      f"({OBJECTIVE} {pruning.last_value:.4f})")
            files.write_json(run / "metrics.json", {**metrics, "stop_reason": reason,
                                                     "pruned_after_epoch": pruning.pruned_after})
            self._mark(run, trial, "PRUNED", reason=reason, value=metrics[OBJECTIVE])
            raise optuna.TrialPruned(reason)
        self._mark(run, trial, "COMPLETE", value=metrics[OBJECTIVE])
        return metrics[OBJECTIVE]

    def _mark(self, run, trial, state, reason=None, value=None):
        files.write_json(run / TRIAL_FILE, {
            "study": trial.study.study_name, "trial": trial.number, "state": state, "params": trial.params,
            "seed": self.base.seed, OBJECTIVE: value, "reason": reason})


def worker_environment(threads):
    """The environment of a worker process: its share of the cores, so that W workers do not oversubscribe them."""
    return {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1",
            "OMP_NUM_THREADS": str(threads)}


def _run_workers(out, url, trials, workers, data_dir=None):
    """`workers` processes on this machine, each running trials of the study until it has `trials`, each reading
    the named dataset from this machine's `data_dir`."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    print(f"Starting {workers} workers ({threads} thread{'s' * (threads != 1)} each) on {url}", flush=True)
    command = [sys.executable, "-m", "cnnlab.tune", str(out), url, str(trials)]
    processes = [subprocess.Popen([*command, str(k), data_dir or ""], env=worker_environment(threads))
                 for k in range(workers)]
    try:
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:  # the workers had the Ctrl-C too: let them fail their trials and stop
        for process in processes:
            process.wait()
        raise
    failed = [(k, code) for k, code in enumerate(codes) if code]
    if failed:
        raise CnnlabError(f"worker {failed[0][0]} stopped with exit status {failed[0][1]} (its error is above); the "
                          f"finished trials are kept: continue by running tune again with out={str(out)!r} and "
                          f"trials={trials}")


def finish(study, out, base: Config) -> TuneResult:
    """Print the best trial, write its settings as a config file and the study's page."""
    counts = {state.name: len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    counts = {name: n for name, n in counts.items() if n}
    summary = ", ".join(f"{n} {name.lower()}" for name, n in counts.items())
    print(f"Study {study.study_name}: {summary}")
    written = page.write_page(study, out / "tune.html", OBJECTIVE)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise CnnlabError(f"no trial of the study in {out} completed ({summary}); page: {written}; run more trials, "
                          f"or pruner='none'")
    best = study.best_trial
    stored = study.user_attrs[ATTRIBUTE]
    params = {**spaces.fixed(stored["space"]), **best.params}
    config = make_config(**{**base.to_dict(), **spaces.settings(params, base)})
    best_config = out / "best-config.json"
    files.write_json(best_config, config.to_dict())
    print(f"Best: trial {best.number}, {OBJECTIVE} {best.value:.2%}: " +
          ", ".join(f"{k}={page.shown(v)}" for k, v in best.params.items()))
    print(f"Best settings: {best_config} (a config file, for run)")
    print(f"Page: {written}")
    return TuneResult(out, study, best.value, best.params, best_config, written, counts)
