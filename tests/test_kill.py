"""kill -9 at random moments: a real short training is killed; what it leaves loads, and --resume finishes it.

Five kills with a fixed seed: one during start-up (imports, data, model), one the moment an atomic write of a
checkpoint or best.keras is under way, three at random moments of training (an epoch, validation, a save).
benchmarks/kill_test.py runs the same cycle 20 times and reports the figure.
"""

import filecmp
import random

import pytest
from robustness_helpers import PHASES, calibrate, kill_and_recover

from cnnlab.errors import CnnlabError

KILLS = 5


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    return calibrate(tmp_path_factory.mktemp("calibration"))


@pytest.mark.parametrize("kill", range(KILLS))
def test_kill_minus_nine_never_loses_the_run(kill, windows, tmp_path):
    startup_s, training_s = windows
    # kill_and_recover asserts, after the kill and again after the recovery, everything the docstring promises
    print(kill_and_recover(tmp_path, f"kill-{kill}", random.Random(6000 + kill), startup_s, training_s,
                           phase=PHASES[kill] if kill < len(PHASES) else "training"))


class Killed(BaseException):
    """Stands in for SIGKILL at one exact point: nothing after it in the process runs (but `finally` blocks do)."""


def test_kill_between_the_last_commit_and_best_keras_is_completed_by_resume(tmp_path, monkeypatch):
    """The narrowest window: the last epoch is committed in state.json, its best.keras copy not yet made.
    --resume must publish that best model and evaluate, not answer 'already completed'."""
    from cnnlab import RunDir, files, make_config, train_run

    real_copy = files.copy_file

    def killed_while_publishing(source, path):
        if source.name == "epoch-0002.keras":
            raise Killed
        real_copy(source, path)

    monkeypatch.setattr(files, "copy_file", killed_while_publishing)
    config = make_config(dataset="digits", limit_train=400, epochs=2, patience=99, monitor="loss")
    with pytest.raises(Killed):
        train_run(config, out=tmp_path, name="run", verbose=0)
    run = RunDir(tmp_path / "run")
    state = run.read_state()
    assert state["epochs_completed"] == 2 and state["best_epoch"] == 2  # training loss falls in epoch 2
    assert not filecmp.cmp(run.best_model, run.checkpoints / "epoch-0002.keras", shallow=False)  # still epoch 1's
    monkeypatch.undo()
    _, _, _, metrics = train_run(config, resume=run.path, verbose=0)
    assert filecmp.cmp(run.best_model, run.checkpoints / "epoch-0002.keras", shallow=False)
    assert metrics["best_epoch"] == 2 and run.metrics.is_file()


def test_a_run_killed_while_scoring_is_finished_by_run_resume(tmp_path, monkeypatch):
    """Killed after training, before the test scores: `run --resume` scores it; `train --resume` has nothing left."""
    from cnnlab import RunDir, make_config, pipeline

    def killed_while_scoring(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(pipeline, "evaluate_model", killed_while_scoring)
    config = make_config(dataset="digits", limit_train=400, epochs=1)
    with pytest.raises(Killed):
        pipeline.run(config, out=tmp_path, name="run", verbose=0)
    run = RunDir(tmp_path / "run")
    assert "val_accuracy" in run.read_metrics() and "test_accuracy" not in run.read_metrics()
    monkeypatch.undo()
    with pytest.raises(CnnlabError, match="already completed 1 of 1 epochs"):
        pipeline.train_run(config, resume=run.path, verbose=0)
    pipeline.run(config, resume=run.path, verbose=0)
    assert "test_accuracy" in run.read_metrics() and (run.path / "report.html").is_file()
