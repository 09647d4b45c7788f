"""One run's settings: defaults are the seed notebook's, a recipe or a config file changes them, flags win.

Every value is validated before any data is read or any model is built, with a message that names the
field and its allowed range, so a typo costs a second, not a training.
"""

import dataclasses
import difflib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

DATASETS = ("mnist", "fashion_mnist", "kmnist", "cifar10", "digits")  # named ones; a path is a dataset too
COLOR_MODES = ("grayscale", "rgb")

# A recipe is a named set of overrides of the seed defaults. `seed` is the notes' network and training exactly:
# it only runs faster (several steps per backend call, large validation batches), which changes no result.
# `fast` and `best` were tuned with benchmarks/time_to_accuracy.py and benchmarks/quality.py.
RECIPES = {
    "seed": {},
    "fast": {  # least wall time to 99.0% MNIST test accuracy on 2 CPU cores
        "batch_norm": True, "conv_filters": [16, 32, 64], "dense_units": [128], "dropout": 0.1, "precision": "mixed_bfloat16",
        "batch_size": 128, "learning_rate": 3e-3, "lr_schedule": "one_cycle", "epochs": 2,
        "validation_freq": 2, "patience": 2, "steps_per_execution": 16,
    },
    "best": {  # highest test accuracy in 10 minutes of training on 2 CPU cores
        "batch_norm": True, "conv_filters": [16, 32, 64], "convs_per_block": 2, "dense_units": [256], "dropout": 0.4,
        "precision": "mixed_bfloat16", "augment_translate": 0.1, "augment_rotate": 10.0, "augment_zoom": 0.1,
        "validation_split": 0.1, "batch_size": 120, "learning_rate": 3e-3, "lr_schedule": "one_cycle", "epochs": 13,
        "validation_freq": 5, "monitor": "val_loss", "patience": 20, "steps_per_execution": 16,
        "test_time_augmentation": "shift", "ensemble": 2,
    },  # val_loss: near 99.5%, validation accuracy moves by single images and can pick a model still mid-schedule
}
# Where a dataset wants more than a recipe's own settings: clothes are mirror images of themselves and gain from
# width; digits are not, and gain from rotations, zooms and depth (two convs per block) (benchmarks/quality.py).
# The wide Fashion-MNIST network takes 9 of the 10 minutes alone, so it is one network of 20 epochs, not two of 13.
RECIPE_DATASET_SETTINGS = {
    ("best", "fashion_mnist"): {
        "conv_filters": [48, 96, 192], "convs_per_block": 1, "dropout": 0.3, "augment_translate": 0.08,
        "augment_rotate": 0.0, "augment_zoom": 0.0, "augment_flip": True, "epochs": 20, "ensemble": 1,
    },
}
LR_SCHEDULES = ("constant", "one_cycle", "cosine")
PRECISIONS = ("float32", "mixed_bfloat16")  # mixed_float16 would need loss scaling
JIT_COMPILE = ("auto", "true", "false")
TEST_TIME_AUGMENTATIONS = ("none", "flip", "shift")  # see evaluation.augmented_views
ATTRIBUTION_METHODS = ("gradcam", "gradcam++", "scorecam", "saliency", "smoothgrad", "integrated_gradients",
                       "occlusion")  # see explain.attributions
MAX_ENSEMBLE = 10


