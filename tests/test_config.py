import pytest

from cnnlab.config import Config, make_config
from cnnlab.errors import ConfigError


def test_defaults_are_the_seed():
    c = make_config()
    assert (c.conv_filters, c.kernel_size, c.dense_units, c.dropout) == ([32, 64], 3, [100], 0.4)
    assert (c.optimizer, c.learning_rate, c.batch_size, c.epochs) == ("adam", 1e-3, 32, 20)
    assert (c.monitor, c.patience, c.restore_best_weights, c.validation_split, c.seed) == ("val_loss", 2, True, 0.2, 42)


def test_flags_win_over_the_config_file(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('dataset = "digits"\nconv_filters = [8, 16, 32]\nepochs = 7\npatience = 4\n')
    c = make_config(file=toml, epochs=3, conv_filters="4,8")
    assert c.dataset == "digits" and c.patience == 4  # from the file
    assert c.epochs == 3 and c.conv_filters == [4, 8]  # flags win


def test_a_runs_config_json_is_a_config_file(tmp_path):
    path = tmp_path / "config.json"
    import json

    path.write_text(json.dumps(Config(dataset="digits", dense_units=[64]).to_dict()))
    assert make_config(file=path).dense_units == [64]


@pytest.mark.parametrize("overrides,field", [
    ({"conv_filters": [32]}, "conv_filters"),
    ({"dense_units": []}, "dense_units"),
    ({"dropout": 1.0}, "dropout"),
    ({"kernel_size": 9, "conv_filters": [8, 8, 8]}, "kernel_size"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": -1}, "batch_size"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"colour": "red"}, "colour"),
])
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        make_config(**overrides)


def test_mlflow_true_is_the_local_store(tmp_path):
    """`mlflow=True` (and `mlflow = true` in TOML) asks for the local store, as `--mlflow` alone and
    RunRecorder(mlflow=True) do; False is no MLflow."""
    assert make_config(mlflow=True).mlflow == "local" and make_config(mlflow=False).mlflow is None
    (tmp_path / "c.toml").write_text("mlflow = true\n")
    assert make_config(file=tmp_path / "c.toml").mlflow == "local"
