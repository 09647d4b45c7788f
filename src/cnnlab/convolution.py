"""One value of a conv layer's feature map worked out by hand, as CNN Explainer shows it, for any model's conv layers.

A conv layer's output at (y, x) in channel c is the patch of the layer's input under the kernel, multiplied by the
kernel's weights for c, summed, plus c's bias, through the layer's activation. `value_at` recomputes that with NumPy
from the layer's input and weights (read from one forward pass, nested backbones included, see `graph.rebuild`), so
the page can show each product, and `receptive_field` finds the pixels of the input image that value depends on.

    taps = layer_values(model, image)                     # {layer: (its input, its output)} for one image
    worked = value_at(layer, *taps[layer], channel=3, y=5, x=7)
    worked["pre_activation"], worked["value"]            # sum of products + bias, and the feature map's value
"""

import functools

import keras
import numpy as np

from .errors import ConfigError
from .feeding import model_input, to_model
from .graph import leaf_layers, rebuild
from .inspection import CONV_KINDS, POOL_KINDS, conv_layers, named_layer, network, output_list

DIGITS = 6  # decimals the numbers are sent with


def find_conv_layer(model, name):
    return named_layer(model, name, conv_layers(model))


@functools.lru_cache(maxsize=8)
def tapped_model(model):
    """The model's input -> [each conv layer's input, its output, for every conv layer], in one forward pass."""
    layers, inputs = conv_layers(model), {}

    def keep_input(layer, rebuilt, *args, **kwargs):
        inputs[layer] = args[0]
        return layer(*args, **kwargs)

    rebuilt = rebuild(network(model), taps=layers, patch={layer: keep_input for layer in layers})
    tensors = [tensor for layer in layers for tensor in (inputs[layer], rebuilt.taps[layer])]
    return keras.Model(rebuilt.input, tensors), layers


def layer_values(model, image) -> dict:
    """{conv layer: (its input (h, w, c), its output (h', w', filters))} for one (H, W, C) image in [0, 1]."""
    tapped, layers = tapped_model(model)
    out = output_list(tapped.predict_on_batch(to_model(model_input(model), np.asarray(image, np.float32)[None])))
    return {layer: (np.asarray(out[2 * k][0], np.float64), np.asarray(out[2 * k + 1][0], np.float64))
            for k, layer in enumerate(layers)}


def _same_padding(size_in, size_out, kernel, stride, dilation):
    """Rows (or columns) a 'same' layer pads before the input: the smaller half, as TensorFlow and XLA do."""
    return max((size_out - 1) * stride + (kernel - 1) * dilation + 1 - size_in, 0) // 2


def _window(layer, size_in, size_out):
    """(kernel, stride, dilation, padding before) per spatial axis of a conv or pooling layer."""
    kernel = getattr(layer, "kernel_size", None) or layer.pool_size
    dilation = getattr(layer, "dilation_rate", (1, 1))
    return [(k, s, d, _same_padding(n_in, n_out, k, s, d) if layer.padding == "same" else 0)
            for k, s, d, n_in, n_out in zip(kernel, layer.strides, dilation, size_in, size_out)]


def _spatial(tensor_shape):
    return tuple(int(d) for d in tensor_shape[1:3])


def receptive_field(model, layer, y, x):
    """The box (top, left, bottom, right; inclusive, clipped to the image) of input pixels that `layer`'s output at
    (y, x) depends on, or None where that cannot be told from a chain of layers (a resize, a branch that changes
    sizes, a layer called twice). Walks the conv and pooling layers before `layer` in order (nested models entered):
    exact for a chain, and for residual blocks with identity shortcuts (a projection shortcut gives None); where
    branches with convs run side by side, the box of all of them one after another, a bound."""
    before = leaf_layers(network(model))
    before = before[:before.index(layer) + 1]
    size = model_input(model).size
    steps = []
    for step in before:
        try:
            inputs = step.input if isinstance(step.input, (list, tuple)) else [step.input]
            sizes_in, size_out = {_spatial(tensor.shape) for tensor in inputs}, _spatial(step.output.shape)
        except (AttributeError, ValueError):  # a layer called in more than one place has no one input
            return None
        if sizes_in != {size}:  # a size that did not come from the layer before: the chain is not this one
            return None
        size_in = size
        if isinstance(step, CONV_KINDS + POOL_KINDS):
            steps.append(_window(step, size_in, size_out))
        elif size_out != size_in:  # Resizing, UpSampling, padding, cropping: not followed here
            return None
        size = size_out
    (top, bottom), (left, right) = (y, y), (x, x)
    for (rows, columns) in reversed(steps):
        (k, s, d, pad), (kw, sw, dw, pad_w) = rows, columns
        top, bottom = top * s - pad, bottom * s - pad + (k - 1) * d
        left, right = left * sw - pad_w, right * sw - pad_w + (kw - 1) * dw
    height, width = model_input(model).size
    return {"top": max(top, 0), "left": max(left, 0), "bottom": min(bottom, height - 1), "right": min(right, width - 1),
            "height": bottom - top + 1, "width": right - left + 1}  # its size before clipping at the edges