@dataclass
class Config:
    # data
    dataset: str = "mnist"  # a named dataset, or the path of a folder of class folders, a .csv, an .npz, IDX files
    data_dir: str | None = None
    validation_split: float = 0.2
    test_split: float = 0.2  # cut off as the test set when the data has none (a folder without test/, a CSV)
    image_size: str | None = None  # "H" or "HxW": every image resized to it (default: the data's most common size)
    color_mode: str | None = None  # grayscale or rgb (default: grayscale when every image is grey)
    class_names: list[str] | None = None  # names of the labels 0..n-1 (default: the data's own, else the numbers)
    limit_train: int | None = None  # use only this many training images (quick experiments, tests)
    # model: one conv block = Conv2D(filters, kernel, relu, same) + MaxPool(2)
    conv_filters: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    dense_units: list[int] = field(default_factory=lambda: [100])
    dropout: float = 0.4
    batch_norm: bool = False  # BatchNormalization after each conv block's pooling
    convs_per_block: int = 1  # conv layers before each pooling
    precision: str = "float32"  # Keras dtype policy of the hidden layers; the output stays float32
    # augmentation (Keras preprocessing layers in the model: active in training only)
    augment_translate: float = 0.0  # largest shift, as a fraction of the image size
    augment_rotate: float = 0.0  # largest rotation, in degrees
    augment_zoom: float = 0.0  # largest zoom in or out, as a fraction
    augment_flip: bool = False  # random left-right mirror images (clothes, not digits)
    # training
    recipe: str = "seed"
    optimizer: str = "adam"
    learning_rate: float = 1e-3  # the peak learning rate when a schedule is used
    lr_schedule: str = "constant"  # one_cycle: linear warm-up then cosine decay to 0; cosine: decay only
    warmup_fraction: float = 0.25  # share of all steps spent warming up (one_cycle)
    batch_size: int = 32
    epochs: int = 20
    monitor: str = "val_loss"
    patience: int = 2
    min_delta: float = 0.0
    restore_best_weights: bool = True
    seed: int = 42
    # execution: how the backend runs the steps; none of these change what is computed
    steps_per_execution: int = 32  # training steps per backend call (fewer Python round trips)
    jit_compile: str = "auto"  # XLA: auto (Keras's choice: on for GPUs and JAX), true or false
    validation_freq: int = 1  # validate every N epochs, and after the last one
    eval_batch_size: int = 1024  # batch size of validation passes
    devices: str = "1"  # data-parallel training on JAX over N local devices, or auto (all); batch_size stays global
    # scoring
    test_time_augmentation: str = "none"  # flip: average over the image and its mirror; shift: and 1-pixel shifts
    ensemble: int = 1  # networks trained one after another (seeds seed, seed+1, ...); the model averages them
    # tracking and recording (cnnlab.callbacks): where else training shows; none of these change what is trained
    tensorboard: bool = False  # event files in RUN_DIR/tensorboard/: scalars, weight histograms, images per epoch
    mlflow: str | None = None  # log to MLflow: a tracking URI, or "local" (RUNS/mlflow.db, SQLite, beside the runs)
    recorded_model: str | None = None  # a fit recorded by cnnlab.RunRecorder: the user's model (its name), not built
    loss: str | None = None  # the loss the recorded model was compiled with (cnnlab's: sparse categorical cross-entropy)

    def to_dict(self):
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
MONITORS = ("val_loss", "val_accuracy", "loss", "accuracy")
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")


