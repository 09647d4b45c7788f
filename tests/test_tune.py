"""cnnlab tune: an Optuna study whose trials are run directories, pruned after an epoch, continued, shared by
workers; its best settings train again with cnnlab run --config."""

import json
import re
import subprocess
import sys

import optuna  # the tune extra is in dev
import pytest

from cnnlab import tune
from cnnlab.cli import main
from cnnlab.compare import compare_runs
from cnnlab.errors import TrainingInterrupted

SETTINGS = {"dataset": "digits", "epochs": 2, "limit_train": 500, "batch_size": 16, "conv_filters": [8, 16],
            "dense_units": [32]}
SPACE = {"learning_rate": {"low": 1e-7, "high": 1e-2, "log": True}, "dropout": [0.0, 0.2]}
GOOD, BAD = {"learning_rate": 5e-3, "dropout": 0.0}, {"learning_rate": 1e-7, "dropout": 0.0}


def storage(folder):
    return f"sqlite:///{folder / 'study.db'}"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three trials on digits: a good one, then a learning rate that cannot learn in two epochs (the median pruner,
    after one trial, stops it after its first epoch), then one the sampler picks. Optuna's own enqueue_trial orders
    the first two, in the study cnnlab then continues."""
    out = tmp_path_factory.mktemp("tune") / "digits-study"
    out.mkdir()
    seeded = optuna.create_study(storage=storage(out), study_name=out.name, direction="maximize")
    seeded.enqueue_trial(GOOD)
    seeded.enqueue_trial(BAD)
    result = tune(trials=3, out=out, space=SPACE, startup_trials=1, **SETTINGS)
    return out, result


def test_trials_are_run_directories_that_compare_reads(study):
    out, result = study
    trials = sorted(out.glob("trial-*"))
    assert [t.name for t in trials] == ["trial-0000", "trial-0001", "trial-0002"]
    comparison = compare_runs(trials)
    rows = {row["label"]: row["cells"] for row in comparison["rows"]}
    assert rows["learning_rate"][:2] == ["0.005", "1e-07"]
    assert "pruned" in rows["why training stopped"][1] and "pruned" not in rows["why training stopped"][0]
    marks = [json.loads((t / "trial.json").read_text()) for t in trials]
    assert [m["state"] for m in marks[:2]] == ["COMPLETE", "PRUNED"] and {m["seed"] for m in marks} == {42}
    scores = {m["trial"]: m["val_accuracy"] for m in marks if m["state"] == "COMPLETE"}
    assert result.best_value == max(scores.values()) and result.study.best_trial.number in scores


def test_a_bad_trial_is_pruned_after_its_first_epoch(study):
    out, _ = study
    trials = optuna.load_study(study_name=out.name, storage=storage(out)).trials
    assert [t.state.name for t in trials[:2]] == ["COMPLETE", "PRUNED"]
    assert list(trials[1].intermediate_values) == [1] and list(trials[0].intermediate_values) == [1, 2]
    metrics = json.loads((out / "trial-0001" / "metrics.json").read_text())
    assert metrics["pruned_after_epoch"] == 1 and metrics["epochs_run"] == 1
    assert trials[1].user_attrs["seed"] == 42 and trials[1].user_attrs["run_dir"] == str(out / "trial-0001")


def test_the_page_shows_optunas_figures_offline(study):
    out, result = study
    html = (out / "tune.html").read_text()
    assert result.page == out / "tune.html"
    assert html.count('class="plotly-graph-div"') == 4 and "Parameter importances" in html
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", html, re.IGNORECASE)  # plotly.js is inline
    assert len(re.findall(r"<tr[ >]", html)) == 1 + 3 and "trial-0001" in html


def test_the_best_settings_train_with_cnnlab_run_config(study, tmp_path):
    _, result = study
    best = json.loads(result.best_config.read_text())
    assert best["learning_rate"] == result.best_params["learning_rate"] and best["conv_filters"] == [8, 16]
    assert main(["run", "--config", str(result.best_config), "--epochs", "1", "--out", str(tmp_path), "--name",
                 "best"]) == 0
    ran = json.loads((tmp_path / "best" / "config.json").read_text())
    assert {k: ran[k] for k in ("learning_rate", "dropout", "batch_size")} == \
        {k: best[k] for k in ("learning_rate", "dropout", "batch_size")}
    assert "test_accuracy" in json.loads((tmp_path / "best" / "metrics.json").read_text())


def test_an_interrupted_study_continues_to_n_trials_in_all(study, capsys, monkeypatch):
    out, _ = study
    assert main(["tune", "--out", str(out), "--trials", "3", "--dataset", "digits"]) == 0  # it has 3: nothing to do
    assert len(optuna.load_study(study_name=out.name, storage=storage(out)).trials) == 3
    assert main(["tune", "--out", str(out), "--trials", "3", "--epochs", "3"]) == 2
    assert "searches with --epochs 2" in capsys.readouterr().err

    def ctrl_c(config, out, name, **kwargs):  # what training raises on Ctrl-C
        raise TrainingInterrupted(out / name, 0)

    monkeypatch.setattr("cnnlab.tune.study.train_run", ctrl_c)
    assert main(["tune", "--out", str(out), "--trials", "4"]) == 130
    assert f"continue the study by running tune again with --out {out} and --trials 4" in capsys.readouterr().err
    monkeypatch.undo()
    result = tune(trials=4, out=out)  # its own settings and space, from the storage
    trials = optuna.load_study(study_name=out.name, storage=storage(out)).trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4] and trials[3].state.name == "FAIL"  # not counted: redone
    assert trials[4].state.name in ("COMPLETE", "PRUNED") and (out / "trial-0004" / "metrics.json").is_file()
    assert result.counts["COMPLETE"] + result.counts["PRUNED"] == 4


@pytest.mark.parametrize("space, message", [
    ('learning_rat = {low = 1e-4, high = 1e-2}', "unknown setting learning_rat (did you mean learning_rate?)"),
    ('dropout = {low = 0.5, high = 0.1}', "dropout's low must be below its high"),
    ('dropout = {low = 0.0, high = 1.5}', "dropout = 1.5: dropout must be in [0, 1)"),
    ('lr_schedule = {low = 1, high = 2}', "lr_schedule is not a number"),
    ('batch_size = {low = 16.5, high = 64}', "batch_size is a whole number"),
    ('learning_rate = {low = 0.0, high = 0.1, log = true}', "log = true needs low above 0"),
    ('conv_blocks = [2, 4]\nkernel_size = [3, 7]', "the largest network it allows (conv_blocks = 4, kernel_size = 7)"),
])
def test_a_bad_space_is_a_one_line_error(tmp_path, capsys, space, message):
    (tmp_path / "space.toml").write_text(space)
    code = main(["tune", "--trials", "2", "--dataset", "mnist", "--space", str(tmp_path / "space.toml"), "--out",
                 str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "study").exists()


def test_without_the_extra_the_error_names_it():
    script = "import sys; sys.modules['optuna'] = None\nfrom cnnlab.cli import main; sys.exit(main(['tune', '--trials', '1']))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "pip install 'cnnlab[tune]'" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path):
    out = tmp_path / "shared"
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}}))
    done = subprocess.run([sys.executable, "-m", "cnnlab", "tune", "--trials", "4", "--workers", "2", "--out", str(out),
                           "--space", str(space), "--dataset", "digits", "--epochs", "1", "--limit-train", "200",
                           "--conv-filters", "8,16", "--dense-units", "16"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = optuna.load_study(study_name=out.name, storage=storage(out)).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}  # both processes ran trials
    assert all((out / f"trial-{n:04d}" / "metrics.json").is_file() for n in range(4))
    assert "Best settings:" in done.stdout
