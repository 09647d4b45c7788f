"""Where the model looks: Grad-CAM and gradient saliency, on any Keras backend.

Gradients come from the backend's own autodiff (TensorFlow's tape, jax.grad or torch.autograd), picked
at run time, since Keras has no backend-neutral gradient; the model's arithmetic is keras.ops and the rest NumPy,
so the same code runs on every backend.
Both explain the class *score* (the last layer before its softmax), as Grad-CAM prescribes: gradients of
a saturated probability are close to zero and show nothing. Any model shape works (chains, branches, a nested
backbone): `graph.rebuild` runs the model as one flat graph with the softmax taken off. An ensemble is explained by
its first member, for the class the whole ensemble predicts.
"""

import functools

import keras
import numpy as np
from keras import ops

from .feeding import model_input, to_model
from .graph import output_layer, rebuild
from .inspection import conv_layers, network


def gradient(fn, x):
    """d sum(fn(x)) / dx with the active backend's autodiff; `x` is a NumPy array, the result too."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = ops.sum(fn(x))
        return np.asarray(tape.gradient(y, x))
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: ops.sum(fn(v)))(ops.convert_to_tensor(x)))
    if backend == "torch":  # keras.ops tensors are torch tensors here
        x = ops.convert_to_tensor(x).detach().requires_grad_(True)
        ops.sum(fn(x)).backward()
        return x.grad.detach().cpu().numpy()
    raise NotImplementedError(f"no gradient for Keras backend {backend!r}")


def _scores(layer, rebuilt, *args, **kwargs):
    """The output layer's call without its softmax: class scores, as Grad-CAM prescribes."""
    if isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.softmax:
        logits = ops.matmul(args[0], layer.kernel)
        return logits + layer.bias if layer.use_bias else logits
    if isinstance(layer, keras.layers.Softmax) or (isinstance(layer, keras.layers.Activation)
                                                   and layer.activation is keras.activations.softmax):
        return args[0]
    return layer(*args, **kwargs)  # a model that already ends in scores


@functools.lru_cache(maxsize=8)
def _score_model(model):
    """image -> class scores of `model` (of an ensemble's first member)."""
    net = network(model)
    rebuilt = rebuild(net, patch={output_layer(net): _scores})
    return keras.Model(rebuilt.input, rebuilt.output)


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

    rebuilt = rebuild(net, taps=[layer], patch={layer: shifted, output_layer(net): _scores})
    return keras.Model([rebuilt.input, offset], [rebuilt.taps[layer], rebuilt.output])


def _model_image(model, image):
    """One (H, W, C) image in [0, 1] as a batch of one, as the model takes it (see `feeding`)."""
    return to_model(model_input(model), np.asarray(image, np.float32)[None])


def predicted_class(model, image):
    return int(np.argmax(model.predict(_model_image(model, image), verbose=0)[0]))


def grad_cam(model, image, class_index=None) -> np.ndarray:
    """Grad-CAM heat map (H, W) in [0, 1] for one (H, W, C) image, from the last conv layer (inside nested models
    too)."""
    class_index = predicted_class(model, image) if class_index is None else class_index
    size = np.shape(image)[:2]
    batch = ops.convert_to_tensor(_model_image(model, image))
    cam_model = _cam_model(model)
    zero = np.zeros((1, *cam_model.inputs[1].shape[1:]), np.float32)
    activations = ops.convert_to_numpy(cam_model([batch, ops.convert_to_tensor(zero)], training=False)[0])  # not predict(): ~0.1 s
    activations = activations.astype(np.float32)
    grads = gradient(lambda offset: cam_model([batch, offset], training=False)[1][:, class_index], zero)
    weights = grads.mean(axis=(1, 2), keepdims=True)  # one importance per channel
    cam = np.maximum((weights * activations).sum(axis=-1)[0], 0)
    cam = np.asarray(ops.image.resize(cam[None, :, :, None], size, interpolation="bilinear"))[0, :, :, 0]
    return _normalise(cam)


def saliency(model, image, class_index=None) -> np.ndarray:
    """Absolute gradient of the class score with respect to each input pixel, (H, W) in [0, 1] (the largest over a
    colour image's channels)."""
    class_index = predicted_class(model, image) if class_index is None else class_index
    scores = _score_model(model)
    grads = np.abs(gradient(lambda x: scores(x, training=False)[:, class_index], _model_image(model, image)))[0]
    return _normalise(grads.max(axis=-1) if grads.ndim == 3 else grads)


def _normalise(heat):
    heat = np.nan_to_num(np.asarray(heat, np.float64))
    top = heat.max()
    return (heat / top if top > 0 else heat).astype(np.float32)
