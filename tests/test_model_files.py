"""Model files from elsewhere, through `cnnlab inspect` and `cnnlab evaluate`: safe mode by default, and every
broken or unusable file refused with one line (exit 2) that says what is wrong and what to do."""

import keras
import pytest
from robustness_helpers import make_model_files

from cnnlab import inspection
from cnnlab.cli import main
from cnnlab.errors import ModelFileError

LAMBDA = "refused in safe mode: Lambda layer 'times_two' holds Python code that would run when the model is loaded; " \
         "if you trust the file, pass --unsafe"
CUSTOM = "it uses the custom object 'someones_code>Doubling', whose code is not in the file; cnnlab cannot load it " \
         "(even --unsafe only allows Lambda layers, whose code is in the file)"
TRUNCATED_KERAS = "the .keras file is truncated or corrupt; use an intact copy"
NOT_A_MODEL = "not a Keras model file; expected a .keras (zip) or .h5 (HDF5) file saved by Keras"
REFUSALS = {
    "lambda.keras": LAMBDA,
    "lambda.h5": LAMBDA,
    "custom_layer.keras": CUSTOM,
    "custom_layer.h5": CUSTOM,
    "truncated.keras": TRUNCATED_KERAS,
    "corrupt_bytes.keras": TRUNCATED_KERAS,
    "truncated.h5": "the .h5 file is truncated or corrupt; use an intact copy",
    "weights_only.weights.h5": "the .h5 file holds no model config (only weights or other data); "
                               "save the whole model with model.save('model.keras')",
    "data_only.h5": "the .h5 file holds no model config (only weights or other data); "
                    "save the whole model with model.save('model.keras')",
    "plain_zip.keras": "a zip file, but not a Keras model (it has no config.json)",
    "text.keras": NOT_A_MODEL,
    "empty.keras": NOT_A_MODEL,
    "image.png": NOT_A_MODEL,
    "h5_named.keras": "holds an HDF5 (.h5) model but is named .keras; rename it to end in .h5",
    "keras_named.h5": "holds a .keras (zip) model but is named .h5; rename it to end in .keras",
    "rgb_32x32.keras": "the model takes 32x32 images with 3 channels, but dataset digits has 28x28x1; give the "
                       "dataset it was trained on, or --image-size 32x32 and --color-mode rgb",
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_model_files(tmp_path_factory.mktemp("models"))


def error_of(capsys, *argv):
    code = main(list(map(str, argv)))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("command", ["inspect", "evaluate"])
@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_bad_model_file_is_one_clear_line(models, capsys, tmp_path, command, name):
    path = models[name]
    assert error_of(capsys, command, path, "--dataset", "digits", "--out", tmp_path) == \
        f"cnnlab: error: {path}: {REFUSALS[name]}"


@pytest.mark.parametrize("command", ["inspect", "evaluate"])
def test_missing_model_and_folder(capsys, tmp_path, command):
    missing = tmp_path / "nope.keras"
    assert error_of(capsys, command, missing) == f"cnnlab: error: {missing}: model file not found"
    assert error_of(capsys, command, tmp_path) == f"cnnlab: error: {tmp_path}: is a folder, not a model file"


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_scoring_refuses_a_model_with_other_classes(models, capsys, tmp_path, command):
    path = models["five_classes.keras"]
    assert error_of(capsys, command, path, "--dataset", "digits", "--out", tmp_path / "out.html") == \
        f"cnnlab: error: {path}: model outputs (None, 5), not one score for each of the 10 classes (None, 10)"


@pytest.mark.parametrize("name", ["lambda.keras", "lambda.h5"])
def test_unsafe_loads_a_trusted_lambda_model(models, capsys, tmp_path, name):
    assert main(["inspect", str(models[name]), "--unsafe", "--dataset", "digits", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "filters_conv.png").is_file()
    assert main(["evaluate", str(models[name]), "--unsafe", "--dataset", "digits", "--out", str(tmp_path)]) == 0
    assert "Test (360 images)" in capsys.readouterr().out


def test_unsafe_cannot_load_code_that_is_not_in_the_file(models, capsys, tmp_path):
    path = models["custom_layer.keras"]  # Keras's own error names the class without its package here
    assert error_of(capsys, "inspect", path, "--unsafe", "--dataset", "digits") == \
        f"cnnlab: error: {path}: {CUSTOM.replace('someones_code>', '')}"


def test_keras_itself_refuses_lambda_in_legacy_h5(models):
    """Keras >= 3.11 honours safe mode for .h5 files too (CVE-2025-9905 was about it not doing so)..."""
    with pytest.raises(ValueError, match="Lambda"):
        keras.models.load_model(models["lambda.h5"], safe_mode=True)


def test_cnnlab_refuses_lambda_even_where_keras_would_not(models, monkeypatch):
    """... and cnnlab checks the model config itself first, so an older Keras that ignores safe mode
    for .h5 files (simulated here) never gets to run the Lambda's code."""
    real_load = keras.models.load_model
    monkeypatch.setattr(keras.models, "load_model",
                        lambda path, safe_mode=True, **kw: real_load(path, safe_mode=False, **kw))
    for name in ("lambda.h5", "lambda.keras"):
        with pytest.raises(ModelFileError, match="refused in safe mode: Lambda layer 'times_two'"):
            inspection.load_model(models[name])


def test_good_files_load_in_safe_mode(models):
    for name in ("good.keras", "good.h5"):
        assert inspection.check_image_model(inspection.load_model(models[name])).count_params() > 0


def test_inspect_draws_the_filters_when_no_dataset_is_at_hand(models, capsys, tmp_path, monkeypatch):
    """Offline with no MNIST anywhere: the filters need no data, so they are drawn; the feature maps are named as
    missing, with what to give for them, in one line, and the exit status is 0."""
    for name in ("KERAS_HOME", "CNNLAB_CACHE_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("CNNLAB_MIRROR", (tmp_path / "no-mirror").as_uri())
    assert main(["inspect", str(models["good.h5"]), "--out", str(tmp_path / "figures")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cnnlab: filters only: dataset mnist not found; for feature maps give --image FILE, or --dataset "
                   "NAME_OR_PATH (--data-dir DIR)"]
    drawn = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert drawn and all(name.startswith("filters_") for name in drawn)
