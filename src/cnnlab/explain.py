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

from .config import IMAGE_SIZE
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


def predicted_class(model, image):
    return int(np.argmax(model.predict(np.asarray(image, np.float32)[None], verbose=0)[0]))


def grad_cam(model, image, class_index=None) -> np.ndarray:
    """Grad-CAM heat map (28, 28) in [0, 1] for one (28, 28, 1) image, from the last conv layer."""
    image = np.asarray(image, np.float32).reshape(1, IMAGE_SIZE, IMAGE_SIZE, 1)
    class_index = predicted_class(model, image[0]) if class_index is None else class_index
    model = network(model)
    layer = conv_layers(model)[-1]
    activations = ops.convert_to_numpy(keras.Model(model.inputs, layer.output)([image], training=False))  # predict() costs ~0.1 s
    head = _layers_after(model, layer)
    grads = gradient(lambda a: _class_score(head, a, class_index), activations)
    weights = grads.mean(axis=(1, 2), keepdims=True)  # one importance per channel
    cam = np.maximum((weights * activations).sum(axis=-1)[0], 0)
    cam = np.asarray(ops.image.resize(cam[None, :, :, None], (IMAGE_SIZE, IMAGE_SIZE), interpolation="bilinear"))[0, :, :, 0]
    return _normalise(cam)


def saliency(model, image, class_index=None) -> np.ndarray:
    """Absolute gradient of the class score with respect to each input pixel, (28, 28) in [0, 1]."""
    image = np.asarray(image, np.float32).reshape(1, IMAGE_SIZE, IMAGE_SIZE, 1)
    class_index = predicted_class(model, image[0]) if class_index is None else class_index
    # a functional model lists its InputLayer among its layers; the chain starts after it
    layers = [layer for layer in network(model).layers if not isinstance(layer, keras.layers.InputLayer)]
    grads = gradient(lambda x: _class_score(layers, x, class_index), image)
    return _normalise(np.abs(grads[0, :, :, 0]))


def _normalise(heat):
    heat = np.nan_to_num(np.asarray(heat, np.float64))
    top = heat.max()
    return (heat / top if top > 0 else heat).astype(np.float32)
