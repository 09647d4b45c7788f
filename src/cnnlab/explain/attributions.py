"""One entry point for every attribution method: which pixels of an input a class depends on, for a batch.

    import cnnlab
    maps = cnnlab.attributions(model, images, "integrated_gradients", steps=64)   # (N, H, W, C), signed
    heat = cnnlab.attributions(model, image[None], "gradcam")[0]                    # (H, W) in [0, 1]

Gradient methods (saliency, smoothgrad, integrated_gradients) give signed maps of the input's shape; the CAM family
(gradcam, gradcam++, scorecam) maps of (N, H, W) in [0, 1]; occlusion the (N, H, W) drop of the class probability.
`pixel_heat` makes any of them one (N, H, W) importance per pixel, for figures and for the faithfulness curves.
"""

import inspect

import numpy as np

from ..config import ATTRIBUTION_METHODS
from ..data import as_float_images
from ..errors import ConfigError, ImageError
from ..feeding import model_input
from ..inspection import conv_layers
from .cam import gradcam, gradcam_plus_plus, scorecam
from .integrated_gradients import integrated_gradients
from .occlusion import occlusion
from .saliency import gradients, smoothgrad
from .scores import explained_classes

METHODS = dict(zip(ATTRIBUTION_METHODS, (gradcam, gradcam_plus_plus, scorecam, gradients, smoothgrad,
                                         integrated_gradients, occlusion)))
NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM", "saliency": "saliency",
         "smoothgrad": "SmoothGrad", "integrated_gradients": "Integrated Gradients", "occlusion": "occlusion"}
INPUT_SHAPED = ("saliency", "smoothgrad", "integrated_gradients")
NEEDS_CONV = ("gradcam", "gradcam++", "scorecam")  # they weigh the last conv layer's maps


def usable_methods(model, methods=ATTRIBUTION_METHODS) -> list:
    """`methods` without the CAM ones when the model has no conv layer for them to weigh."""
    has_conv = bool(conv_layers(model))
    return [m for m in methods if has_conv or m not in NEEDS_CONV]


def method_options(method) -> list:
    """The keyword options a method takes (steps, baseline, patch, ...)."""
    return list(inspect.signature(METHODS[method]).parameters)[3:]


def attributions(model, images, method, class_index=None, **options) -> np.ndarray:
    """Attribution maps of (N, H, W, C) images in [0, 1] for `class_index` (one class for all, one per image, or
    None: each image's predicted class). Options: smoothgrad `samples`, `noise`, `seed`; integrated_gradients
    `steps`, `baseline` ("black", "blur" or an image); occlusion `patch`, `stride`."""
    if method not in METHODS:
        raise ConfigError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    unknown = sorted(set(options) - set(method_options(method)))
    if unknown:
        takes = ", ".join(method_options(method)) or "no options"
        raise ConfigError(f"{method} takes {takes}, not {', '.join(unknown)}")
    images = np.asarray(images)
    images = as_float_images(images) if images.ndim == 4 else images.astype(np.float32)  # uint8 pixels scaled
    shape = model_input(model).shape
    if images.ndim != 4 or images.shape[1:] != shape:
        raise ImageError(f"attributions take a batch of images (N, {', '.join(map(str, shape))}) in [0, 1], as the "
                         f"model does, not {images.shape}; one image is image[None]")
    if not len(images):
        raise ImageError("attributions were given no images (an empty batch)")
    if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 1:
        hint = "; 0..255 pixels are / 255" if np.nanmax(images) > 1.5 else ""
        raise ImageError(f"attributions take images in [0, 1] (cnnlab applies the model's own scaling), not values "
                         f"from {np.nanmin(images):g} to {np.nanmax(images):g}"
                         f"{'' if np.all(np.isfinite(images)) else ' and NaN or infinity'}{hint}")
    if method in NEEDS_CONV and not conv_layers(model):
        raise ConfigError(f"{method} weighs the last conv layer's maps and {model.name} has no conv layer; use "
                          f"saliency, smoothgrad, integrated_gradients or occlusion")
    return METHODS[method](model, images, explained_classes(model, images, class_index), **options)


def pixel_heat(maps, method) -> np.ndarray:
    """(N, H, W) importance per pixel: a CAM or occlusion map as it is; a gradient's largest magnitude over the
    channels (its sign says which way the score moves, not whether the pixel matters); Integrated Gradients' sum
    over the channels (its signed contribution to the probability)."""
    maps = np.asarray(maps, np.float32)
    if method == "integrated_gradients":
        return maps.sum(axis=-1)
    if method in INPUT_SHAPED:
        return np.abs(maps).max(axis=-1)
    return maps