def _patch(layer_input, layer, size_out, y, x):
    """The (kh, kw, c) window of the layer's input under output (y, x), with the zeros of 'same' padding."""
    (kh, sh, dh, top), (kw, sw, dw, left) = _window(layer, layer_input.shape[:2], size_out)
    rows, columns = y * sh - top + dh * np.arange(kh), x * sw - left + dw * np.arange(kw)
    patch = np.zeros((kh, kw, layer_input.shape[2]))
    inside_rows = (rows >= 0) & (rows < layer_input.shape[0])
    inside_columns = (columns >= 0) & (columns < layer_input.shape[1])
    patch[np.ix_(inside_rows, inside_columns)] = layer_input[np.ix_(rows[inside_rows], columns[inside_columns])]
    return patch


def _weights(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), np.float64)


def _what_is_multiplied(layer, patch, channels, channel):
    """(the input channels used, the patch of them, the kernel for `channel`, a 1x1 mixing step or None, a note)."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        depthwise = _weights(layer.depthwise_kernel)  # (kh, kw, input channels, multiplier)
        multiplier = depthwise.shape[3]
        used = np.repeat(np.arange(patch.shape[2]), multiplier)  # Keras orders the depthwise outputs channel-major
        note = (f"SeparableConv2D: a depthwise step (each input channel under its own kernel{'s' * (multiplier > 1)}), "
                f"then a 1x1 convolution that mixes those {len(used)} sums with channel {channel}'s weights")
        return used, patch[:, :, used], depthwise.reshape(*depthwise.shape[:2], -1), \
            _weights(layer.pointwise_kernel)[0, 0, :, channel], note
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        source, multiplier = divmod(channel, layer.depth_multiplier)
        note = f"DepthwiseConv2D: channel {channel} sees input channel {source} only, under its own kernel"
        return np.array([source]), patch[:, :, [source]], _weights(layer.kernel)[:, :, [source], multiplier], None, note
    groups = layer.groups
    per_group = patch.shape[2] // groups
    group = channel // (channels // groups)
    used = np.arange(group * per_group, (group + 1) * per_group)
    note = f"Conv2D: every input channel{f' of group {group}' if groups > 1 else ''} under channel {channel}'s kernel"
    return used, patch[:, :, used], _weights(layer.kernel)[:, :, :, channel], None, note


def json_list(values, decimals=DIGITS) -> list:
    """An array as nested lists of numbers rounded to `decimals`, for JSON: rounded in float64, since a rounded
    float32 is sent as its float64 value (0.58 -> 0.5799999833106995), longer and slower to encode."""
    return np.round(np.asarray(values, np.float64), decimals).tolist()


def value_at(layer, layer_input, layer_output, channel, y, x) -> dict:
    """How `layer`'s output at (y, x) of `channel` is made from its (h, w, c) input: the patch, the kernel, their
    products, the sum per input channel and in all, the bias, the activation; `value` is the layer's own output
    there, to check the arithmetic against. A SeparableConv2D's sum is its 1x1 mixing step's (`pointwise`)."""
    height, width, channels = layer_output.shape
    if not 0 <= channel < channels:
        raise ConfigError(f"channel must be in 0..{channels - 1} for {layer.name}, not {channel}")
    if not (0 <= y < height and 0 <= x < width):
        raise ConfigError(f"position (y={y}, x={x}) is outside {layer.name}'s {height}x{width} feature map; y must "
                          f"be in 0..{height - 1} and x in 0..{width - 1}")
    if layer.data_format != "channels_last":
        raise ConfigError(f"{layer.name} is channels_first; cnnlab works out channels_last conv layers only")
    used, patch, kernel, mixing, note = _what_is_multiplied(layer, _patch(layer_input, layer, (height, width), y, x),
                                                            channels, channel)
    products = patch * kernel
    channel_sums = products.sum(axis=(0, 1))
    pointwise = None if mixing is None else \
        {"inputs": channel_sums, "weights": mixing, "products": channel_sums * mixing}
    total = float(np.sum(products) if mixing is None else np.sum(pointwise["products"]))
    bias = float(_weights(layer.bias)[channel]) if layer.use_bias else 0.0
    activated = float(keras.ops.convert_to_numpy(layer.activation(np.float32(total + bias))))
    return {
        "layer": layer.name, "kind": type(layer).__name__, "note": note, "channel": channel, "y": y, "x": x,
        "kernel_size": list(kernel.shape[:2]), "strides": list(layer.strides), "padding": layer.padding,
        "dilation": list(layer.dilation_rate), "input_shape": list(layer_input.shape),
        "output_shape": [height, width, channels], "input_channels": used.tolist(),
        "patch": json_list(patch), "kernel": json_list(kernel), "products": json_list(products),
        "channel_sums": json_list(channel_sums),
        "pointwise": None if pointwise is None else {key: json_list(value) for key, value in pointwise.items()},
        "sum": round(total, DIGITS), "bias": round(bias, DIGITS), "pre_activation": round(total + bias, DIGITS),
        "activation": getattr(layer.activation, "__name__", str(layer.activation)),
        "activated": round(activated, DIGITS),
        "value": round(float(layer_output[y, x, channel]), DIGITS),
        "feature_map": json_list(layer_output[:, :, channel]),
    }
