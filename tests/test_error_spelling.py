"""Errors speak the caller's language: a Python caller is told the argument to change (`data_dir=`), the CLI the flag
(`--data-dir`). Core modules write the Python spelling; the CLI rewrites it through a table made from its parser."""

import ast
import re

import pytest

import cnnlab
from cnnlab.cli import flag_spelling, flag_table, main
from cnnlab.data import load_arrays
from cnnlab.errors import DataError, TrainingInterrupted

from conftest import REPO

CORE = [path for path in sorted((REPO / "src" / "cnnlab").rglob("*.py")) if path.name != "cli.py"]
FLAG = re.compile(r"(?<![\w-])--[a-z]")


def error_line(capsys, *argv):
    assert main([str(arg) for arg in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_named_folder_without_the_data(tmp_path, capsys):
    empty = tmp_path / "empty folder"
    empty.mkdir()
    with pytest.raises(DataError) as caught:
        load_arrays("mnist", data_dir=empty)
    assert str(caught.value).endswith(f"in data_dir={str(empty)!r}")
    assert error_line(capsys, "data", "mnist", "--data-dir", empty).endswith(f"in --data-dir '{empty}'")


def test_a_run_name_that_is_a_path(tmp_path, capsys):
    with pytest.raises(cnnlab.CnnlabError) as caught:
        cnnlab.train_run(cnnlab.make_config(dataset="digits"), out=tmp_path, name="a/b")
    assert str(caught.value) == "name= must be a folder name, to go inside out=, not 'a/b'; put a path in out="
    assert error_line(capsys, "train", "--dataset", "digits", "--out", tmp_path, "--name", "a/b") == \
        "cnnlab: error: --name must be a folder name, to go inside --out, not 'a/b'; put a path in --out"


def test_nothing_found_offline(tmp_path, monkeypatch, capsys):
    for name in ("KERAS_HOME", "CNNLAB_CACHE_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    with pytest.raises(DataError) as caught:
        load_arrays("kmnist", allow_download=False)
    assert str(caught.value).endswith("(looked in " + f"Keras cache {tmp_path / 'KERAS_HOME' / 'datasets' / 'kmnist'}; "
                                      f"cnnlab cache {tmp_path / 'CNNLAB_CACHE_DIR' / 'kmnist'}; downloads disabled); "
                                      f"pass data_dir=DIR with its files, or add allow_download=True")
    assert flag_spelling(str(caught.value)).endswith("; pass --data-dir DIR with its files, or add --download")


def test_the_resume_line(tmp_path):
    run = tmp_path / "my run"
    stopped = TrainingInterrupted(run, 2)
    assert str(stopped).endswith(f"resume with: cnnlab.train_run(cnnlab.resume_config({str(run)!r}), "
                                 f"resume={str(run)!r})")
    assert flag_spelling(str(stopped)).endswith(f"resume with: cnnlab train --resume '{run}'")
    stopped.function = "run"  # as pipeline.run sets it
    assert flag_spelling(str(stopped)).endswith(f"resume with: cnnlab run --resume '{run}'")


def test_the_table_comes_from_the_parser():
    table = flag_table()
    assert table["data_dir"] == "--data-dir" and table["max_upload_mb"] == "--max-upload-mb"
    assert table["batch_norm=True"] == "--batch-norm" and table["batch_norm=False"] == "--no-batch-norm"
    assert table["safe_mode=False"] == "--unsafe" and table["allow_download=True"] == "--download"
    assert flag_spelling("choose another port= or host=; or image_size='28x28' and batch_norm=False") == \
        "choose another --port or --host; or --image-size 28x28 and --no-batch-norm"
    # left alone: a path, a Keras layer's keyword, a setting the CLI has no flag for
    assert flag_spelling("runs/epochs=3: Layer(name='conv_1'); verbose=0") == \
        "runs/epochs=3: Layer(name='conv_1'); verbose=0"


def message_texts(path):
    """Every string in a module but its docstrings: the messages, f-strings' text parts included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("path", CORE, ids=lambda path: str(path.relative_to(REPO / "src" / "cnnlab")))
def test_core_modules_write_no_flag_spelling(path):
    """Only cli.py knows the flags: a core module's message names the Python argument (`data_dir=`)."""
    for line, text in message_texts(path):
        assert not FLAG.search(text), f"{path.name}:{line}: {text!r} spells a CLI flag; write the Python argument"
