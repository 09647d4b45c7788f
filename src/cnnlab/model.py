"""The CNN: conv blocks that find local patterns, then dense layers that classify them.

`seed` (the defaults) is the study notes' network exactly:
Conv2D(32,3,relu,same) -> MaxPool(2) -> Conv2D(64,3,relu,same) -> MaxPool(2) -> Flatten
-> Dense(100,relu) -> Dropout(0.4) -> Dense(10,softmax), Adam, sparse categorical cross-entropy.
The `fast` and `best` recipes add augmentation layers in front, batch normalisation after each block's pooling,
more blocks, bfloat16 arithmetic and a learning-rate schedule, all from the same config fields.
An ensemble (`best` on MNIST) is several such networks trained apart, saved as one model that averages them.
"""

import keras
import numpy as np

from .config import Config, architecture_problem
from .errors import ConfigError
from .preprocess import DIGIT_SHAPE

NUM_CLASSES = 10
# Keras's default 0.99 keeps the moving variance near its initial 1.0 for hundreds of steps, far from the
# real ~0.001 of early activations: a model trained for an epoch or two then scores ~45% at inference.
# 0.9 (PyTorch's default) forgets the initial value within ~50 steps.
BN_MOMENTUM = 0.9


def build_model(config: Config = None, num_classes=NUM_CLASSES, steps_per_epoch=None,
                input_shape=DIGIT_SHAPE) -> keras.Model:
    """Build and compile the network that `config` describes (the seed network by default) for images of
    `input_shape` (H, W, C) and `num_classes` classes: the conv blocks are the same for any size, the dense head
    takes what the last block leaves.

    `steps_per_epoch` sizes a learning-rate schedule; it is needed only when `config.lr_schedule` is not constant.
    """
    config = config or Config()
    problem = architecture_problem(config, input_shape[:2])
    if problem:
        raise ConfigError(problem)
    hidden = config.precision  # the output layer stays float32: a softmax in bfloat16 loses the small probabilities
    layers = [keras.Input(tuple(input_shape), name="image"), *augmentation_layers(config)]
    for i, filters in enumerate(config.conv_filters, start=1):
        for j in range(1, config.convs_per_block + 1):
            name = f"conv_{i}" if config.convs_per_block == 1 else f"conv_{i}_{j}"
            layers.append(keras.layers.Conv2D(filters, config.kernel_size, activation="relu", padding="same",
                                              name=name, dtype=hidden))
        layers.append(keras.layers.MaxPooling2D(2, name=f"pool_{i}", dtype=hidden))
        if config.batch_norm:  # after pooling: a quarter of the work of BN after the conv, measured as good
            layers.append(keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"norm_{i}", dtype=hidden))
    layers.append(keras.layers.Flatten(name="flatten", dtype=hidden))
    for i, units in enumerate(config.dense_units, start=1):
        layers.append(keras.layers.Dense(units, activation="relu", name=f"dense_{i}", dtype=hidden))
        if config.dropout:
            layers.append(keras.layers.Dropout(config.dropout, name=f"dropout_{i}", dtype=hidden))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32"))
    model = keras.Sequential(layers, name=f"cnnlab_{config.recipe}")
    compile_model(model, config, steps_per_epoch)
    return model


def ensemble_model(members) -> keras.Model:
    """One model whose probabilities are the mean of its members': built from plain Keras layers, so that it is
    saved, loaded (also by a script without cnnlab), scored and served like a single network."""
    image = keras.Input(members[0].input_shape[1:], name="image")
    for k, member in enumerate(members, start=1):
        member.name = f"member_{k}"  # the members were all saved as cnnlab_<recipe>; a model's layer names must differ
    probabilities = keras.layers.Average(name="probabilities")([member(image) for member in members])
    return keras.Model(image, probabilities, name=f"ensemble_of_{len(members)}")


def ensemble_line(config: Config) -> str:
    """What follows an ensemble's summary: the summary shows one of its networks."""
    return (f"Ensemble: the mean of {config.ensemble} such networks' probabilities (seeds "
            f"{config.seed}..{config.seed + config.ensemble - 1})")


def augmentation_layers(config: Config):
    """Random mirror images, shifts, rotations and zooms of the training images; Keras skips them at inference.
    Each layer gets its own seed: layers seeded alike draw the same numbers, which would tie each image's zoom to
    its shift and its rotation to both."""
    seeds = iter(np.random.SeedSequence(config.seed).generate_state(4).tolist())
    layers = []
    if config.augment_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=next(seeds), name="random_flip"))
    if config.augment_translate:
        layers.append(keras.layers.RandomTranslation(config.augment_translate, config.augment_translate,
                                                     fill_mode="constant", seed=next(seeds), name="random_translation"))
    if config.augment_rotate:
        layers.append(keras.layers.RandomRotation(config.augment_rotate / 360, fill_mode="constant",
                                                  seed=next(seeds), name="random_rotation"))
    if config.augment_zoom:
        layers.append(keras.layers.RandomZoom(config.augment_zoom, config.augment_zoom, fill_mode="constant",
                                              seed=next(seeds), name="random_zoom"))
    return layers


def learning_rate(config: Config, steps_per_epoch=None):
    """The constant learning rate, or a Keras schedule over all `config.epochs * steps_per_epoch` steps."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    if not steps_per_epoch:
        raise ValueError(f"lr_schedule {config.lr_schedule!r} needs steps_per_epoch to size the schedule")
    total = config.epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, total)
    warmup = round(config.warmup_fraction * total)  # one_cycle: from peak/25 up to the peak, then down to 0
    return keras.optimizers.schedules.CosineDecay(config.learning_rate / 25, max(total - warmup, 1),
                                                  warmup_target=config.learning_rate, warmup_steps=warmup)


def make_optimizer(config: Config, steps_per_epoch=None):
    optimizers = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
    }
    return optimizers[config.optimizer](learning_rate=learning_rate(config, steps_per_epoch))


def compile_model(model, config: Config, steps_per_epoch=None):
    jit_compile = {"true": True, "false": False}.get(config.jit_compile, "auto")
    model.compile(optimizer=make_optimizer(config, steps_per_epoch), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=config.steps_per_execution, jit_compile=jit_compile)


def layer_rows(model) -> list:
    """model.summary() as data: each layer's name, type, output shape without the batch (None for a layer used more
    than once, which has no single output) and parameters."""
    rows = []
    for layer in model.layers:
        try:
            shape = list(layer.output.shape[1:])
        except (AttributeError, ValueError):
            shape = None
        rows.append({"name": layer.name, "type": type(layer).__name__, "output_shape": shape,
                     "parameters": int(layer.count_params())})
    return rows


def summary_text(model) -> str:
    """`model.summary()` as text, to print and to keep in the run directory."""
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line), line_length=80)  # rich renders into 80 columns off a terminal
    return "\n".join(lines)
