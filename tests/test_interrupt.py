"""Ctrl-C and --resume: a real training stopped by SIGINT keeps what it finished, says how to resume, and the
resumed run reads as one run that matches the uninterrupted run with the same seed.

Resume tolerance: batches are shuffled by (seed, epoch) and the dropout random state is checkpointed, so on one
machine a resumed run repeats the uninterrupted one to the last bit; the tests allow 1e-6 for float noise.
"""

import signal

import numpy as np
import pytest
from robustness_helpers import Training, history_epochs, run_cnnlab, temporaries

from cnnlab import RunDir, load_model, make_config, resume_config, train_run

EPOCHS, PATIENCE = 8, 2
SETTINGS = {"dataset": "digits", "epochs": EPOCHS, "patience": PATIENCE}
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run, trained in this process: what every resumed run must match."""
    run, _, _, metrics = train_run(make_config(**SETTINGS), out=tmp_path_factory.mktemp("straight"), name="run",
                                   verbose=0)
    return run, metrics


def assert_same_run(run: RunDir, reference: RunDir):
    history, expected = run.read_history(), reference.read_history()
    assert history["epoch"] == expected["epoch"]  # the same epoch count, early stopping included
    for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(history[column], expected[column], atol=TOLERANCE, err_msg=column)
    for got, want in zip(load_model(run.best_model).get_weights(), load_model(reference.best_model).get_weights()):
        np.testing.assert_allclose(got, want, atol=TOLERANCE)


def test_resumed_run_matches_the_uninterrupted_run(straight, tmp_path):
    reference, reference_metrics = straight
    k = 5
    train_run(make_config(**{**SETTINGS, "epochs": k}), out=tmp_path, name="split", verbose=0)
    assert history_epochs(tmp_path / "split") == list(range(1, k + 1))
    split = tmp_path / "split"
    run, _, _, metrics = train_run(resume_config(split, epochs=EPOCHS), resume=split, verbose=0)
    assert_same_run(run, reference)
    assert run.summary.read_text() == reference.summary.read_text()  # not the checkpoint's, with its optimizer's
    assert metrics["epochs_run"] == reference_metrics["epochs_run"]
    assert metrics["val_loss"] == pytest.approx(reference_metrics["val_loss"], abs=TOLERANCE)


def test_ctrl_c_keeps_completed_epochs_and_resume_finishes_the_run(straight, tmp_path):
    reference, _ = straight
    run = RunDir(tmp_path / "run")
    training = Training("train", *[f"--{k}={v}" for k, v in SETTINGS.items()], "--out", tmp_path, "--name", "run")
    assert training.wait_for("Epoch 3/") is not None, training.stderr[-2000:]
    training.process.send_signal(signal.SIGINT)
    assert training.finish() == 130

    *notice, message = training.error_lines()
    assert notice == ["Ctrl-C: stopping after this batch (press again to stop now)..."]
    completed = run.read_state()["epochs_completed"]
    assert completed in (2, 3)  # 3 only if epoch 3's last batch ran before the signal was handled
    assert message == (f"cnnlab: training interrupted; epochs 1-{completed} and the best model are kept in "
                       f"{run.path}; resume with: cnnlab train --resume {run.path}")
    assert "Traceback" not in training.stderr
    assert history_epochs(run.path) == list(range(1, completed + 1))
    assert load_model(run.best_model).count_params() > 0
    assert not temporaries(run.path)

    resumed = Training("train", "--resume", run.path)
    assert resumed.finish() == 0, resumed.stderr[-2000:]
    assert any(line.startswith(f"Resuming {run.path} after epoch {completed}") for _, line in resumed.lines)
    assert_same_run(run, reference)
    assert sorted(p.name for p in run.checkpoints.iterdir()) == [f"epoch-{len(history_epochs(run.path)):04d}.keras",
                                                                 "state.json"]


def test_a_run_directory_in_use_is_refused_to_a_second_process(tmp_path):
    run = RunDir(tmp_path / "run")
    training = Training("train", "--dataset=digits", "--epochs=300", "--patience=300", "--out", tmp_path, "--name", "run")
    assert training.wait_for("Epoch 2/") is not None, training.stderr[-2000:]
    code, second = run_cnnlab("train", "--resume", run.path, timeout=120)
    assert training.process.poll() is None, "the first training ended before the second process tried"
    assert code == 2 and second.error_lines() == [
        f"cnnlab: error: {run.path} is in use by another cnnlab process; wait for it to finish, or stop it (Ctrl-C) "
        f"and resume with: cnnlab train --resume {run.path}"]
    training.process.send_signal(signal.SIGINT)
    assert training.finish() == 130
    completed = run.read_state()["epochs_completed"]
    history = history_epochs(run.path)
    assert history == list(range(1, completed + 1))  # the refused process wrote nothing

    code, resumed = run_cnnlab("train", "--resume", run.path, "--epochs", completed + 1)  # the lock went with the process
    assert code == 0, resumed.stderr[-2000:]
    assert history_epochs(run.path) == list(range(1, completed + 2))


def test_the_run_directory_stays_locked_while_run_scores_it(tmp_path, monkeypatch):
    """A second process could otherwise resume the run while `run` writes its test scores, figures and report."""
    from cnnlab import files, pipeline
    from cnnlab.errors import CnnlabError

    scored = []
    real_evaluate = pipeline.evaluate_model

    def evaluate_while_a_second_process_tries(model, data, out_dir, *args):
        with pytest.raises(CnnlabError, match="is in use by another cnnlab process"), files.exclusive(out_dir.parent):
            pass
        scored.append(out_dir)
        return real_evaluate(model, data, out_dir, *args)

    monkeypatch.setattr(pipeline, "evaluate_model", evaluate_while_a_second_process_tries)
    pipeline.run(make_config(dataset="digits", epochs=1, limit_train=200), out=tmp_path, name="run", verbose=0)
    assert scored == [tmp_path / "run" / "figures"]
