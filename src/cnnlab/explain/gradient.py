"""Gradients with the active Keras backend's own autodiff: the one place that knows the backends.

`gradient(fn, x)` differentiates any function, eagerly. `gradient_function(model, target)` is the fast path the
attribution methods take: the model's forward pass and its gradient compiled once per model (tf.function on
TensorFlow, jax.jit on JAX; torch runs eagerly), then called on batch after batch.
"""

import functools

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


@functools.lru_cache(maxsize=16)
def gradient_function(model, target, wrt=0):
    """A compiled `(inputs, weights) -> (outputs, d sum(target(outputs, weights)) / d inputs[wrt])` for a
    multi-input `model` (a list of NumPy arrays in, NumPy arrays out), traced once per model (on JAX once per batch size).

    `target(outputs, weights)` picks what is explained, per image (a class score: `weights` one-hot); it must be a
    module-level function, since the compiled function is cached per (model, target). On JAX the weights are
    passed in (`stateless_call`), so a model whose weights change is not explained with stale ones.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        signature = [[tf.TensorSpec((None, *x.shape[1:]), x.dtype) for x in model.inputs],
                     tf.TensorSpec((None, model.outputs[-1].shape[-1]), "float32")]
        # a partial, not a closure: TensorFlow counts the traces of all closures of one code as retraces of one
        run = tf.function(functools.partial(_tape_gradient, model, target, wrt), input_signature=signature)

        return lambda inputs, weights: _numpy(run([tf.convert_to_tensor(x) for x in inputs],
                                                  tf.convert_to_tensor(weights)))
    if backend == "jax":
        import jax

        def total(x, trainable, non_trainable, inputs, weights):
            inputs = [x if k == wrt else value for k, value in enumerate(inputs)]
            outputs, _ = model.stateless_call(trainable, non_trainable, _one_or_list(inputs), training=False)
            return ops.sum(target(outputs, weights)), outputs

        run = jax.jit(jax.grad(total, has_aux=True))

        def call(inputs, weights):
            grads, outputs = run(inputs[wrt], [v.value for v in model.trainable_variables],
                                 [v.value for v in model.non_trainable_variables], list(inputs), weights)
            return _numpy((outputs, grads))

        return call
    if backend == "torch":
        def eager(inputs, weights):
            tensors = [ops.convert_to_tensor(x) for x in inputs]
            tensors[wrt] = tensors[wrt].detach().requires_grad_(True)
            outputs = model(_one_or_list(tensors), training=False)
            ops.sum(target(outputs, ops.convert_to_tensor(weights))).backward()
            return _numpy((outputs, tensors[wrt].grad))

        return eager
    raise NotImplementedError(f"no gradient for Keras backend {backend!r}")


def _tape_gradient(model, target, wrt, inputs, weights):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(inputs[wrt])
        outputs = model(_one_or_list(inputs), training=False)
        total = ops.sum(target(outputs, weights))
    return outputs, tape.gradient(total, inputs[wrt])


def _one_or_list(inputs):
    return inputs[0] if len(inputs) == 1 else list(inputs)


def _numpy(pair):
    outputs, grads = pair
    outputs = [ops.convert_to_numpy(o) for o in outputs] if isinstance(outputs, (list, tuple)) \
        else ops.convert_to_numpy(outputs)
    return outputs, ops.convert_to_numpy(grads)
