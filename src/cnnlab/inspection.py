"""Look inside a trained model: load it safely, read its conv filters, compute its feature maps.

Works for any saved Keras model with Conv2D layers: cnnlab's own `.keras` files, a plain Keras
script's `.keras`, and legacy `.h5` files written by Keras 2 (`ModelCheckpoint('best_model.h5')`).
"""

import json
import re
import zipfile
import zlib
from pathlib import Path

import h5py
import keras
import numpy as np

from .errors import ConfigError, ModelFileError
from .feeding import model_input, to_model
from .graph import leaf_layers, rebuild

CONV_KINDS = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)
POOL_KINDS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def load_model(path, safe_mode=True, compile=True) -> keras.Model:
    """Load a `.keras` or `.h5` model. Safe mode (default) refuses files that would run code when loaded."""
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a model file")
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    with open(path, "rb") as f:
        head = f.read(8)
    kind = "keras" if head.startswith(b"PK") else "h5" if head.startswith(b"\x89HDF") else None
    if kind is None or path.suffix not in MODEL_SUFFIXES:
        raise ModelFileError(f"{path}: not a Keras model file; expected a .keras (zip) or .h5 (HDF5) file saved by Keras")
    if (kind == "keras") != (path.suffix == ".keras"):
        holds, right = ("a .keras (zip)", ".keras") if kind == "keras" else ("an HDF5 (.h5)", ".h5")
        raise ModelFileError(f"{path}: holds {holds} model but is named {path.suffix}; rename it to end in {right}")
    config = _model_config(path, kind)
    if safe_mode:
        _refuse_code(path, config)
    try:
        model = keras.models.load_model(path, safe_mode=safe_mode, compile=compile)
    except Exception as e:  # Keras raises ValueError, TypeError, OSError, KeyError... for bad files
        raise ModelFileError(f"{path}: {_explain_load_error(e)}") from None
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"{path}: holds no model")
    return model


def _model_config(path, kind):
    """The model's architecture as stored in the file (config.json of a .keras zip, model_config of an .h5)."""
    if kind == "keras":
        try:
            with zipfile.ZipFile(path) as archive:
                text = archive.read("config.json")
        except KeyError:
            raise ModelFileError(f"{path}: a zip file, but not a Keras model (it has no config.json)") from None
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error):
            raise ModelFileError(f"{path}: the .keras file is truncated or corrupt; use an intact copy") from None
    else:
        try:
            with h5py.File(path, "r") as f:
                text = f.attrs.get("model_config")
        except OSError:
            raise ModelFileError(f"{path}: the .h5 file is truncated or corrupt; use an intact copy") from None
        if text is None:
            raise ModelFileError(f"{path}: the .h5 file holds no model config (only weights or other data); "
                                 f"save the whole model with model.save('model.keras')")
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        raise ModelFileError(f"{path}: the model config in the file is not valid JSON; the file is corrupt") from None


def _refuse_code(path, config):
    """Safe mode, checked here as well as by Keras: older Keras versions ignored it for .h5 files (CVE-2025-9905).

    Refuses Lambda layers (their Python code is in the file), references to modules outside Keras (their
    functions would run), and custom objects nobody registered (their code is not in the file at all).
    """
    for node in _config_nodes(config):
        name = node.get("class_name")
        if name in ("Lambda", "__lambda__"):
            layer = node.get("config", {}).get("name", "") if isinstance(node.get("config"), dict) else ""
            raise ModelFileError(f"{path}: refused in safe mode: Lambda layer {layer!r} holds Python code that would "
                                 f"run when the model is loaded; if you trust the file, pass "
                                 f"safe_mode=False")
        registered = node.get("registered_name") or name
        if isinstance(registered, str) and ">" in registered and keras.saving.get_registered_object(registered) is None:
            raise ModelFileError(f"{path}: {_custom_object_message(registered)}")
        module = node.get("module")
        if isinstance(module, str) and module != "keras" and not module.startswith("keras."):
            raise ModelFileError(f"{path}: refused in safe mode: it refers to Python module {module!r}, whose code "
                                 f"would run when the model is loaded; if you trust the file, pass "
                                 f"safe_mode=False")


def _custom_object_message(name):
    return (f"it uses the custom object {name!r}, whose code is not in the file; cnnlab cannot load it "
            f"(even safe_mode=False only allows Lambda layers, whose code is in the file)")


