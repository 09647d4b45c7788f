"""Where the model looks: attribution maps of inputs, on any Keras backend and any model shape.

Gradients come from the backend's own autodiff (TensorFlow's tape, jax.grad or torch.autograd), compiled once per
model, in `gradient`, since Keras has no backend-neutral gradient; the model's arithmetic is keras.ops and the rest
NumPy, so the same code runs on every backend. A file per family of methods: `cam` (Grad-CAM, Grad-CAM++,
Score-CAM), `saliency` (gradients, SmoothGrad), `integrated_gradients`, `occlusion`; `attributions` picks one;
`faithfulness` measures how far each can be trusted. The gradient maps explain the class *score* (the last layer
before its softmax): gradients of a saturated probability are close to zero and show nothing; Integrated Gradients
and the perturbation methods the probability. Any model shape works (chains, branches, a nested backbone):
`graph.rebuild` runs the model as one flat graph with the softmax taken off. An ensemble is explained by its first
member, for the class the whole ensemble predicts.

    from cnnlab.explain import attributions, grad_cam
    maps = attributions(model, images, "smoothgrad")   # (N, H, W, C), signed
    heat = grad_cam(model, image)                       # (H, W) in [0, 1], for the predicted class
"""

from .attributions import METHODS, attributions, pixel_heat
from .cam import grad_cam
from .gradient import gradient
from .saliency import saliency
from .scores import predicted_class

__all__ = ["METHODS", "attributions", "grad_cam", "gradient", "pixel_heat", "predicted_class", "saliency"]
