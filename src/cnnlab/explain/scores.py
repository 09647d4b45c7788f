"""The model as the attribution methods see it: an image in [0, 1] in, class scores (before the softmax) out."""

import functools

import keras
import numpy as np
from keras import ops

from ..feeding import model_input, to_model
from ..graph import output_layer, rebuild
from ..inspection import network


def class_scores(layer, rebuilt, *args, **kwargs):
    """The output layer's call without its softmax: class scores, as Grad-CAM prescribes."""
    if isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.softmax:
        logits = ops.matmul(args[0], layer.kernel)
        return logits + layer.bias if layer.use_bias else logits
    if isinstance(layer, keras.layers.Softmax) or (isinstance(layer, keras.layers.Activation)
                                                   and layer.activation is keras.activations.softmax):
        return args[0]
    return layer(*args, **kwargs)  # a model that already ends in scores


@functools.lru_cache(maxsize=8)
def score_model(model):
    """image -> class scores of `model` (of an ensemble's first member)."""
    net = network(model)
    rebuilt = rebuild(net, patch={output_layer(net): class_scores})
    return keras.Model(rebuilt.input, rebuilt.output)


def model_image(model, image):
    """One (H, W, C) image in [0, 1] as a batch of one, as the model takes it (see `feeding`)."""
    return to_model(model_input(model), np.asarray(image, np.float32)[None])


def predicted_class(model, image):
    return int(np.argmax(model.predict(model_image(model, image), verbose=0)[0]))




def normalise(heat):
    heat = np.nan_to_num(np.asarray(heat, np.float64))
    top = heat.max()
    return (heat / top if top > 0 else heat).astype(np.float32)
