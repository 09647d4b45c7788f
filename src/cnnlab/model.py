"""The CNN: conv blocks that find local patterns, then dense layers that classify them.

`seed` (the defaults) is the study notes' network exactly:
Conv2D(32,3,relu,same) -> MaxPool(2) -> Conv2D(64,3,relu,same) -> MaxPool(2) -> Flatten
-> Dense(100,relu) -> Dropout(0.4) -> Dense(10,softmax), Adam, sparse categorical cross-entropy.
"""

import keras

from .config import IMAGE_SIZE, Config

NUM_CLASSES = 10


def build_model(config: Config = None, num_classes=NUM_CLASSES) -> keras.Model:
    """Build and compile the network that `config` describes (the seed network by default)."""
    config = config or Config()
    layers = [keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="image")]
    for i, filters in enumerate(config.conv_filters, start=1):
        layers.append(keras.layers.Conv2D(filters, config.kernel_size, activation="relu", padding="same", name=f"conv_{i}"))
        layers.append(keras.layers.MaxPooling2D(2, name=f"pool_{i}"))
    layers.append(keras.layers.Flatten(name="flatten"))
    for i, units in enumerate(config.dense_units, start=1):
        layers.append(keras.layers.Dense(units, activation="relu", name=f"dense_{i}"))
        if config.dropout:
            layers.append(keras.layers.Dropout(config.dropout, name=f"dropout_{i}"))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="probabilities"))
    model = keras.Sequential(layers, name=f"cnnlab_{config.recipe}")
    compile_model(model, config)
    return model


def make_optimizer(config: Config):
    optimizers = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
    }
    return optimizers[config.optimizer](learning_rate=config.learning_rate)


def compile_model(model, config: Config):
    model.compile(optimizer=make_optimizer(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def summary_text(model) -> str:
    """`model.summary()` as text, to print and to keep in the run directory."""
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line), line_length=80)  # rich renders into 80 columns off a terminal
    return "\n".join(lines)
