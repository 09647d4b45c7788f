"""Grad-CAM: which regions of the input the last conv layer's evidence for a class comes from."""

import functools

import keras
import numpy as np
from keras import ops

from ..graph import output_layer, rebuild
from ..inspection import conv_layers, network
from .gradient import gradient
from .scores import class_scores, model_image, normalise, predicted_class


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


def grad_cam(model, image, class_index=None) -> np.ndarray:
    """Grad-CAM heat map (H, W) in [0, 1] for one (H, W, C) image, from the last conv layer (inside nested models
    too)."""
    class_index = predicted_class(model, image) if class_index is None else class_index
    size = np.shape(image)[:2]
    batch = ops.convert_to_tensor(model_image(model, image))
    cam_model = _cam_model(model)
    zero = np.zeros((1, *cam_model.inputs[1].shape[1:]), np.float32)
    # a direct call, not predict(): predict costs ~0.1 s per call
    activations = ops.convert_to_numpy(cam_model([batch, ops.convert_to_tensor(zero)], training=False)[0])
    activations = activations.astype(np.float32)
    grads = gradient(lambda offset: cam_model([batch, offset], training=False)[1][:, class_index], zero)
    weights = grads.mean(axis=(1, 2), keepdims=True)  # one importance per channel
    cam = np.maximum((weights * activations).sum(axis=-1)[0], 0)
    cam = np.asarray(ops.image.resize(cam[None, :, :, None], size, interpolation="bilinear"))[0, :, :, 0]
    return normalise(cam)