def _config_nodes(node):
    """Every dict in a nested JSON config."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _config_nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _config_nodes(value)


def _explain_load_error(error):
    text = " ".join(str(error).split())
    if "safe_mode" in text or "Lambda" in text or "lambda" in text:
        return "refused in safe mode: it contains a Lambda layer or other code that would run when loaded; " \
               "if you trust the file, pass safe_mode=False"
    unknown = re.search(r"(?:Unknown layer|Could not locate (?:class|function)):? '([^']+)'", text)
    if unknown:
        return _custom_object_message(unknown.group(1))
    if "could not be deserialized" in text:
        return "it uses layers or objects this Keras version cannot rebuild; save it again with a current Keras"
    if isinstance(error, (zipfile.BadZipFile, EOFError, zlib.error)) or "zip" in text.lower():
        return "the .keras file is truncated or corrupt; use an intact copy"
    return f"cannot be loaded by Keras ({text[:200]})"


def check_classifier(model, num_classes, path=""):
    """A model whose output is one score per class of the dataset it is to be scored on."""
    shape = model.output_shape
    if isinstance(shape, list) or len(shape) != 2 or shape[-1] != num_classes:
        raise ModelFileError(f"{path or model.name}: model outputs {shape}, not one score for each of the "
                             f"{num_classes} classes (None, {num_classes})")
    return model


def check_class_scores(model, path=""):
    """A model with one score per class. One output unit is a binary classifier's probability of class 1 (a sigmoid)
    or its logit; cnnlab does not read it as two classes, and read as one class's score it would give every image
    that class at 100%."""
    shape = model.output_shape
    if not isinstance(shape, list) and shape[-1] == 1:
        raise ModelFileError(f"{path or model.name}: model has one output unit (a binary classifier's sigmoid or "
                             f"logit?); cnnlab reads one score per class: end the model in Dense(2), with a softmax "
                             f"or as logits")
    return model


def check_image_model(model, path="", looked_inside=True):
    """A model cnnlab can feed (one grey or colour image of a fixed size, see `feeding`) and, when it is to be
    `looked_inside`, one with at least one Conv2D (check_classifier and check_class_scores check its outputs)."""
    model_input(model, path)
    if looked_inside and not conv_layers(model):
        raise ModelFileError(f"{path or model.name}: model has no conv layer (Conv2D, SeparableConv2D, "
                             f"DepthwiseConv2D), so it has no filters or feature maps to show; cnnlab evaluate and "
                             f"cnnlab predict take it")
    return model


def ensemble_members(model) -> list:
    """The whole classifiers an ensemble averages (see model.ensemble_model); none for any other model."""
    if any(isinstance(layer, CONV_KINDS) for layer in model.layers):
        return []
    return [layer for layer in model.layers if isinstance(layer, keras.Model)
            and layer.output_shape == model.output_shape and conv_layers(layer)]


def network(model):
    """The model whose layers are looked inside: the model itself, or an ensemble's first member."""
    members = ensemble_members(model)
    return members[0] if members else model


def conv_layers(model):
    """The conv layers (Conv2D, SeparableConv2D, DepthwiseConv2D) of a model (of an ensemble's first member), in
    order, inside nested models too (a backbone)."""
    return [layer for layer in leaf_layers(network(model)) if isinstance(layer, CONV_KINDS)]


def filter_images(kernel, input_channel=None, rgb=False):
    """(kh, kw, in, out) kernel -> (out, kh, kw) images and a caption saying what they show.

    A first layer has one input channel per colour of the image: a grey image's gives one image per filter, and
    with `rgb` (a colour model's first layer) each filter is one (kh, kw, 3) colour image, its weights for the
    image's R, G and B. Deeper filters have one slice per input channel, which mean nothing as colours: show one
    (`input_channel`) or their mean over the input channels (the default).
    """
    kernel = np.asarray(kernel)
    n_in = kernel.shape[2]
    if rgb and n_in != 3:
        raise ValueError(f"rgb filters need a kernel with 3 input channels (R, G, B), not {n_in}")
    if n_in == 1:
        return np.moveaxis(kernel[:, :, 0, :], -1, 0), "one image per filter"
    if input_channel is not None:
        return np.moveaxis(kernel[:, :, input_channel, :], -1, 0), f"input channel {input_channel} of {n_in}"
    if rgb:
        return np.moveaxis(kernel, -1, 0), "each in colour (its R, G, B weights; grey is zero), then per channel"
    return np.moveaxis(kernel.mean(axis=2), -1, 0), f"mean over the {n_in} input channels"


