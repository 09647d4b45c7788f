"""Where the model looks: attribution maps of one input, on any Keras backend and any model shape.

Gradients come from the backend's own autodiff (TensorFlow's tape, jax.grad or torch.autograd), picked at run time in
`gradient`, since Keras has no backend-neutral gradient; the model's arithmetic is keras.ops and the rest NumPy, so the
same code runs on every backend. The maps explain the class *score* (the last layer before its softmax): gradients of
a saturated probability are close to zero and show nothing. Any model shape works (chains, branches, a nested
backbone): `graph.rebuild` runs the model as one flat graph with the softmax taken off. An ensemble is explained by
its first member, for the class the whole ensemble predicts.

    from cnnlab.explain import grad_cam
    heat = grad_cam(model, image)          # (H, W) in [0, 1], for the predicted class
"""

from .cam import grad_cam
from .gradient import gradient
from .saliency import saliency
from .scores import predicted_class

__all__ = ["grad_cam", "gradient", "predicted_class", "saliency"]
