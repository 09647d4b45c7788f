"""Occlusion (Zeiler and Fergus, 2014): cover one patch of the input at a time with the baseline colour and watch
the class probability fall. No gradients, so it explains any model exactly as it predicts, at one model call per
patch position (all of an image's positions in a few batched calls)."""

import numpy as np

from ..errors import ConfigError
from .scores import class_probabilities


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
    if not (1 <= patch <= min(height, width)) or stride < 1:
        raise ConfigError(f"occlusion needs 1 <= patch <= {min(height, width)} (the image's shorter side) and "
                         f"stride >= 1, not patch {patch}, stride {stride}")
    windows = [(top, left) for top in starts(height, patch, stride) for left in starts(width, patch, stride)]
    maps = []
    for image, class_index in zip(images, classes):
        covered = np.repeat(image[None], len(windows), axis=0)
        for k, (top, left) in enumerate(windows):
            covered[k, top:top + patch, left:left + patch] = fill
        drops = class_probabilities(model, image[None], [class_index])[0] \
            - class_probabilities(model, covered, np.full(len(windows), class_index))
        total, count = np.zeros((height, width)), np.zeros((height, width))
        for drop, (top, left) in zip(drops, windows):
            total[top:top + patch, left:left + patch] += drop
            count[top:top + patch, left:left + patch] += 1
        maps.append(total / count)
    return np.array(maps, np.float32)
