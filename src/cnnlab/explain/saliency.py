"""Gradient saliency: how much each input pixel moves the class score, and SmoothGrad, its average over noisy copies
of the input (Smilkov et al., 2017), which keeps the edges that matter and drops the speckle. Signed maps of the
input's shape."""

import numpy as np

from ..errors import ConfigError
from ..feeding import model_input
from .gradient import gradient_function
from .scores import (chunk_size, class_score, explained_classes, in_chunks, model_images, normalise, one_hot,
                     score_model)


def input_gradients(model, images, classes, target=class_score):
    """d target / d image for each (H, W, C) image in [0, 1] and its class, many images per compiled call. The
    gradient is with respect to the [0, 1] image, whatever scale the model takes (see `feeding`)."""
    images = np.asarray(images, np.float32)
    scores = score_model(model)
    run = gradient_function(scores, target)
    scale = np.float32(model_input(model).pixel_scale)

    def chunk(x, w):
        _, grads = run([model_images(model, x)], w)
        return grads.reshape(x.shape) * scale  # the chain rule through to_model's scaling (and channel axis)

    return in_chunks(chunk, images, one_hot(classes, scores.output.shape[-1]), size=chunk_size(images.shape[1:]))


def gradients(model, images, classes):
    """Saliency: the signed gradient of the class score with respect to each input value."""
    return input_gradients(model, images, classes)


def smoothgrad(model, images, classes, samples=25, noise=0.15, seed=0):
    """The mean gradient over `samples` copies of each image with Gaussian noise of standard deviation `noise`
    (a share of the [0, 1] range; the paper's 10-20%). Every image gets the same `samples` draws of noise, so an
    image's map does not depend on the others in its batch."""
    if not (isinstance(samples, int) and samples >= 1) or not noise >= 0:
        raise ConfigError(f"smoothgrad needs a whole number of samples >= 1 and noise >= 0, not samples {samples!r}, "
                          f"noise {noise!r}")
    images = np.asarray(images, np.float32)
    rng = np.random.default_rng(seed)
    noisy = images[:, None] + rng.normal(0, noise, (1, samples, *images.shape[1:])).astype(np.float32)
    grads = input_gradients(model, noisy.reshape(-1, *images.shape[1:]), np.repeat(classes, samples))
    return grads.reshape(noisy.shape).mean(axis=1)


def saliency(model, image, class_index=None) -> np.ndarray:
    """Absolute gradient of the class score with respect to each input pixel, (H, W) in [0, 1] (the largest over a
    colour image's channels): the heat map the report and the web app draw."""
    images = np.asarray(image, np.float32)[None]
    grads = np.abs(gradients(model, images, explained_classes(model, images, class_index)))[0]
    return normalise(grads.max(axis=-1))
