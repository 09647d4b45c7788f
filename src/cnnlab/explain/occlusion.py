"""Occlusion (Zeiler and Fergus, 2014): cover one patch of the input at a time with the baseline colour and watch
the class probability fall. No gradients, so it explains any model exactly as it predicts, at one model call per
patch position (the positions of as many images as fill a model call in one)."""

import numpy as np

from ..errors import ConfigError
from .scores import chunk_size, class_probabilities


def default_patch(size) -> int:
    """About a seventh of the shorter side (4 pixels of MNIST's 28), at least 1."""
    return max(1, round(min(size) / 7))


def starts(length, patch, stride):
    """Patch offsets along one axis, the last one flush with the edge, so that every pixel is covered."""
    last = max(length - patch, 0)
    return sorted(set(range(0, last + 1, stride)) | {last})


def occlusion(model, images, classes, patch=None, stride=None, fill=0.0):
    """(N, H, W): for each pixel, the mean drop of the class probability when a `patch` x `patch` square over it is
    set to `fill` (0: black), the squares `stride` apart (default: half a patch). Signed: negative where covering
    raises the probability."""
    images = np.asarray(images, np.float32)
    height, width = images.shape[1:3]
    patch = default_patch((height, width)) if patch is None else int(patch)
    stride = max(1, patch // 2) if stride is None else int(stride)
    if not (1 <= patch <= min(height, width)) or not 1 <= stride <= patch:
        raise ConfigError(f"occlusion needs 1 <= patch <= {min(height, width)} (the image's shorter side) and "
                          f"1 <= stride <= patch (a longer stride leaves pixels no square covers), not patch {patch}, "
                          f"stride {stride}")
    windows = [(top, left) for top in starts(height, patch, stride) for left in starts(width, patch, stride)]
    classes = np.asarray(classes)
    count = np.zeros((height, width))
    for top, left in windows:
        count[top:top + patch, left:left + patch] += 1
    uncovered = class_probabilities(model, images, classes)
    together = max(1, chunk_size(images.shape[1:]) // len(windows))  # images whose windows fill a model call
    maps = []
    for first in range(0, len(images), together):
        group = images[first:first + together]
        covered = np.repeat(group, len(windows), axis=0)  # each image's copies, one a window
        for k, (top, left) in enumerate(windows):
            covered[k::len(windows), top:top + patch, left:left + patch] = fill
        drops = uncovered[first:first + together, None] - class_probabilities(
            model, covered, np.repeat(classes[first:first + together], len(windows))).reshape(len(group), -1)
        for image_drops in drops:
            total = np.zeros((height, width))
            for drop, (top, left) in zip(image_drops, windows):
                total[top:top + patch, left:left + patch] += drop
            maps.append(total / count)
    return np.array(maps, np.float32)
