"""Scores: loss and accuracy from the model's predicted probabilities, for any image classifier.

Computed from predictions rather than `model.evaluate`, so a model loaded without its training
configuration (a plain Keras script's file, a legacy .h5) is scored the same way as cnnlab's own.
The breakdowns (confusion matrix, per-class scores, confident mistakes) take labels and predictions only.
"""

import numpy as np
from sklearn import metrics as sk_metrics

from . import distribution
from .data import as_float_images
from .errors import CnnlabError
from .feeding import model_input, to_model
from .inspection import check_class_scores

CHUNK = 4096  # images predicted per call: a streamed test set is read a chunk at a time, never whole

# -log(p), clipped only at float32's smallest normal number (a loss of at most ~87 per image). On TensorFlow, Keras
# computes the loss from the softmax's logits, which this equals; a clip at Keras's epsilon (1e-7) understated a
# confident mistake (one image at p = 3e-9 moved a 1,200-image validation loss from 0.0943, as the history has it,
# to 0.0915). Keras's JAX and torch backends do clip at 1e-7, so their histories can read lower in such a case.
TINY = np.finfo(np.float32).tiny


def predict(model, images, batch_size=256, test_time_augmentation="none") -> np.ndarray:
    """Class probabilities (N, classes); a model that ends in logits gets a softmax. With test-time augmentation,
    the mean of the probabilities of each image's views (see `augmented_views`)."""
    return np.mean(view_probabilities(model, images, batch_size, test_time_augmentation), axis=0)


def as_images(images, shape=None) -> np.ndarray:
    """Images as cnnlab gives them to models, (N, H, W, C) float32 in [0, 1], of `shape` (H, W, C) when given. A
    notebook's arrays from keras.datasets (uint8 pixels, no channel axis) are scaled and given one: fed as they
    are, they would be scored as 0..255 images without an error."""
    images = np.asarray(images)
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise CnnlabError(f"images must be an array (N, H, W, 1 or 3) or (N, H, W), not {images.shape}")
    images = as_float_images(images)
    if shape is not None and images.shape[1:] != tuple(shape):
        raise CnnlabError(f"the model takes images of shape {tuple(shape)}, not {images.shape[1:]}; resize them, "
                          f"or load the dataset with image_size= and color_mode= of the model")
    return images


def view_probabilities(model, images, batch_size=256, test_time_augmentation="none") -> list:
    """The class probabilities of each of `augmented_views`, in their order: the first is the model alone's.

    `images` may be an array or a streamed dataset's ScaledImages: they are read CHUNK images at a time, and
    given to the model as it wants them (`feeding`: 0..255 for a model that rescales its own input)."""
    check_class_scores(model)
    spec = model_input(model)
    if not len(images):
        raise CnnlabError("no images to predict")
    chunks = []
    for start in range(0, len(images), CHUNK):
        views = augmented_views(as_images(images[start:start + CHUNK], spec.shape), test_time_augmentation)
        chunks.append([as_probabilities(distribution.predict(model, to_model(spec, view), batch_size))
                       for view in views])
    return [np.concatenate(view) for view in zip(*chunks)]


def augmented_views(images, kind="none") -> list:
    """The copies of a batch of (N, H, W, C) images whose predictions test-time augmentation averages: the images,
    then for `flip` their mirror images, for `shift` the images moved one pixel down, up, right and left (the border
    filled with background 0). Only for models trained to be invariant to that change (augment_flip, augment_translate)."""
    if kind == "none":
        return [images]
    if kind == "flip":
        return [images, images[:, :, ::-1]]
    if kind == "shift":
        padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
        height, width = images.shape[1:3]
        return [images] + [padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]
                           for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    raise ValueError(f"test-time augmentation must be none, flip or shift, not {kind!r}")


def as_probabilities(outputs) -> np.ndarray:
    """A model's outputs as probabilities: softmax applied when the model ends in logits."""
    outputs = np.asarray(outputs, np.float64)
    sums = outputs.sum(axis=1)
    if outputs.min() < 0 or not np.allclose(sums, 1.0, atol=1e-3):
        outputs = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        outputs /= outputs.sum(axis=1, keepdims=True)
    return outputs


def scores(labels, probabilities) -> dict:
    """Sparse categorical cross-entropy and accuracy of `probabilities` against integer `labels`."""
    labels = np.asarray(labels, np.int64)
    picked = np.clip(probabilities[np.arange(len(labels)), labels], TINY, 1.0)
    return {"loss": float(-np.log(picked).mean()), "accuracy": float((probabilities.argmax(axis=1) == labels).mean())}


def evaluate(model, images, labels, batch_size=256, test_time_augmentation="none") -> dict:
    return scores(labels, predict(model, images, batch_size, test_time_augmentation))


def confusion_matrix(labels, predicted, num_classes) -> np.ndarray:
    """Counts: row i, column j = test images of class i predicted as class j (every class gets a row)."""
    return sk_metrics.confusion_matrix(labels, predicted, labels=np.arange(num_classes))


def normalise_rows(counts) -> np.ndarray:
    """Each row as shares of its total: the diagonal is each class's recall; a class with no images stays 0."""
    counts = np.asarray(counts, np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def per_class_scores(labels, predicted, class_names) -> list:
    """Precision, recall, F1 and support of each class, worst first (lowest F1, then lowest recall)."""
    precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
        labels, predicted, labels=np.arange(len(class_names)), zero_division=0)
    rows = [{"index": i, "name": name, "precision": float(precision[i]), "recall": float(recall[i]),
             "f1": float(f1[i]), "support": int(support[i])} for i, name in enumerate(class_names)]
    return sorted(rows, key=lambda row: (row["f1"], row["recall"], row["index"]))


def confident_mistakes(labels, probabilities, limit=None) -> np.ndarray:
    """Indices of the wrongly predicted images, the most confidently wrong (highest probability) first."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(labels))
    order = np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")
    return wrong[order][:limit]


def top_k(probabilities, k=3):
    """The k most probable classes of each image and their probabilities, most probable first."""
    indices = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return indices, np.take_along_axis(probabilities, indices, axis=1)
