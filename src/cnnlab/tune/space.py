"""The search space: which settings a study searches, over what, checked before any trial trains.

A space is a table of settings (a TOML or JSON file, `--space FILE`), each one of

    learning_rate = {low = 1e-4, high = 1e-2, log = true}   # a range: whole numbers for a whole-number setting
    batch_size = [32, 64, 128]                              # choices
    kernel_size = 3                                          # one value, for every trial

The file is the whole space: a setting it does not name keeps the flags' (or the default) value. Two names stand
for conv_filters: `conv_blocks` (how many conv blocks) and `first_filters` (the first block's filters; each next
block has twice as many), so that depth and width are searched, and ranked, apart. A range of a list setting
(dense_units) searches one layer of that many units.
"""

import difflib
import math

from ..config import FIELDS, Config, _kind, architecture_problem, make_config, read_config_file, setting_text
from ..errors import ConfigError

DERIVED = {"conv_blocks": int, "first_filters": int}  # searched in place of conv_filters
RANGE_KEYS = ("low", "high", "log", "step")


def default_space(image_size=(28, 28)) -> dict:
    """Every setting the issue names, over ranges that train in seconds to minutes on MNIST-sized images; on small
    images (8x8 digits) only the depths and kernels that fit them."""
    fits = [(blocks, kernel) for blocks in (2, 3) for kernel in (3, 5)
            if min(image_size) >> (blocks - 1) >= max(2, kernel)]
    blocks = sorted({b for b, _ in fits}) or [2]
    kernels = sorted({k for _, k in fits if all((b, k) in fits for b in blocks)}) or [3]
    return {
        "conv_blocks": blocks,
        "first_filters": {"low": 8, "high": 64, "log": True},
        "kernel_size": kernels,
        "dense_units": {"low": 32, "high": 256, "log": True},
        "dropout": {"low": 0.0, "high": 0.5},
        "batch_norm": [False, True],
        "learning_rate": {"low": 3e-4, "high": 1e-2, "log": True},
        "lr_schedule": ["constant", "one_cycle", "cosine"],
        "batch_size": [32, 64, 128],
        "augment_translate": {"low": 0.0, "high": 0.15},
        "augment_rotate": {"low": 0.0, "high": 15.0},
        "augment_zoom": {"low": 0.0, "high": 0.15},
    }


def read_space(path) -> dict:
    return read_config_file(path)


def _type(name):
    """int, float, bool, str or list: what a setting (or a derived one) holds."""
    return DERIVED[name] if name in DERIVED else _kind(name)


def check_space(space: dict, base: Config, image_size=None, where="the search space") -> dict:
    """The space with every range and choice checked against the settings' own limits: each value alone trains, and
    the largest network it allows (deepest and widest, largest kernel) fits `image_size`. Else a one-line
    ConfigError naming what is wrong."""
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where} must be a table of settings to search, such as learning_rate = {{low = 1e-4, "
                          f"high = 1e-2, log = true}}")
    unknown = [key for key in space if key not in FIELDS and key not in DERIVED]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, [*FIELDS, *DERIVED], n=1)
        raise ConfigError(f"{where}: unknown setting {key}{f' (did you mean {close[0]}?)' if close else ''}; "
                          f"settings: {', '.join([*FIELDS, *DERIVED])}")
    if "conv_filters" in space and set(DERIVED) & set(space):
        raise ConfigError(f"{where}: conv_filters and conv_blocks/first_filters say the same thing; keep one")
    checked = {}
    for name, spec in space.items():
        spec = _checked_spec(name, spec, where)
        for value in _extremes(spec):
            _trial_config(base, {name: value}, f"{where}: {name} = {value!r}")
        checked[name] = spec
    largest = {name: max(_extremes(checked[name]), key=_depth)
               for name in ("conv_blocks", "first_filters", "conv_filters", "kernel_size")
               if name in checked}
    if len(largest) > 1:
        try:
            config = make_config(**{**base.to_dict(), **settings(largest, base)})
            problem = image_size and architecture_problem(config, image_size)
        except ConfigError as e:
            problem = str(e)
        if problem:
            shown = ", ".join(f"{name} = {value}" for name, value in largest.items())
            raise ConfigError(f"{where}: the largest network it allows ({shown}) cannot be built: {problem}")
    return checked


def _depth(value):
    return len(value.split(",")) if isinstance(value, str) else value