def read_config_file(path):
    """Read a TOML or JSON config file into a dict (a run's own config.json works too)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; is it the right file?") from None
    try:
        if path.suffix == ".json":
            values = json.loads(text)
        else:
            values = tomllib.loads(text)
    except ValueError as e:  # JSON's and TOML's decode errors are ValueErrors
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a table of settings")
    return values


def make_config(file=None, **overrides):
    """Defaults, then the recipe (and its settings for the dataset), then the config file, then the given overrides
    (None means 'not given')."""
    values = {key.replace("-", "_"): value for key, value in (read_config_file(file) if file else {}).items()}
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        named = [f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(key, FIELDS, n=1)) else key
                 for key in unknown]
        sections = "; settings are top-level keys, not [sections]" if any(isinstance(values[k], dict) for k in unknown) \
            else ""
        raise ConfigError(f"unknown setting(s) {', '.join(named)}{sections}; known: {', '.join(FIELDS)}")
    recipe = values.get("recipe", Config.recipe)
    if recipe not in RECIPES:
        raise ConfigError(f"recipe must be one of {', '.join(RECIPES)}, not {recipe!r}")
    dataset = values.get("dataset", Config.dataset)
    merged = {**RECIPES[recipe], **RECIPE_DATASET_SETTINGS.get((recipe, dataset), {}), **values}
    return validate(Config(**{k: _coerce(k, v) for k, v in merged.items()}))


def setting_text(value):
    """A setting as flags and config files write it: a list as 32,64, anything else as it is."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _coerce(name, value):
    """Accept what TOML, JSON and the command line give (e.g. '32,64' for a list)."""
    kind = _kind(name)
    if value is None:
        return None
    if kind is list:
        texts = _element_type(name) is str
        if isinstance(value, str):
            value = [v.strip() if texts else v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [str(v) for v in value] if texts else [_as_int(name, v) for v in value]
    if kind is int:
        return _as_int(name, value)
    if kind is bool:
        return _as_bool(name, value)
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, not {value!r}") from None
    if name == "mlflow" and isinstance(value, bool):  # mlflow=True, as RunRecorder takes it: the local store
        return "local" if value else None
    if isinstance(value, bool):  # TOML's and JSON's true/false for a setting that also takes words (jit_compile)
        return str(value).lower()
    if isinstance(value, int):  # a number for a setting that also takes words (devices)
        return str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be text, not {value!r}")
    return value


def _unwrapped(name):
    """A Config field's annotation without its Optional."""
    annotation = FIELDS[name].type
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args and typing.get_origin(annotation) is not list else annotation


def _kind(name):
    """The plain type of a Config field: list, int, float, bool or str (Optional unwrapped)."""
    annotation = _unwrapped(name)
    return list if typing.get_origin(annotation) is list else annotation


def _element_type(name):
    return typing.get_args(_unwrapped(name))[0]


def architecture_problem(config, size) -> str | None:
    """Why the conv blocks cannot be built on (height, width) images, or None: each block halves the feature map,
    and its conv kernel must fit the map it sees."""
    height, width = size
    for block in range(len(config.conv_filters)):
        h, w = height >> block, width >> block
        if min(h, w) < 2 or config.kernel_size > min(h, w):
            most = 0  # blocks whose maps this kernel fits
            while min(height, width) >> most >= max(2, config.kernel_size):
                most += 1
            fix = f"a smaller kernel_size or fewer conv blocks (at most {most})" if most else \
                f"a kernel_size of at most {min(height, width)}"
            return (f"kernel_size {config.kernel_size} is larger than the {h}x{w} feature map of conv block "
                    f"{block + 1} (images of {height}x{width}); use {fix}")
    return None


def known_image_size(config):
    """(height, width) of the data before it is read: the asked-for size, or a named dataset's; else None."""
    if config.image_size:
        from .data.dataset import parse_image_size

        return parse_image_size(config.image_size)
    if config.dataset in DATASETS:
        from .data.catalogue import NAMED

        return NAMED[config.dataset].image_shape[:2]
    return None


def _as_int(name, value):
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"{name} must be a whole number, not {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None


def _as_bool(name, value):
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def validate(config: Config) -> Config:
    def need(ok, message):
        if not ok:
            raise ConfigError(message)

    if config.dataset not in DATASETS:
        from .data import source_kind

        source_kind(config.dataset)  # a path, or a one-line error saying what is taken
    need(0 < config.validation_split < 1, f"validation_split must be in (0, 1), not {config.validation_split}")
    need(0 < config.test_split < 1, f"test_split must be in (0, 1), not {config.test_split}")
    need(config.color_mode is None or config.color_mode in COLOR_MODES,
         f"color_mode must be one of {', '.join(COLOR_MODES)}, not {config.color_mode!r}")
    need(config.class_names is None or len(set(config.class_names)) == len(config.class_names) >= 2,
         f"class_names must name at least 2 classes, each once, not {config.class_names}")
    need(config.limit_train is None or config.limit_train >= 20, f"limit_train must be at least 20, not {config.limit_train}")
    need(len(config.conv_filters) >= 2, f"conv_filters needs at least 2 conv blocks, got {len(config.conv_filters)}")
    need(all(1 <= f <= 1024 for f in config.conv_filters), f"conv_filters must each be in 1..1024, got {config.conv_filters}")
    need(len(config.dense_units) >= 1, "dense_units needs at least 1 dense layer, got none")
    need(all(1 <= u <= 8192 for u in config.dense_units), f"dense_units must each be in 1..8192, got {config.dense_units}")
    need(0 <= config.dropout < 1, f"dropout must be in [0, 1), not {config.dropout}")
    need(config.kernel_size >= 1, f"kernel_size must be at least 1, not {config.kernel_size}")
    size = None if config.recorded_model else known_image_size(config)  # else checked when the data is read
    need(size is None or architecture_problem(config, size) is None, size and architecture_problem(config, size))
    need(config.convs_per_block >= 1, f"convs_per_block must be at least 1, not {config.convs_per_block}")
    need(config.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, not {config.precision!r}")
    need(0 <= config.augment_translate <= 0.5, f"augment_translate must be in [0, 0.5], not {config.augment_translate}")
    need(0 <= config.augment_rotate <= 180, f"augment_rotate must be in [0, 180] degrees, not {config.augment_rotate}")
    need(0 <= config.augment_zoom < 1, f"augment_zoom must be in [0, 1), not {config.augment_zoom}")
    need(config.optimizer in OPTIMIZERS or config.recorded_model,  # a recorded model's optimizer is not built
         f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {config.optimizer!r}")
    need(0 < config.learning_rate <= 10, f"learning_rate must be in (0, 10], not {config.learning_rate}")
    need(config.lr_schedule in LR_SCHEDULES or config.recorded_model,
         f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {config.lr_schedule!r}")
    need(0 <= config.warmup_fraction < 1, f"warmup_fraction must be in [0, 1), not {config.warmup_fraction}")
    need(config.batch_size >= 1, f"batch_size must be positive, not {config.batch_size}")
    need(config.epochs >= 1, f"epochs must be positive, not {config.epochs}")
    need(config.monitor in MONITORS, f"monitor must be one of {', '.join(MONITORS)}, not {config.monitor!r}")
    need(config.patience >= 0, f"patience must be 0 or more, not {config.patience}")
    need(config.min_delta >= 0, f"min_delta must be 0 or more, not {config.min_delta}")
    need(config.steps_per_execution >= 1, f"steps_per_execution must be positive, not {config.steps_per_execution}")
    need(config.jit_compile in JIT_COMPILE,
         f"jit_compile must be one of {', '.join(JIT_COMPILE)}, not {config.jit_compile!r}")
    need(config.validation_freq >= 1, f"validation_freq must be positive, not {config.validation_freq}")
    need(config.eval_batch_size >= 1, f"eval_batch_size must be positive, not {config.eval_batch_size}")
    need(config.devices == "auto" or (config.devices.isdigit() and int(config.devices) >= 1),
         f"devices must be auto (all local devices) or a number of devices of at least 1, not {config.devices!r}")
    need(config.test_time_augmentation in TEST_TIME_AUGMENTATIONS,
         f"test_time_augmentation must be one of {', '.join(TEST_TIME_AUGMENTATIONS)}, not {config.test_time_augmentation!r}")
    need(1 <= config.ensemble <= MAX_ENSEMBLE, f"ensemble must be in 1..{MAX_ENSEMBLE} networks, not {config.ensemble}")
    need(0 <= config.seed <= 2**32 - config.ensemble,
         f"seed must be in 0..{2**32 - config.ensemble} (the networks of an ensemble use seed, seed+1, ...), not {config.seed}")
    need(config.mlflow is None or config.mlflow.strip(), "mlflow must be a tracking URI or local, not empty")
    return config
