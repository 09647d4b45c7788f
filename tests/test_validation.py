"""Bad settings, through the real CLI: exit status 2 and one line that names the field and what is allowed,
before any data is read or any model built. No traceback."""

import json
import shutil

import pytest

from cnnlab.cli import main
from cnnlab.pipeline import resume_config
from cnnlab.config import FIELDS


def error_of(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("cnnlab: error: ")
    return err[0].removeprefix("cnnlab: error: ")


@pytest.mark.parametrize("flags, message", [
    (["--conv-filters", "32"], "conv_filters needs at least 2 conv blocks, got 1"),
    (["--dense-units="], "dense_units needs at least 1 dense layer, got none"),
    (["--dropout", "1"], "dropout must be in [0, 1), not 1.0"),
    (["--dropout", "-0.1"], "dropout must be in [0, 1), not -0.1"),
    (["--kernel-size", "30"], "kernel_size 30 is larger than the 28x28 feature map of conv block 1 (images of 28x28); "
                              "use a kernel_size of at most 28"),
    (["--kernel-size", "9", "--conv-filters", "8,8,8"],
     "kernel_size 9 is larger than the 7x7 feature map of conv block 3 (images of 28x28); "
     "use a smaller kernel_size or fewer conv blocks (at most 2)"),
    (["--conv-filters", "8,8,8,8,8"], "kernel_size 3 is larger than the 1x1 feature map of conv block 5 (images of 28x28); "
                                      "use a smaller kernel_size or fewer conv blocks (at most 4)"),
    (["--kernel-size", "0"], "kernel_size must be at least 1, not 0"),
    (["--epochs", "0"], "epochs must be positive, not 0"),
    (["--epochs", "-3"], "epochs must be positive, not -3"),
    (["--batch-size", "0"], "batch_size must be positive, not 0"),
    (["--batch-size", "-32"], "batch_size must be positive, not -32"),
    (["--conv-filters", "32,x"], "conv_filters must be a whole number, not 'x'"),
    (["--learning-rate", "0"], "learning_rate must be in (0, 10], not 0.0"),
    (["--optimizer", "adagrad"], "optimizer must be one of adam, sgd, rmsprop, adamw, not 'adagrad'"),
    (["--validation-split", "1"], "validation_split must be in (0, 1), not 1.0"),
])
def test_bad_flag_names_field_and_range(capsys, flags, message):
    assert error_of(capsys, "train", "--dataset", "digits", *flags) == message


def test_bad_flags_are_refused_by_run_too(capsys):
    assert error_of(capsys, "run", "--dataset", "digits", "--epochs", "0") == "epochs must be positive, not 0"


def test_a_split_too_small_for_every_class_is_refused(capsys, tmp_path):
    assert error_of(capsys, "train", "--dataset", "digits", "--limit-train", "20", "--out", str(tmp_path)) == \
        "a validation split of 0.2 leaves 4 of 20 training images for validation and 16 for training; each side " \
        "needs at least one image per class (10): change --validation-split or --limit-train"
    assert error_of(capsys, "train", "--dataset", "digits", "--validation-split", "0.995", "--out", str(tmp_path)).startswith(
        "a validation split of 0.995 leaves ")


@pytest.mark.parametrize("megabytes", ["0", "-1", "nan", "inf"])
def test_serve_refuses_an_upload_limit_that_is_not_a_positive_number(capsys, tmp_path, megabytes):
    assert error_of(capsys, "serve", str(tmp_path / "model.keras"), "--max-upload-mb", megabytes) == \
        f"--max-upload-mb must be a number of megabytes above 0, not {float(megabytes)}"


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".."])
def test_a_run_name_is_a_folder_name_inside_out(capsys, tmp_path, name):
    assert error_of(capsys, "train", "--dataset", "digits", "--out", str(tmp_path / "runs"), "--name", name) == \
        f"--name must be a folder name, to go inside --out, not {name!r}; put a path in --out"
    assert not any(tmp_path.iterdir())


def test_unparsable_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--epochs", "ten"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "cnnlab train: error: argument --epochs: invalid int value: 'ten'; see cnnlab train --help"]