def _checked_spec(name, spec, where):
    kind = _type(name)
    if isinstance(spec, dict):
        bad = [key for key in spec if key not in RANGE_KEYS]
        if bad or not {"low", "high"} <= set(spec):
            raise ConfigError(f"{where}: {name} = {spec}: a range is {{low = A, high = B}} with optional log = true "
                              f"or step = S" + (f", not {', '.join(bad)}" if bad else ""))
        whole = kind is int or (kind is list and FIELDS[name].type == list[int])
        if kind not in (int, float) and not whole:
            raise ConfigError(f"{where}: {name} is not a number; give its choices as a list, e.g. {name} = [...]")
        low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
        numbers = [v for v in (low, high, step) if v is not None]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
            raise ConfigError(f"{where}: {name}'s low, high and step must be numbers, not {spec}")
        if whole and not all(float(v).is_integer() for v in numbers):
            raise ConfigError(f"{where}: {name} is a whole number; its low, high and step must be too, not {spec}")
        if not low < high:
            raise ConfigError(f"{where}: {name}'s low must be below its high, not {low} and {high}")
        if not isinstance(log, bool) or (log and low <= 0) or (log and step is not None):
            raise ConfigError(f"{where}: {name}: log = true needs low above 0 and no step (log must be true or false)")
        if step is not None and step <= 0:
            raise ConfigError(f"{where}: {name}'s step must be above 0, not {step}")
        cast = int if whole else float
        return {"low": cast(low), "high": cast(high), "log": log, "step": None if step is None else cast(step),
                "int": whole}
    if isinstance(spec, list) and not (kind is list and spec and not isinstance(spec[0], (list, str))):
        if not spec:
            raise ConfigError(f"{where}: {name} has no choices; give at least one")
        choices = [setting_text(choice) for choice in spec]
        if len(set(map(repr, choices))) < len(choices):
            raise ConfigError(f"{where}: {name} lists a choice twice: {spec}")
        return {"choices": choices}
    return {"value": setting_text(spec)}


def _extremes(spec):
    """The values of a checked spec that bound what a trial can get: a range's ends, every choice, the value."""
    if "choices" in spec:
        return spec["choices"]
    if "value" in spec:
        return [spec["value"]]
    return [spec["low"], spec["high"]]


def _trial_config(base: Config, params, what) -> Config:
    try:
        return make_config(**{**base.to_dict(), **settings(params, base)})
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None


def settings(params: dict, base: Config) -> dict:
    """A trial's parameters as Config settings: conv_blocks and first_filters become conv_filters, a number for a
    list setting a one-element list."""
    values = {name: value for name, value in params.items() if name not in DERIVED}
    if set(DERIVED) & set(params):
        blocks = params.get("conv_blocks", len(base.conv_filters))
        first = params.get("first_filters", base.conv_filters[0])
        values["conv_filters"] = [first * 2**k for k in range(blocks)]
    for name, value in values.items():
        if _kind(name) is list and isinstance(value, (int, float)):
            values[name] = [value]
    return values


def as_file(space: dict) -> dict:
    """A checked space as a space file writes it (TUNE_DIR/space.json), to copy and change for --space."""
    def entry(spec):
        if "choices" in spec:
            return spec["choices"]
        if "value" in spec:
            return spec["value"]
        return {"low": spec["low"], "high": spec["high"], **({"log": True} if spec["log"] else {}),
                **({} if spec["step"] is None else {"step": spec["step"]})}

    return {name: entry(spec) for name, spec in space.items()}


def searched(space: dict) -> list:
    """The settings a trial's sampler chooses (a fixed value is not searched)."""
    return [name for name, spec in space.items() if "value" not in spec]


def fixed(space: dict) -> dict:
    return {name: spec["value"] for name, spec in space.items() if "value" in spec}


def suggest(trial, space: dict, base: Config) -> Config:
    """The settings of one trial: its sampler's values for the searched settings, the fixed ones, the base's rest."""
    params = dict(fixed(space))
    for name in searched(space):
        spec = space[name]
        if "choices" in spec:
            params[name] = trial.suggest_categorical(name, spec["choices"])
        elif spec["int"]:
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec["step"] or 1, log=spec["log"])
        else:
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], step=spec["step"], log=spec["log"])
    return make_config(**{**base.to_dict(), **settings(params, base)})

