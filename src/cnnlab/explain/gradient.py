"""d sum(fn(x)) / dx with the active Keras backend's own autodiff: the one place that knows the backends."""

import keras
import numpy as np
from keras import ops


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
