"""What input a model expects, read from the model itself, and images given to it that way.

cnnlab's images are (N, H, W, C) float32 in [0, 1], as its own models take them. Models people bring can want
otherwise, and fed [0, 1] images they score like chance, with no error:
- 0..255 pixels: a model whose first layers rescale its input (`Rescaling(1/255)`, as Keras's image tutorials
  write it, `Rescaling(1/127.5, offset=-1)`, or a `Normalization` adapted to 0..255 data);
- no channel axis: `Input((28, 28))` followed by a `Reshape`.
`model_input(model)` finds out from the model's layers (looking through augmentation layers, which do nothing at
inference, and into nested models); `to_model(spec, images)` converts. A model with no preprocessing layer is
taken to want [0, 1], the convention of cnnlab and of the study notes (`x / 255.0`).

    spec = model_input(model)          # ModelInput(shape=(180, 180, 3), channel_axis=True, pixel_scale=255.0, ...)
    model.predict(to_model(spec, images))
"""

from dataclasses import dataclass

import keras
import numpy as np

from .errors import ModelFileError

PASS_THROUGH = (keras.layers.InputLayer, keras.layers.Reshape, keras.layers.Permute, keras.layers.Resizing,
                keras.layers.CenterCrop, keras.layers.RandomFlip, keras.layers.RandomTranslation,
                keras.layers.RandomRotation, keras.layers.RandomZoom, keras.layers.RandomContrast,
                keras.layers.RandomBrightness, keras.layers.RandomCrop, keras.layers.Dropout,
                keras.layers.GaussianNoise)  # keep the value range (the random ones do nothing at inference)


@dataclass(frozen=True)
class ModelInput:
    """The images a model takes: cnnlab's (H, W, C) shape for it, whether its input has the channel axis, and the
    pixel scale it wants (1: [0, 1]; 255: 0..255), with the reason, for messages."""

    shape: tuple
    channel_axis: bool = True
    pixel_scale: float = 1.0
    reason: str = "no preprocessing layer: inputs in [0, 1]"

    @property
    def size(self):
        return self.shape[:2]

    @property
    def channels(self):
        return self.shape[2]


def model_input(model, path="") -> ModelInput:
    """The input `model` expects; a model that does not take one grey or colour image is refused."""
    shape = model.input_shape
    if isinstance(shape, list) or len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3)) \
            or any(d is None for d in shape[1:]):
        raise ModelFileError(f"{path or model.name}: model expects input {shape}, not images (None, H, W, 1 or 3) "
                             f"or (None, H, W); cnnlab feeds it one grey or colour image of a fixed size at a time")
    channel_axis = len(shape) == 4
    scale, reason = _pixel_scale(model)
    return ModelInput((int(shape[1]), int(shape[2]), int(shape[3]) if channel_axis else 1), channel_axis, scale, reason)


def _pixel_scale(model):
    """(1.0 or 255.0, why): from the first layer that changes values, through pass-through and nested models."""
    for layer in _front_layers(model):
        if isinstance(layer, keras.layers.Rescaling):
            factor = float(np.max(np.abs(np.asarray(layer.scale, np.float64))))
            if factor * 255 <= 2.5:  # 0..255 into about [0, 1] or [-1, 1]
                return 255.0, f"its layer {layer.name!r} (Rescaling by {factor:.4g}) wants 0..255 pixels"
            return 1.0, f"its layer {layer.name!r} (Rescaling by {factor:.4g}) takes [0, 1] inputs"
        if isinstance(layer, keras.layers.Normalization):
            mean = getattr(layer, "mean", None)
            if mean is not None and float(np.max(np.asarray(mean, np.float64))) > 1.5:
                return 255.0, f"its layer {layer.name!r} (Normalization, mean above 1) wants 0..255 pixels"
            return 1.0, f"its layer {layer.name!r} (Normalization) takes [0, 1] inputs"
        if not isinstance(layer, PASS_THROUGH):
            break
    return 1.0, ModelInput.reason


def _front_layers(model):
    """The layers an input meets first, in order, up to the first that changes values, entering nested models and
    going on after one that only passes its input through (a tutorial's `data_augmentation` block)."""
    for layer in model.layers:
        for inner in _front_layers(layer) if isinstance(layer, keras.Model) else [layer]:
            yield inner
            if not isinstance(inner, PASS_THROUGH):
                return


def to_model(spec: ModelInput, images) -> np.ndarray:
    """(N, H, W, C) float images in [0, 1] as the model takes them."""
    images = np.asarray(images, np.float32)
    if spec.pixel_scale != 1.0:
        images = images * np.float32(spec.pixel_scale)
    return images if spec.channel_axis else images[..., 0]


def check_fits(spec: ModelInput, image_shape, path="", data=""):
    """The model takes images of the data's shape, or a one-line error that says what to change."""
    if tuple(spec.shape) != tuple(image_shape):
        h, w, c = spec.shape
        raise ModelFileError(
            f"{path or 'model'}: the model takes {h}x{w} images with {c} channel{'s' * (c > 1)}, but {data or 'the data'} "
            f"has {image_shape[0]}x{image_shape[1]}x{image_shape[2]}; give the dataset it was trained on, or "
            f"image_size='{h}x{w}' and color_mode='{'rgb' if c == 3 else 'grayscale'}'")
