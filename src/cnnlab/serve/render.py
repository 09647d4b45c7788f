"""Arrays -> small PNGs (base64) for the page and the JSON API: inputs, feature-map mosaics, Grad-CAM overlays.

Inputs and feature maps are sent at the model's size (the input as it is fed, a mosaic of each layer's maps); the
page enlarges them without smoothing, so each pixel the model saw stays a visible square. Grey inputs are grey PNGs
and colour inputs colour ones, shown as the model sees them: a digit-style input is white ink on black because the
model takes it so, a photo is not inverted.
"""

import base64
import io
import math

import numpy as np
from matplotlib import colormaps
from PIL import Image

from ..plots import mosaic

OVERLAY_SIDE = 112  # Grad-CAM overlays are enlarged a whole number of times to at least this many pixels a side:
# the heat map is smooth, the input's pixels stay crisp, and a large input is not enlarged
OVERLAY_OPACITY = 0.55  # of the hottest point; the input shows through everywhere


def png_base64(pixels) -> str:
    """uint8 (h, w) grey or (h, w, 3|4) colour pixels as a base64 PNG.

    zlib's fastest level: /api/explain's three PNGs took 6.7 ms at PNG's default level (6), 4.2 ms at 1, for 16%
    more bytes (the pixels are the same), a fair trade for a page served to this computer or a local network."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, "PNG", compress_level=1)
    return base64.b64encode(out.getvalue()).decode("ascii")


def to_uint8(values) -> np.ndarray:
    return (np.clip(np.asarray(values, np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)


def input_png(image) -> str:
    """An (H, W, 1) or (H, W, 3) model input in [0, 1] as the model sees it: a grey or a colour PNG."""
    return png_base64(to_uint8(_pixels(image)))


def _pixels(image) -> np.ndarray:
    """(H, W, 1) -> (H, W) grey, (H, W, 3) as it is: the shapes PIL makes grey and RGB images of."""
    image = np.asarray(image, np.float32)
    return image[..., 0] if image.shape[-1] == 1 else image


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
    rgb = colormaps["viridis"](np.nan_to_num(scaled), bytes=True)[..., :3]  # opaque: no alpha to encode
    rgb[np.isnan(sheet)] = 255
    return png_base64(rgb), columns


def grad_cam_png(image, heat) -> str:
    """The (H, W, C) input, as input_png shows it, with the (H, W) Grad-CAM heat map laid over it in 'jet', stronger
    where hotter; an RGB PNG."""
    height, width = np.shape(image)[:2]
    scale = max(1, math.ceil(OVERLAY_SIDE / max(height, width)))
    size = (width * scale, height * scale)
    base = Image.fromarray(to_uint8(_pixels(image))).convert("RGB").resize(size, Image.Resampling.NEAREST)
    heat = np.asarray(Image.fromarray(np.asarray(heat, np.float32), "F").resize(size, Image.Resampling.BILINEAR))
    colour = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    weight = OVERLAY_OPACITY * np.clip(heat, 0, 1)[..., None]
    return png_base64(to_uint8(np.asarray(base, np.float32) / 255 * (1 - weight) + colour * weight))
