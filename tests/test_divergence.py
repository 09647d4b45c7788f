"""Training that cannot go on: a NaN loss, an unwritable or full output folder, a disk that fills up mid-run.
Each stops with one clear line (exit 2 from the CLI) and never harms a model already saved."""

import errno
import hashlib
import shutil
from collections import namedtuple

import pytest

from cnnlab import RunDir, load_model, make_config, train_run
from cnnlab import files
from cnnlab.cli import main
from cnnlab.errors import CnnlabError, TrainingDiverged
from cnnlab.pipeline import load_data
from cnnlab.training import load_checkpoint, train

# Plain SGD with a learning rate of 10 and two wide dense layers overflows to NaN within the first epoch on digits.
DIVERGING = {"dataset": "digits", "optimizer": "sgd", "batch_size": 8, "dense_units": "1000,1000", "dropout": 0,
             "limit_train": 600}


def flags(settings):
    return [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("cnnlab: error: ")
    return err[0]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_nan_loss_stops_training_with_a_clear_message(tmp_path, capsys):
    code = main(["train", *flags(DIVERGING), "--learning-rate=10", "--epochs=3", "--out", str(tmp_path),
                 "--name", "nan"])
    assert code == 2
    assert one_error_line(capsys) == (
        "cnnlab: error: loss became nan in epoch 1; training stopped; no epoch had completed, so no model was saved; "
        "start a new run with a lower --learning-rate (this one used 10.0)")
    run = RunDir(tmp_path / "nan")
    assert not run.best_model.exists() and run.read_state() is None


def test_nan_loss_keeps_the_earlier_best_model_intact(tmp_path):
    config = make_config(**DIVERGING, learning_rate=0.01, epochs=1)
    run, *_ = train_run(config, out=tmp_path, name="run", verbose=0)
    before = sha256(run.best_model)
    model = load_checkpoint(run.path)
    model.optimizer.learning_rate.assign(10.0)  # as a notebook user raising it between epochs
    more = make_config(**DIVERGING, learning_rate=10, epochs=3)
    with pytest.raises(TrainingDiverged) as caught:
        train(model, load_data(more), more, run.path, resume=True, verbose=0)
    assert str(caught.value).startswith("loss became nan in epoch 2; training stopped; the best model (epoch 1) is "
                                        f"kept in {run.best_model}; ")
    assert sha256(run.best_model) == before
    assert load_model(run.best_model).count_params() > 0
    assert run.read_state()["epochs_completed"] == 1
    assert run.read_history()["epoch"] == [1]


def test_unwritable_output_folder_is_refused_before_training(tmp_path, capsys):
    # Tests run as root, where chmod does not stop writes: a folder under a regular file cannot exist at all.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["train", "--dataset=digits", "--out", str(blocker / "runs"), "--name", "x"]) == 2
    assert one_error_line(capsys) == (f"cnnlab: error: cannot write to {blocker / 'runs' / 'x'}: Not a directory; "
                                      f"choose another --out folder")
    assert main(["train", "--dataset=digits", "--out", "/proc/cnnlab-runs", "--name", "x"]) == 2
    assert one_error_line(capsys).startswith("cnnlab: error: cannot write to /proc/cnnlab-runs/x: ")


def test_full_output_folder_is_refused_before_training(tmp_path, capsys, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 10**6, 10**6))
    assert main(["train", "--dataset=digits", "--epochs=1", "--out", str(tmp_path), "--name", "full"]) == 2
    message = one_error_line(capsys)
    assert message.startswith(f"cnnlab: error: only 1.0 MB free in {tmp_path / 'full'}, ")
    assert message.endswith(" MB needed; free space or choose another --out folder")
    assert not RunDir(tmp_path / "full").holds_model()


def test_disk_filling_up_mid_training_keeps_earlier_epochs_and_resumes(tmp_path, monkeypatch):
    saves = []

    def save_then_fill_up(model, path):
        saves.append(path)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(model, path)

    real_save = files.save_model
    monkeypatch.setattr(files, "save_model", save_then_fill_up)
    config = make_config(dataset="digits", limit_train=400, epochs=3)
    with pytest.raises(CnnlabError) as caught:
        train_run(config, out=tmp_path, name="run", verbose=0)
    run = RunDir(tmp_path / "run")
    assert str(caught.value) == (f"could not save epoch 2 in {run.path}: No space left on device; the earlier epochs "
                                 f"are intact; fix that, then resume with: cnnlab.train_run(cnnlab.resume_config('{run.path}'), "
                                 f"resume='{run.path}')")
    assert run.read_state()["epochs_completed"] == 1
    assert load_model(run.best_model).count_params() > 0
    monkeypatch.undo()
    train_run(config, resume=run.path, verbose=0)
    assert run.read_history()["epoch"] == [1, 2, 3]
