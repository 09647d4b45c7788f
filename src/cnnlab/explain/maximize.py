"""Activation maximisation: the input pattern each filter (or class) responds to most.

Gradient ascent from noise on the filter's mean activation (for the output layer: the class score before the
softmax, see `scores`), all filters of a layer in one batch, with the usual regularisers that keep the pattern an
image rather than adversarial noise: a random shift each step (jitter), a slight blur every few steps, and a decay
towards grey. The last eighth of the steps (`polish`) go without them: the regularisers have given the pattern its
shape, and the plain ascent sharpens it to the filter's full response (how much: benchmarks/README.md). A filter the
noise leaves silent (a ReLU at zero everywhere: no gradient) starts again from new noise.
The patterns are (H, W, C) images in [0, 1], as cnnlab feeds images; `feeding.to_model` scales them as the model
takes them. Conv layers inside a nested backbone are reached through `graph.rebuild`; the ascent step is compiled
once per layer (`gradient.gradient_function`), on any Keras backend.

    import cnnlab
    patterns = cnnlab.maximize(model, "conv_2")                  # (64, 28, 28, 1): one image per filter
    classes = cnnlab.maximize(model, "probabilities", steps=64)  # what the model thinks each class looks like
"""

import functools

import keras
import numpy as np
from keras import ops

from ..errors import ConfigError
from ..feeding import model_input, to_model
from ..graph import output_layer, rebuild
from ..inspection import check_class_scores, conv_layers, named_layer, network
from .gradient import gradient_function
from .scores import score_model

STEPS = 128
LEARNING_RATE = 0.05  # of the image's [0, 1] range per step, along the normalised gradient
JITTER = 1  # pixels the image is shifted by at random, each way, each step
BLUR_EVERY = 4  # steps between blurs
BLUR = 0.5  # weight of the neighbours in a blur (0: none)
DECAY = 0.01  # pull towards grey, per step
POLISH = 0.125  # the share of the steps, at the end, without jitter, blur and decay


def layer_names(model) -> list:
    """The layers `maximize` takes: every conv layer (inside nested models too), then the output layer."""
    net = network(model)
    return [layer.name for layer in conv_layers(net)] + [output_layer(net).name]


def find_layer(model, layer_name):
    net = network(model)
    return named_layer(model, layer_name, [*conv_layers(net), output_layer(net)], kind="conv or output layer")


@functools.lru_cache(maxsize=16)
def _response_model(model, layer_name):
    """The model's input -> the layer's output: a conv layer's activations, or the output layer's class scores."""
    net, layer = network(model), find_layer(model, layer_name)
    if layer is output_layer(net):
        return score_model(model)
    rebuilt = rebuild(net, taps=[layer])
    return keras.Model(rebuilt.input, rebuilt.taps[layer])


def _count(model, layer_name):
    return int(_response_model(model, layer_name).output.shape[-1])


def chosen_filters(model, layer_name, filters=None) -> list:
    """The filter (or class) indices asked for: all by default; an index the layer lacks is a one-line error."""
    count = _count(model, layer_name)
    chosen = list(range(count)) if filters is None else [int(f) for f in np.atleast_1d(filters)]
    wrong = [f for f in chosen if not 0 <= f < count]
    if wrong or not chosen:
        raise ConfigError(f"layer {layer_name!r} has {count} filters (0..{count - 1}); "
                          f"{'no filters asked for' if not chosen else f'there is no {wrong[0]}'}")
    return chosen


def mean_activations(model, layer_name, images) -> np.ndarray:
    """(N, H, W, C) images in [0, 1] -> (N, filters): each filter's activation averaged over positions (the class
    scores, for the output layer)."""
    response = _response_model(model, layer_name)
    out = ops.convert_to_numpy(response(to_model(model_input(model), images), training=False))
    return out.mean(axis=(1, 2)) if out.ndim == 4 else out


def filter_means(outputs, weights):
    """Per image, the mean activation of the filter `weights` (one-hot) picks: the objective ascended."""
    per_filter = ops.mean(outputs, axis=(1, 2)) if len(outputs.shape) == 4 else outputs
    return ops.sum(ops.cast(per_filter, "float32") * weights, axis=-1)


def _noise(rng, shape):
    """Grey noise around a random brightness per image: a filter silent on mid grey (one that looks for dark or
    for bright regions) gets another start."""
    brightness = rng.uniform(0.1, 0.9, size=(shape[0], 1, 1, 1))
    return np.clip(brightness + 0.2 * rng.standard_normal(shape), 0, 1).astype(np.float32)


def _blur(images, weight):
    """A 3x3 blur of each image: the pixel's value mixed with its 4 neighbours' mean (edges repeated)."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    neighbours = (padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]) / 4
    return (1 - weight) * images + weight * neighbours


def maximize(model, layer_name, filters=None, steps=STEPS, learning_rate=LEARNING_RATE, jitter=JITTER,
             blur_every=BLUR_EVERY, blur=BLUR, decay=DECAY, polish=POLISH, seed=0) -> np.ndarray:
    """The (H, W, C) image in [0, 1] that excites each of `filters` (default: all) of the conv or output layer
    `layer_name` most, as an (n, H, W, C) array in the order of `filters`.

        patterns = maximize(model, "conv_1", filters=[0, 3], steps=64)
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps= must be a whole number >= 1, not {steps!r}")
    if not 0 <= polish <= 1:
        raise ConfigError(f"polish= is the share of the steps taken without the regularisers, in 0..1, not {polish}")
    if find_layer(model, layer_name) is output_layer(network(model)):
        check_class_scores(model)  # one output unit's "class" could be either
    spec = model_input(model)
    chosen = chosen_filters(model, layer_name, filters)
    ascent = gradient_function(_response_model(model, layer_name), filter_means)
    one_hot = np.eye(_count(model, layer_name), dtype=np.float32)[chosen]
    rng = np.random.default_rng(seed)
    images = _noise(rng, (len(chosen), *spec.shape))
    shaped = steps - round(polish * steps)  # the steps with the regularisers; the rest polish
    for step in range(steps):
        regularised = step < shaped
        dy, dx = rng.integers(-jitter, jitter + 1, size=2) if jitter and regularised else (0, 0)
        shifted = np.roll(images, (dy, dx), axis=(1, 2))
        _, grads = ascent([to_model(spec, shifted)], one_hot)
        grads = grads.reshape(shifted.shape) * spec.pixel_scale  # d/d(image in [0, 1]), through to_model's scaling
        grads = np.roll(grads, (-dy, -dx), axis=(1, 2))
        silent = ~np.any(grads, axis=(1, 2, 3))  # a ReLU filter this noise leaves at zero gives no gradient
        if silent.any():
            images[silent] = _noise(rng, (int(silent.sum()), *spec.shape))
        grads /= np.sqrt(np.mean(grads ** 2, axis=(1, 2, 3), keepdims=True)) + 1e-8  # one step size for all
        images = images + learning_rate * grads - regularised * decay * (images - 0.5)
        if regularised and blur and blur_every and (step + 1) % blur_every == 0:
            images = _blur(images, blur)
        images = np.clip(images, 0, 1).astype(np.float32)
    return images
