"""The Python API a notebook uses: `import cnnlab`, then its names, in any order."""

import subprocess
import sys

STEP_BY_STEP = """
import importlib, pkgutil, sys
import cnnlab

assert set(cnnlab.__all__) <= set(dir(cnnlab)), "tab completion in a notebook lists the API"
config = cnnlab.make_config(dataset="digits", epochs=1, limit_train=300)
model = cnnlab.build_model(config)                 # imports cnnlab.model, which imports more of the package
data = cnnlab.load_dataset("digits", limit_train=300)
result = cnnlab.train(model, data, config, sys.argv[1])
scores = cnnlab.evaluate(model, data.x_test, data.y_test)
assert result.epochs_run == 1 and 0 <= scores["accuracy"] <= 1, (result, scores)
assert repr(cnnlab.RunDir(sys.argv[1])) == f"RunDir('{sys.argv[1]}')"
try:
    cnnlab.train(model, data, config, sys.argv[1])
except cnnlab.CnnlabError as e:
    assert "already holds a trained model" in str(e), e
else:
    raise AssertionError("a second train() into the same folder replaced its model")

for module in pkgutil.walk_packages(cnnlab.__path__, "cnnlab."):  # every module imported, each name still the API's
    if module.name != "cnnlab.__main__":
        importlib.import_module(module.name)
for name in cnnlab.__all__:
    value = getattr(cnnlab, name)
    assert name in ("plots", "tune") or value is getattr(importlib.import_module("cnnlab." + cnnlab._WHERE[name]), name), name
print("ok")
"""


def test_api_names_stay_functions_whatever_is_imported_first(tmp_path):
    """`cnnlab.train` once became the module cnnlab/train.py as soon as build_model had imported it."""
    done = subprocess.run([sys.executable, "-c", STEP_BY_STEP, str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_the_command_lines_choices_are_the_librarys():
    """cli.py spells export formats and tune pruners itself (its --help imports neither Keras nor Optuna): they must
    be the library's."""
    from cnnlab import cli, export
    from cnnlab.tune import study

    assert cli.EXPORT_FORMATS == tuple(export.FORMATS)
    assert cli.TUNE_PRUNERS == study.PRUNERS
