"""Where the model looks: Grad-CAM and gradient saliency, on any Keras backend.

Gradients come from the backend's own autodiff (TensorFlow's tape, jax.grad or torch.autograd), picked
at run time, since Keras has no backend-neutral gradient; the model's arithmetic is keras.ops and the rest NumPy,
so the same code runs on every backend.
Both explain the class *score* (the last layer before its softmax), as Grad-CAM prescribes: gradients of
a saturated probability are close to zero and show nothing. An ensemble is explained by its first member, for the
class the whole ensemble predicts.
"""

import keras
import numpy as np
from keras import ops

from .feeding import model_input, to_model
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


def _layers_after(model, layer):
    layers = model.layers
    return layers[layers.index(layer) + 1:]


def _class_score(layers, a, class_index):
    """Run `a` through `layers` (a chain, as in Sequential CNNs) and return the pre-softmax score of the class."""
    for layer in layers[:-1]:
        a = layer(a, training=False)
    last = layers[-1]
    if isinstance(last, keras.layers.Dense) and last.activation is keras.activations.softmax:
        logits = ops.matmul(a, last.kernel) + (last.bias if last.use_bias else 0)
    elif isinstance(last, keras.layers.Softmax):
        logits = a
    else:  # a model that already ends in scores
        logits = last(a, training=False)
    return logits[:, class_index]


def _model_image(model, image):
    """One (H, W, C) image in [0, 1] as a batch of one, as the model takes it (see `feeding`)."""
    return to_model(model_input(model), np.asarray(image, np.float32)[None])


def predicted_class(model, image):
    return int(np.argmax(model.predict(_model_image(model, image), verbose=0)[0]))


def grad_cam(model, image, class_index=None) -> np.ndarray:
    """Grad-CAM heat map (H, W) in [0, 1] for one (H, W, C) image, from the last conv layer."""
    class_index = predicted_class(model, image) if class_index is None else class_index
    size = np.shape(image)[:2]
    batch = _model_image(model, image)
    model = network(model)
    layer = conv_layers(model)[-1]
    activations = ops.convert_to_numpy(keras.Model(model.inputs, layer.output)([batch], training=False))  # predict() costs ~0.1 s
    head = _layers_after(model, layer)
    grads = gradient(lambda a: _class_score(head, a, class_index), activations)
    weights = grads.mean(axis=(1, 2), keepdims=True)  # one importance per channel
    cam = np.maximum((weights * activations).sum(axis=-1)[0], 0)
    cam = np.asarray(ops.image.resize(cam[None, :, :, None], size, interpolation="bilinear"))[0, :, :, 0]
    return _normalise(cam)


def saliency(model, image, class_index=None) -> np.ndarray:
    """Absolute gradient of the class score with respect to each input pixel, (H, W) in [0, 1] (the largest over a
    colour image's channels)."""
    class_index = predicted_class(model, image) if class_index is None else class_index
    batch = _model_image(model, image)
    # a functional model lists its InputLayer among its layers; the chain starts after it
    layers = [layer for layer in network(model).layers if not isinstance(layer, keras.layers.InputLayer)]
    grads = np.abs(gradient(lambda x: _class_score(layers, x, class_index), batch))[0]
    return _normalise(grads.max(axis=-1) if grads.ndim == 3 else grads)


def _normalise(heat):
    heat = np.nan_to_num(np.asarray(heat, np.float64))
    top = heat.max()
    return (heat / top if top > 0 else heat).astype(np.float32)
