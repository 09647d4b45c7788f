"""Arrays -> small PNGs (base64) for the page and the JSON API: inputs, feature-map mosaics, Grad-CAM overlays.

PNGs are sent at their natural size (28x28, a mosaic of 14x14 maps...); the page enlarges them without
smoothing, so each pixel the model saw stays a visible square.
"""

import base64
import io
import math

import numpy as np
from matplotlib import colormaps
from PIL import Image

from ..plots import mosaic

OVERLAY_SCALE = 4  # Grad-CAM overlays are drawn at 4x: the heat map is smooth, the input's pixels stay crisp
OVERLAY_OPACITY = 0.55  # of the hottest point; the input shows through everywhere


def png_base64(pixels) -> str:
    """uint8 (h, w) grey or (h, w, 3|4) colour pixels as a base64 PNG."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def to_uint8(values) -> np.ndarray:
    return (np.clip(np.asarray(values, np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)


def input_png(image) -> str:
    """The (28, 28, 1) model input as the model sees it: white ink on black."""
    return png_base64(to_uint8(np.asarray(image).squeeze()))


def feature_map_png(maps) -> tuple:
    """All channels of a conv layer's output as one viridis mosaic on the layer's own scale (as plots.image_grid).

    8 maps a row up to 32 channels, 16 beyond: a mosaic about twice as wide as tall. Returns (PNG, columns).
    """
    maps = np.asarray(maps, np.float32)
    channels = maps.shape[-1]
    columns = min(8 if channels <= 32 else 16, channels)
    sheet = mosaic(np.moveaxis(maps, -1, 0), math.ceil(channels / columns), columns)
    low, high = float(np.nanmin(sheet)), float(np.nanmax(sheet))
    scaled = (sheet - low) / (high - low) if high > low else np.zeros_like(sheet)
    rgba = colormaps["viridis"](np.nan_to_num(scaled), bytes=True)
    rgba[np.isnan(sheet)] = (255, 255, 255, 255)
    return png_base64(rgba), columns


def grad_cam_png(image, heat) -> str:
    """The input (grey, ink white) with the Grad-CAM heat map laid over it in 'jet', stronger where hotter."""
    image = np.asarray(image, np.float32).squeeze()
    size = (image.shape[1] * OVERLAY_SCALE, image.shape[0] * OVERLAY_SCALE)
    base = np.asarray(Image.fromarray(to_uint8(image)).resize(size, Image.Resampling.NEAREST), np.float32) / 255
    heat = np.asarray(Image.fromarray(np.asarray(heat, np.float32), "F").resize(size, Image.Resampling.BILINEAR))
    colour = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    weight = OVERLAY_OPACITY * np.clip(heat, 0, 1)[..., None]
    return png_base64(to_uint8(base[..., None] * (1 - weight) + colour * weight))
