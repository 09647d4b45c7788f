"""How far an explanation can be trusted: two tests that do not need to know the right answer.

Deletion and insertion (Petsiuk et al., 2018, RISE): remove the pixels a map calls most important first, in steps,
and watch the class probability fall (a faithful map makes it fall fast: a small area under the curve); or add them
first to a blank image and watch it rise (a large area). A random ranking is the reference.

The sanity check (Adebayo et al., 2018): a map that explains the model must change when the model's weights are
re-initialised. Maps of the same images from the trained and the randomised model are compared by Spearman's rank
correlation: near 0, the method depends on what the model learned; near 1, it mostly shows the input (an edge
detector would pass for it). Randomised all at once, or cascading from the output layer down.

    deletion, insertion = deletion_insertion(model, images, heats, classes)   # (N, steps + 1) each
    area(deletion).mean()
    sanity_check(model, images, "saliency", classes)                           # [("all layers", 0.08)]
"""

import functools
import time

import keras
import numpy as np

from ..inspection import network, untrained_model, weighted_layers
from .attributions import NAMES, attributions, pixel_heat
from .integrated_gradients import baseline_images
from .scores import class_probabilities

STEPS = 20  # points of a deletion or insertion curve after its start


def ranked_masks(heats, steps=STEPS):
    """(N, steps + 1, H, W) masks: True for the most important share k / steps of each map's pixels."""
    heats = np.asarray(heats, np.float64)
    n, pixels = len(heats), int(np.prod(heats.shape[1:]))
    ranks = np.empty((n, pixels), np.int64)
    ranks[np.arange(n)[:, None], np.argsort(-heats.reshape(n, -1), axis=1, kind="stable")] = np.arange(pixels)
    counts = np.round(np.linspace(0, pixels, steps + 1)).astype(int)
    return (ranks[:, None, :] < counts[None, :, None]).reshape(n, steps + 1, *heats.shape[1:])


def deletion_insertion(model, images, heats, classes, steps=STEPS, baseline="black"):
    """The class probability as the most important pixels (by `heats`, (N, H, W)) are replaced by the baseline
    (deletion) and as they are put into the baseline (insertion): two (N, steps + 1) arrays, all the perturbed
    images through the model in a few batched calls."""
    images = np.asarray(images, np.float32)
    baselines = baseline_images(images, baseline)
    masks = ranked_masks(heats, steps)[..., None]  # (N, steps + 1, H, W, 1)
    deleted = np.where(masks, baselines[:, None], images[:, None])
    inserted = np.where(masks, images[:, None], baselines[:, None])
    both = np.concatenate([deleted, inserted], axis=1).reshape(-1, *images.shape[1:])
    probabilities = class_probabilities(model, both, np.repeat(classes, 2 * (steps + 1)))
    probabilities = probabilities.reshape(len(images), 2, steps + 1)
    return probabilities[:, 0], probabilities[:, 1]


def area(curves):
    """Area under each curve, over the share of pixels from 0 to 1 (trapezoidal rule)."""
    curves = np.asarray(curves, np.float64)
    return (curves[:, 1:] + curves[:, :-1]).sum(axis=1) / (2 * (curves.shape[1] - 1))


def random_heats(shape, seed=0):
    """A random ranking of the pixels: the reference a faithful map must beat."""
    return np.random.default_rng(seed).random(shape)


@functools.lru_cache(maxsize=8)
def randomised(model, layers=None, seed=0) -> keras.Model:
    """A copy of the explained network (an ensemble's first member) with the weights of its top `layers` layers
    that have weights (None: all of them) drawn again from their initialisers; the model itself is not changed.
    One copy per (model, layers, seed), kept: every method is checked against the same one, compiled once."""
    return untrained_model(model, seed, top=layers)


def weighted_layer_names(model) -> list:
    """The names of the layers `randomised(model, layers)` draws again, bottom to top."""
    return [layer.name for layer in weighted_layers(network(model))]


def rank_correlation(a, b) -> np.ndarray:
    """Spearman's rank correlation of each pair of (N, H, W) maps; 0 where either map is constant (it ranks
    nothing)."""
    from scipy.stats import rankdata

    a, b = (rankdata(np.asarray(x, np.float64).reshape(len(x), -1), axis=1) for x in (a, b))
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    scale = np.sqrt((a ** 2).sum(axis=1) * (b ** 2).sum(axis=1))
    return np.where(scale > 0, (a * b).sum(axis=1) / np.where(scale > 0, scale, 1), 0.0)


def sanity_check(model, images, method, classes, cascading=False, seed=0, heat=None, **options) -> list:
    """[(what was randomised, mean rank correlation of the magnitudes of the trained and randomised models' maps)],
    for each image's class as the trained model has it: one row for all layers at once, or with `cascading` one per
    step from the output layer down (the last: all layers). `heat`: the trained model's pixel heat of these images
    by this method, when the caller has it already."""
    if heat is None:
        heat = pixel_heat(attributions(model, images, method, classes, **options), method)
    heat = np.abs(heat)
    names = weighted_layer_names(model)
    steps = range(1, len(names) + 1) if cascading else [None]
    rows = []
    for top in steps:
        random_model = randomised(model, top, seed)
        random_heat = np.abs(pixel_heat(attributions(random_model, images, method, classes, **options), method))
        label = "all layers" if top in (None, len(names)) else f"{names[-top]} and above"
        rows.append((label, float(rank_correlation(heat, random_heat).mean())))
    return rows


def compare_methods(model, images, classes, methods, options=None, steps=STEPS, sanity=False) -> dict:
    """Each method's maps of `images` for `classes`, with its time per image, its deletion and insertion curves
    (each image's, (N, steps + 1)) and areas (their means), and with `sanity` its rank correlation with the
    maps of the model with all weights randomised. `options`: {method: its options}. The key "random" is the
    reference ranking (no maps)."""
    options = options or {}
    results = {}
    for method in [*methods, "random"]:
        started = time.perf_counter()
        if method == "random":
            maps, heat = None, random_heats(np.shape(images)[:3])
        else:
            maps = attributions(model, images, method, classes, **options.get(method, {}))
            heat = pixel_heat(maps, method)
        seconds = (time.perf_counter() - started) / len(images)
        deletion, insertion = deletion_insertion(model, images, heat, classes, steps)
        results[method] = {"name": NAMES.get(method, method), "maps": maps, "heat": heat,
                           "seconds_per_image": seconds, "deletion": deletion, "insertion": insertion,
                           "deletion_area": float(area(deletion).mean()),
                           "insertion_area": float(area(insertion).mean())}
        if sanity and method != "random":
            results[method]["sanity"] = sanity_check(model, images, method, classes, heat=heat,
                                                     **options.get(method, {}))[0][1]
    return results