@pytest.mark.parametrize("name, text, message", [
    ("unknown.toml", 'colour = "red"\nepochs = 2\n',
     f"unknown setting(s) colour (did you mean color_mode?); known: {', '.join(FIELDS)}"),
    ("typo.json", json.dumps({"epoch": 3, "droput": 0.1}),
     f"unknown setting(s) droput (did you mean dropout?), epoch (did you mean epochs?); known: {', '.join(FIELDS)}"),
    ("sections.toml", "[model]\nconv_filters = [16, 32]\n",
     f"unknown setting(s) model; settings are top-level keys, not [sections]; known: {', '.join(FIELDS)}"),
    ("hyphens.toml", "conv-filters = [8, 8]\nepochs = 0\n", "epochs must be positive, not 0"),  # conv-filters is known
    ("range.toml", "dense_units = []\n", "dense_units needs at least 1 dense layer, got none"),
    ("kind.toml", 'dropout = "high"\n', "dropout must be a number, not 'high'"),
    ("whole.json", json.dumps({"batch_size": 2.5}), "batch_size must be a whole number, not 2.5"),
    ("list.json", "[1, 2]", "config file {dir}/list.json must hold a table of settings"),
])
def test_bad_config_file_names_field(capsys, tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    assert error_of(capsys, "train", "--config", str(tmp_path / name)) == message.format(dir=tmp_path)


def test_unreadable_config_files(capsys, tmp_path):
    (tmp_path / "broken.toml").write_text("epochs = = 3\n")
    assert error_of(capsys, "train", "--config", str(tmp_path / "broken.toml")).startswith(
        f"config file {tmp_path / 'broken.toml'} is not valid TOML: ")
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00epochs")
    assert error_of(capsys, "train", "--config", str(tmp_path / "binary.toml")) == \
        f"config file {tmp_path / 'binary.toml'} is not UTF-8 text; is it the right file?"
    assert error_of(capsys, "train", "--config", str(tmp_path / "missing.toml")) == \
        f"cannot read config file {tmp_path / 'missing.toml'}: No such file or directory"


def fake_run(folder, epochs_completed, stopped_early=False, epochs=3, lr_schedule="constant"):
    """A finished run directory's config, metrics and committed state, as a run that got that far leaves them."""
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"dataset": "digits", "epochs": epochs, "lr_schedule": lr_schedule}))
    (folder / "metrics.json").write_text(json.dumps({"epochs_run": epochs_completed}))
    (folder / "checkpoint" / "state.json").write_text(json.dumps(
        {"epochs_completed": epochs_completed, "stopped_early": stopped_early, "checkpoint": "epoch-0001.keras"}))
    return folder


def complete(capsys, *argv):
    """What a resume of a complete run says: one line on stdout, exit 0 (a retry is not a failure)."""
    assert main(list(argv)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return out[0].removeprefix("cnnlab: ")


def test_resume_refusals(capsys, tmp_path):
    done = fake_run(tmp_path / "done", 3)
    assert complete(capsys, "train", "--resume", str(done)) == \
        f"{done} already completed 3 of 3 epochs; raise --epochs to train on"
    pruned = fake_run(tmp_path / "pruned", 3)  # its checkpoint/ deleted to save space: a resume would start afresh
    shutil.rmtree(pruned / "checkpoint")
    (pruned / "best.keras").write_bytes(b"the trained model")
    assert error_of(capsys, "run", "--resume", str(pruned)) == f"{pruned} holds a trained model but no checkpoint/ to " \
        "continue from; its best.keras is kept as it is: start a new run to train again"
    assert (pruned / "best.keras").read_bytes() == b"the trained model"
    stopped = fake_run(tmp_path / "stopped", 2, stopped_early=True)
    assert complete(capsys, "train", "--resume", str(stopped), "--epochs", "9") == \
        f"{stopped} already stopped early after epoch 2 (val_loss stopped improving); there is nothing to resume"
    assert error_of(capsys, "train", "--resume", str(done), "--dropout", "0.1", "--seed", "1") == \
        "--resume continues a run with its own settings; only --epochs, --data-dir, --devices and the tracking " \
        "flags may change, not --dropout, --seed"
    assert error_of(capsys, "train", "--resume", str(done), "--name", "other", "--out", str(tmp_path / "elsewhere")) == \
        f"--resume continues {done} in place, with its own settings; drop --out, --name"
    scheduled = fake_run(tmp_path / "scheduled", 2, epochs=2, lr_schedule="one_cycle")
    assert complete(capsys, "train", "--resume", str(scheduled)) == f"{scheduled} already completed 2 of 2 epochs; " \
        "its one_cycle learning-rate schedule has ended; start a new run to train longer"
    assert error_of(capsys, "train", "--resume", str(scheduled), "--epochs", "6") == \
        f"{scheduled} has a one_cycle learning-rate schedule sized for its 2 epochs, so it cannot resume for 6; " \
        "resume it without --epochs, or start a new run with --epochs 6"
    unstarted = tmp_path / "unstarted"  # killed before its first epoch: a resume starts afresh, with any epochs
    unstarted.mkdir()
    (unstarted / "config.json").write_text(json.dumps({"dataset": "digits", "epochs": 2, "lr_schedule": "one_cycle"}))
    assert resume_config(unstarted, epochs=6).epochs == 6
    assert error_of(capsys, "train", "--resume", str(tmp_path / "nowhere")) == \
        f"{tmp_path / 'nowhere'} is not a cnnlab run directory (it has no config.json); check the path"
    assert error_of(capsys, "train", "--dataset", "digits", "--out", str(tmp_path), "--name", "done") == \
        f"{done} already holds a trained model; choose another --name, or --resume {done}"
