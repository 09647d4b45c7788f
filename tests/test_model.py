import keras
import pytest

from cnnlab.config import make_config
from cnnlab.model import build_model, summary_text


def test_seed_architecture_is_the_notebooks_network():
    model = build_model(make_config())
    layers = [(type(layer).__name__, layer.output.shape[1:]) for layer in model.layers]
    assert layers == [
        ("Conv2D", (28, 28, 32)), ("MaxPooling2D", (14, 14, 32)),
        ("Conv2D", (14, 14, 64)), ("MaxPooling2D", (7, 7, 64)),
        ("Flatten", (3136,)), ("Dense", (100,)), ("Dropout", (100,)), ("Dense", (10,)),
    ]
    conv1, conv2 = model.layers[0], model.layers[2]
    assert conv1.kernel_size == (3, 3) and conv1.padding == "same" and conv1.activation is keras.activations.relu
    assert conv2.kernel_size == (3, 3) and conv2.padding == "same"
    assert model.layers[6].rate == 0.4
    assert model.layers[-1].activation is keras.activations.softmax
    assert sum(int(w.numpy().size) for w in model.trainable_weights) == 333_526
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert model.loss == "sparse_categorical_crossentropy"


def test_summary_shows_shapes_and_parameter_count():
    text = summary_text(build_model())
    assert "(None, 28, 28, 32)" in text and "(None, 7, 7, 64)" in text and "333,526" in text
    for layer, params in [("conv_1", "320"), ("conv_2", "18,496"), ("dense_1", "313,700"), ("probabilities", "1,010")]:
        row = next(line for line in text.splitlines() if layer in line)
        assert row.rstrip(" │").endswith(params), row


@pytest.mark.parametrize("filters,kernel,dense", [([16, 32, 64], 5, [128, 64]), ([8, 8], 3, [10])])
def test_other_architectures_by_configuration(filters, kernel, dense):
    model = build_model(make_config(conv_filters=filters, kernel_size=kernel, dense_units=dense, dropout=0.0))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    denses = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [c.filters for c in convs] == filters and all(c.kernel_size == (kernel, kernel) for c in convs)
    assert [d.units for d in denses] == dense + [10]
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    assert model.output_shape == (None, 10)
