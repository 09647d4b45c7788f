"""The model as the attribution methods see it: images in [0, 1] in, class scores (before the softmax) out, in
batches.

The explained network is the model itself, or an ensemble's first member (`inspection.network`); its class
probability is the softmax of its scores, so a model that ends in logits is explained like one that ends in a
softmax.
"""

import functools

import keras
import numpy as np
from keras import ops

from ..errors import ConfigError
from ..feeding import model_input, to_model
from ..graph import output_layer, rebuild
from ..inspection import check_class_scores, network

BATCH_VALUES = 2 ** 21  # input values per model call: 2,600 MNIST images, 14 of 224x224x3
MAX_BATCH = 256


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


def class_score(outputs, weights):
    """Per image, the score of its class (`weights`: one-hot rows); the scores are a model's last output."""
    scores = outputs[-1] if isinstance(outputs, (list, tuple)) else outputs
    return ops.sum(scores * weights, axis=-1)


def class_probability(outputs, weights):
    """Per image, the probability of its class: the softmax of the scores."""
    scores = outputs[-1] if isinstance(outputs, (list, tuple)) else outputs
    return ops.sum(ops.softmax(scores, axis=-1) * weights, axis=-1)


def model_image(model, image):
    """One (H, W, C) image in [0, 1] as a batch of one, as the model takes it (see `feeding`)."""
    return model_images(model, np.asarray(image, np.float32)[None])


def model_images(model, images):
    """(N, H, W, C) images in [0, 1] as the model takes them (see `feeding`)."""
    return to_model(model_input(model), np.asarray(images, np.float32))


def explained_classes(model, images, class_index=None) -> np.ndarray:
    """One class per image: the given one(s), else the one the whole model predicts (an ensemble's too)."""
    count = check_class_scores(model).output_shape[-1]
    if class_index is None:
        predict = model.predict_on_batch
        outputs = in_chunks(lambda x: np.asarray(predict(model_images(model, x))), images,
                            size=chunk_size(images.shape[1:]))
        return outputs.argmax(axis=1)
    if np.ndim(class_index) and np.size(class_index) != len(images):
        raise ConfigError(f"class_index gives {np.size(class_index)} classes for {len(images)} images; give one "
                          f"class, one per image, or None (each image's predicted class)")
    if np.asarray(class_index).dtype.kind not in "iu":
        raise ConfigError(f"class index must be an int (one for all images, or one per image), not {class_index!r}")
    classes = np.broadcast_to(np.asarray(class_index), (len(images),)).astype(int)
    if np.any((classes < 0) | (classes >= count)):
        raise ConfigError(f"class index must be in 0..{count - 1}, not {class_index}")
    return classes


def predicted_class(model, image) -> int:
    """The class the whole model predicts for one (H, W, C) image in [0, 1]."""
    return int(explained_classes(model, np.asarray(image, np.float32)[None])[0])


def chunk_size(image_shape) -> int:
    return int(max(1, min(MAX_BATCH, BATCH_VALUES // int(np.prod(image_shape)))))


def in_chunks(fn, *arrays, size):
    """fn over the rows of `arrays` `size` at a time, the results joined: one model call per chunk. A short chunk is
    padded to a power of two (with copies of its last row), so a compiled function sees few batch shapes."""
    n = len(arrays[0])
    parts = []
    for start in range(0, n, size):
        rows = [a[start:start + size] for a in arrays]
        count = len(rows[0])
        padded = min(size, 1 << (count - 1).bit_length())
        if padded > count:
            rows = [np.concatenate([r, np.repeat(r[-1:], padded - count, axis=0)]) for r in rows]
        out = fn(*rows)
        parts.append([o[:count] for o in out] if isinstance(out, (list, tuple)) else out[:count])
    if isinstance(parts[0], list):
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
    return np.concatenate(parts)


@functools.lru_cache(maxsize=8)
def _probability_model(model):
    scores = score_model(model)
    return keras.Model(scores.input, ops.softmax(scores.output, axis=-1))


def class_probabilities(model, images, classes):
    """The explained network's probability of each image's class, (N,), for (N, H, W, C) images in [0, 1]: the
    measure of the perturbation methods and of the faithfulness curves, many images per model call."""
    images = np.asarray(images, np.float32)
    predict = _probability_model(model).predict_on_batch
    probabilities = in_chunks(lambda x: np.asarray(predict(model_images(model, x))), images,
                              size=chunk_size(images.shape[1:]))
    return probabilities[np.arange(len(images)), np.asarray(classes)]


def one_hot(classes, count):
    return np.eye(count, dtype=np.float32)[np.asarray(classes)]


def normalise(heat):
    """Heat maps scaled to a largest value of 1, each on its own (one map, or a batch of them on the first axis)."""
    heat = np.nan_to_num(np.asarray(heat, np.float64))
    top = heat.max(axis=tuple(range(1, heat.ndim)), keepdims=True) if heat.ndim == 3 else heat.max()
    return (heat / np.where(top > 0, top, 1)).astype(np.float32)
