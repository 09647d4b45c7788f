"""The CAM family: which regions of the input the last conv layer's evidence for a class comes from.

All three weigh the last conv layer's feature maps and sum them into one coarse map, upsampled to the input:
Grad-CAM (Selvaraju et al., 2017) by the mean gradient of the class score over each map; Grad-CAM++ (Chattopadhyay
et al., 2018) by its positive gradients, each position weighted so that several small regions of evidence count as
much as one large one; Score-CAM (Wang et al., 2020) without gradients, by the class probability of the input
masked by each map. Maps are (N, H, W) in [0, 1], each scaled to its own maximum.
"""

import functools

import keras
import numpy as np
from keras import ops

from ..graph import output_layer, rebuild
from ..inspection import conv_layers, network
from .gradient import gradient_function
from .scores import (chunk_size, class_probabilities, class_score, class_scores, explained_classes, in_chunks,
                     model_images, normalise, one_hot)


@functools.lru_cache(maxsize=8)
def _cam_model(model):
    """[image, offset] -> [the last conv layer's output, class scores], where the offset is added to that output.
    The gradient of a score with respect to the offset, at 0, is its gradient with respect to the activations,
    wherever the layer sits: in a chain, after branches, inside a nested backbone."""
    net = network(model)
    layer = conv_layers(net)[-1]
    offset = keras.Input(rebuild(net, taps=[layer]).taps[layer].shape[1:], name="offset")

    def shifted(conv, rebuilt, *args, **kwargs):
        return conv(*args, **kwargs) + offset

    rebuilt = rebuild(net, taps=[layer], patch={layer: shifted, output_layer(net): class_scores})
    return keras.Model([rebuilt.input, offset], [rebuilt.taps[layer], rebuilt.output])


def activations_and_gradients(model, images, classes):
    """The last conv layer's activations (N, h, w, k) and the gradients of each image's class score with respect
    to them, many images per compiled call."""
    cam_model = _cam_model(model)
    offset_shape = tuple(cam_model.inputs[1].shape[1:])
    run = gradient_function(cam_model, class_score, wrt=1)
    weights = one_hot(classes, cam_model.outputs[1].shape[-1])

    def chunk(x, w):
        (activations, _), grads = run([model_images(model, x), np.zeros((len(x), *offset_shape), np.float32)], w)
        return activations, grads

    return in_chunks(chunk, np.asarray(images, np.float32), weights, size=chunk_size(np.shape(images)[1:]))


def last_conv_activations(model, images):
    """The last conv layer's activations (N, h, w, k), from a forward pass only."""
    cam_model = _cam_model(model)
    offset_shape = tuple(cam_model.inputs[1].shape[1:])

    def chunk(x):
        return np.asarray(cam_model.predict_on_batch([model_images(model, x),
                                                      np.zeros((len(x), *offset_shape), np.float32)])[0])

    return in_chunks(chunk, np.asarray(images, np.float32), size=chunk_size(np.shape(images)[1:]))


def upsampled(maps, size):
    """(N, h, w) or (N, h, w, k) maps resized to the input's (H, W), bilinearly."""
    maps = np.asarray(maps, np.float32)
    channels = maps.ndim == 4
    resized = ops.convert_to_numpy(ops.image.resize(maps if channels else maps[..., None], size,
                                                    interpolation="bilinear"))
    return resized if channels else resized[..., 0]


def gradcam(model, images, classes):
    activations, grads = activations_and_gradients(model, images, classes)
    weights = grads.mean(axis=(1, 2), keepdims=True)  # one importance per channel
    cams = np.maximum((weights * activations).sum(axis=-1), 0)
    return normalise(upsampled(cams, np.shape(images)[1:3]))


def gradcam_plus_plus(model, images, classes):
    """Grad-CAM++'s weights, with its closed form for the second and third derivatives of exp(score): the first
    derivative's square and cube."""
    activations, grads = activations_and_gradients(model, images, classes)
    squared, cubed = grads ** 2, grads ** 3
    denominator = 2 * squared + activations.sum(axis=(1, 2), keepdims=True) * cubed
    alphas = np.where(denominator != 0, squared / np.where(denominator != 0, denominator, 1), 0)
    weights = (alphas * np.maximum(grads, 0)).sum(axis=(1, 2), keepdims=True)
    cams = np.maximum((weights * activations).sum(axis=-1), 0)
    return normalise(upsampled(cams, np.shape(images)[1:3]))


def scorecam(model, images, classes):
    """Each channel's map, upsampled and scaled to [0, 1], masks the input; its weight is the class probability of
    the masked input (as tf-keras-vis weighs them). One model call for all of an image's channels."""
    images = np.asarray(images, np.float32)
    masks = upsampled(last_conv_activations(model, images), images.shape[1:3])  # (N, H, W, k)
    low, high = masks.min(axis=(1, 2), keepdims=True), masks.max(axis=(1, 2), keepdims=True)
    masks = np.moveaxis(np.where(high > low, (masks - low) / np.where(high > low, high - low, 1), 0), -1, 1)
    cams = []
    for image, image_masks, class_index in zip(images, masks, classes):  # (k, H, W) masks each
        weights = class_probabilities(model, image * image_masks[..., None], np.full(len(image_masks), class_index))
        cams.append(np.maximum(np.einsum("k,khw->hw", weights, image_masks), 0))
    return normalise(np.array(cams))


def grad_cam(model, image, class_index=None) -> np.ndarray:
    """Grad-CAM heat map (H, W) in [0, 1] for one (H, W, C) image, from the last conv layer (inside nested models
    too), for the predicted class unless `class_index` says another."""
    images = np.asarray(image, np.float32)[None]
    return gradcam(model, images, explained_classes(model, images, class_index))[0]
