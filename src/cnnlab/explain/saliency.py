"""Gradient saliency: how much each input pixel moves the class score."""

import numpy as np

from .gradient import gradient
from .scores import model_image, normalise, predicted_class, score_model


def saliency(model, image, class_index=None) -> np.ndarray:
    """Absolute gradient of the class score with respect to each input pixel, (H, W) in [0, 1] (the largest over a
    colour image's channels)."""
    class_index = predicted_class(model, image) if class_index is None else class_index
    scores = score_model(model)
    grads = np.abs(gradient(lambda x: scores(x, training=False)[:, class_index], model_image(model, image)))[0]
    return normalise(grads.max(axis=-1) if grads.ndim == 3 else grads)