def kernel_and_initializer(layer):
    """A conv layer's spatial kernel as (kh, kw, in, out) and the initializer it was drawn from: a depthwise
    layer's (and a separable one's depthwise part) has one filter per input channel, shown as one-channel filters."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        kernel, initializer = layer.depthwise_kernel, layer.depthwise_initializer
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        kernel, initializer = layer.kernel, layer.depthwise_initializer
    else:
        return layer.kernel, layer.kernel_initializer
    return kernel, initializer


def _as_filters(kernel, layer):
    kernel = np.asarray(kernel)
    if isinstance(layer, (keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)):
        kh, kw, channels, multiplier = kernel.shape
        kernel = kernel.reshape(kh, kw, 1, channels * multiplier)
    return kernel


def trained_kernel(layer):
    return _as_filters(keras.ops.convert_to_numpy(kernel_and_initializer(layer)[0]), layer)


def untrained_kernel(layer, seed=0):
    """The same layer's kernel freshly drawn from its own initializer (seeded, when it is random): the kind of
    weights training starts from, so that the figure shows what training changed."""
    kernel, initializer = kernel_and_initializer(layer)
    return _as_filters(fresh_weights(initializer, kernel.shape, seed), layer)


def fresh_weights(initializer, shape, seed=0) -> np.ndarray:
    """Weights of `shape` drawn anew from `initializer` (with `seed`, when it is random)."""
    settings = initializer.get_config()
    fresh = initializer.__class__.from_config({**settings, "seed": seed} if "seed" in settings else settings)
    return keras.ops.convert_to_numpy(fresh(shape=tuple(shape)))


def named_layer(model, name, layers, kind="conv layer"):
    """The layer of `layers` (of `model`) called `name`, or a one-line error that lists them."""
    for layer in layers:
        if layer.name == name:
            return layer
    raise ConfigError(f"{network(model).name} has no {kind} {name!r}; its {kind}s are: "
                      f"{', '.join(layer.name for layer in layers)}")


def _initializer_names(layer, weight) -> list:
    """Where a layer keeps the initializer of its weight `weight`: kernel_initializer for `kernel`; SeparableConv2D's
    depthwise_kernel has depthwise_initializer, and DepthwiseConv2D's `kernel` too."""
    names = [f"{weight}_initializer", f"{weight.removesuffix('_kernel')}_initializer"]
    return names + (["depthwise_initializer"] if isinstance(layer, keras.layers.DepthwiseConv2D) else [])


def feature_map_model(model, include_pooling=False):
    """A model that returns the output of every conv layer (and pooling layer, if asked) of `model` (of an
    ensemble's first member), inside nested models too, and their names."""
    kinds = CONV_KINDS + POOL_KINDS if include_pooling else CONV_KINDS
    model = network(model)
    layers = [layer for layer in leaf_layers(model) if isinstance(layer, kinds)]
    tapped = rebuild(model, taps=layers)
    # named after the network: a model that calls both (prediction.Classifier) needs its parts' names unique, and
    # keras.Model(inputs, outputs), as tutorials write it, is named "functional" as this one would be
    extractor = keras.Model(tapped.input, [tapped.taps[layer] for layer in layers], name=f"{model.name}_feature_maps")
    return extractor, [layer.name for layer in layers]


def output_list(outputs) -> list:
    """A feature map model's outputs as a list, one array per layer: Keras returns a lone array for one layer."""
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def feature_maps(model, image, include_pooling=False):
    """{layer name: (h, w, channels) activations} for one (H, W, C) image in [0, 1]."""
    extractor, names = feature_map_model(model, include_pooling)
    outputs = output_list(extractor.predict(to_model(model_input(model), np.asarray(image, np.float32)[None]),
                                            verbose=0))
    return {name: np.asarray(out[0]) for name, out in zip(names, outputs)}


def weighted_layers(net) -> list:
    """The layers of `net` that have weights, in the order an input meets them (nested models entered)."""
    return [layer for layer in leaf_layers(net) if layer.weights]


def untrained_model(model, seed=0, top=None) -> keras.Model:
    """A copy of the looked-inside network (an ensemble's first member) with its weights drawn again from their own
    initializers, seeded as `untrained_kernel` draws them: the model as training found it (its filters those of the
    filter figures' untrained half), for figures that show what training changed. `top`: only the top `top` layers
    with weights are drawn again, the others keep the trained weights (the cascading sanity check)."""
    net = network(model)
    copy = keras.models.clone_model(net)
    copy.set_weights(net.get_weights())
    weighted = weighted_layers(copy)
    for layer in weighted[-top:] if top else weighted:
        for variable in layer.weights:
            name = variable.path.split("/")[-1]  # kernel, bias, depthwise_kernel, gamma, moving_mean...
            initializer = next((found for attribute in _initializer_names(layer, name)
                                if (found := getattr(layer, attribute, None)) is not None), None)
            if initializer is not None:
                variable.assign(fresh_weights(initializer, variable.shape, seed))
    return copy
