"""Scores: loss and accuracy from the model's predicted probabilities, for any classifier of 28x28 images.

Computed from predictions rather than `model.evaluate`, so a model loaded without its training
configuration (a plain Keras script's file, a legacy .h5) is scored the same way as cnnlab's own.
"""

import numpy as np

EPSILON = 1e-7  # as Keras's sparse categorical cross-entropy clips probabilities


def predict(model, images, batch_size=256) -> np.ndarray:
    """Class probabilities (N, classes); a model that ends in logits gets a softmax."""
    return as_probabilities(model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0))


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
    picked = np.clip(probabilities[np.arange(len(labels)), labels], EPSILON, 1 - EPSILON)
    return {"loss": float(-np.log(picked).mean()), "accuracy": float((probabilities.argmax(axis=1) == labels).mean())}


def evaluate(model, images, labels, batch_size=256) -> dict:
    return scores(labels, predict(model, images, batch_size))
