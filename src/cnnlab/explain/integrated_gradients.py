"""Integrated Gradients (Sundararajan et al., 2017): the gradient averaged along the straight path from a baseline
image to the input, times their difference. Its attributions are complete: they add up to the change of what is
explained from the baseline to the input. What is explained here is the class *probability* (not the score, as the
other gradient methods): its change is what the deletion and insertion curves watch, and integrating along the path
gets past the saturation that makes the probability's gradient at the input alone useless.
"""

import numpy as np

from ..errors import ConfigError, ImageError
from .saliency import input_gradients
from .scores import chunk_size, class_probability

BLUR_SIGMA = 1 / 8  # the blurred baseline's Gaussian, as a share of the image's longer side


def baseline_images(images, baseline="black"):
    """The images an input is compared with: "black" (zeros), "blur" (the input blurred: its colours without its
    shapes) or one (H, W, C) image in [0, 1] for all."""
    images = np.asarray(images, np.float32)
    if isinstance(baseline, str):
        if baseline == "black":
            return np.zeros_like(images)
        if baseline == "blur":
            from scipy.ndimage import gaussian_filter

            sigma = BLUR_SIGMA * max(images.shape[1:3])
            return gaussian_filter(images, sigma=(0, sigma, sigma, 0), mode="nearest").astype(np.float32)
        raise ConfigError(f"baseline must be 'black', 'blur' or an image, not {baseline!r}")
    baseline = np.asarray(baseline, np.float32)
    if baseline.shape != images.shape[1:]:
        raise ImageError(f"the baseline image is {'x'.join(map(str, baseline.shape))}, but the inputs are "
                         f"{'x'.join(map(str, images.shape[1:]))}; give one of the inputs' size and colours")
    return np.broadcast_to(baseline, images.shape).copy()


def integrated_gradients(model, images, classes, steps=64, baseline="black"):
    """Signed attributions of the input's shape, with the trapezoidal rule over `steps` intervals (for a smooth
    model the error falls as 1 / steps squared; a ReLU network's kinks make it fall less evenly); the `steps + 1`
    points of as many images as fill a model call go through it together."""
    if not (isinstance(steps, (int, np.integer)) and steps >= 1):
        raise ConfigError(f"steps must be a whole number of at least 1, not {steps!r}")
    images = np.asarray(images, np.float32)
    baselines = baseline_images(images, baseline)
    alphas = np.linspace(0, 1, int(steps) + 1, dtype=np.float32)
    trapezoid = np.full(len(alphas), 1 / steps, np.float32)
    trapezoid[[0, -1]] /= 2
    classes = np.asarray(classes)
    together = max(1, chunk_size(images.shape[1:]) // len(alphas))  # images whose paths fill a model call
    maps = []
    for first in range(0, len(images), together):
        x, start = images[first:first + together], baselines[first:first + together]
        paths = start[:, None] + alphas[None, :, None, None, None] * (x - start)[:, None]  # (n, steps + 1, H, W, C)
        grads = input_gradients(model, paths.reshape(-1, *x.shape[1:]),
                                np.repeat(classes[first:first + together], len(alphas)), target=class_probability)
        maps.append((x - start) * np.einsum("s,nshwc->nhwc", trapezoid, grads.reshape(paths.shape)))
    return np.concatenate(maps).astype(np.float32)
